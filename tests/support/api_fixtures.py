"""Data builders shared by the API tests (OTLP/JSON payloads, seeded stores, alert rows)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prefixscope.collector.storage.store import Store

NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        v: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


def otlp_span(
    trace_id: str,
    span_id: str,
    name: str,
    *,
    parent: str | None = None,
    start: dt.datetime = NOW,
    duration_ms: float = 100.0,
    attrs: dict[str, Any] | None = None,
    error: bool = False,
) -> dict[str, Any]:
    start_ns = int(start.replace(tzinfo=dt.UTC).timestamp() * 1e9)
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 3,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + int(duration_ms * 1e6)),
        "attributes": [attr(k, v) for k, v in (attrs or {}).items()],
        "status": {"code": 2 if error else 1},
    }
    if parent:
        span["parentSpanId"] = parent
    return span


def otlp_request(spans: list[dict[str, Any]], service: str = "clinic") -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", service)]},
                "scopeSpans": [{"scope": {"name": "tests"}, "spans": spans}],
            }
        ]
    }


def sql_rows(srv: Any, query: str) -> list[list[Any]]:
    """Rows of ``POST /api/v1/sql`` on a running server (asserting it answered 200)."""
    import httpx

    resp = httpx.post(f"{srv.base_url}/api/v1/sql", json={"sql": query}, timeout=30)
    assert resp.status_code == 200, resp.text
    rows: list[list[Any]] = resp.json()["rows"]
    return rows


def sql_dicts(srv: Any, query: str) -> list[dict[str, Any]]:
    """``POST /api/v1/sql`` rows as ``{column: value}``."""
    import httpx

    resp = httpx.post(f"{srv.base_url}/api/v1/sql", json={"sql": query}, timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]


def insert_alert(store: Store, **overrides: Any) -> dict[str, Any]:
    """One row in the ``alerts`` table, as analytics would write it."""
    row: dict[str, Any] = {
        "id": "alert-1",
        "prefix_id": "radiology",
        "prefix_version": "3",
        "route": "imaging",
        "cohort": json.dumps({"specialty": "radiology"}),
        "metric": "Groundedness",
        "baseline": "base",
        "baseline_value": 0.82,
        "value": 0.71,
        "delta": -0.11,
        "ci_low": -0.15,
        "ci_high": -0.07,
        "p_value": 0.0004,
        "q_value": 0.003,
        "n": 420,
        "n_baseline": 1300,
        "direction": "worse",
        "severity": "high",
        "status": "open",
        "example_trace_ids": json.dumps(["ab" * 16, "cd" * 16]),
        "created_at": NOW,
        "updated_at": None,
        "resolved_at": None,
        "fingerprint": "fp-1",
        "method": "msprt",
        "details": json.dumps({"window": "24h"}),
    }
    row.update(overrides)
    cur = store.cursor()
    try:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        cur.execute(f"INSERT INTO alerts ({cols}) VALUES ({marks})", list(row.values()))
    finally:
        cur.close()
    return row


@dataclass
class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that records webhook POSTs."""

    fail_first: int = 0
    status_on_fail: int = 503
    bodies: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    event: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.bodies) >= count:
                    return list(self.bodies)
            time.sleep(0.05)
        with self.lock:
            return list(self.bodies)


@contextmanager
def webhook_receiver(fail_first: int = 0, status_on_fail: int = 503) -> Iterator[Receiver]:
    rec = Receiver(fail_first=fail_first, status_on_fail=status_on_fail)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with rec.lock:
                rec.attempts += 1
                fail = rec.attempts <= rec.fail_first
                if not fail:
                    rec.bodies.append(json.loads(body))
            self.send_response(rec.status_on_fail if fail else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def seeded_store(
    data_dir: Path, *, with_alert: bool = True, start: dt.datetime | None = None
) -> None:
    """Synthetic traffic in a fresh store: the base model and two variants on one route, three
    cohorts, scores and feedback. ``radiology@3`` is injected with a Groundedness, error-rate
    and tail-latency regression in the radiology cohort only; ``cardio@2`` is better than base.
    The traffic spans one hour from ``start`` (default: two hours ago).
    """
    from prefixscope.analytics.synthetic import Arm, generate

    arms = []
    for specialty in ("radiology", "cardiology", "oncology"):
        cohort = {"specialty": specialty}
        good = {"Groundedness": (0.82, 20.0), "AnswerRelevancy": (0.78, 20.0)}
        arms.append(Arm(None, None, "clinical", cohort, n=600, scores=good))
        arms.append(
            Arm(
                "cardio",
                "2",
                "clinical",
                cohort,
                n=300,
                latency_median_ms=320,
                scores={"Groundedness": (0.85, 20.0), "AnswerRelevancy": (0.8, 20.0)},
            )
        )
        bad = specialty == "radiology"
        arms.append(
            Arm(
                "radiology",
                "3",
                "clinical",
                cohort,
                n=400,
                p99_factor=3.0 if bad else 1,
                latency_median_ms=520,
                error_rate=0.05 if bad else 0.01,
                scores={
                    "Groundedness": (0.62 if bad else 0.8, 20.0),
                    "AnswerRelevancy": (0.77, 20.0),
                },
            )
        )
    with Store(data_dir) as store:
        cur = store.cursor()
        try:
            generate(
                cur,
                arms,
                seed=7,
                start=NOW - dt.timedelta(hours=2) if start is None else start,
                duration=dt.timedelta(hours=1),
                base_model="llama-3-8b",
            )
        finally:
            cur.close()
        if with_alert:
            insert_alert(store, example_trace_ids=json.dumps([f"{i:032x}" for i in (900, 901)]))


#: the tokens the auth tests start servers with
READ, WRITE, INGEST = "read-token-1", "write-token-1", "ingest-token-1"
