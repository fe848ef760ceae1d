"""Lake collectors (``serve --store lake``) take annotations and registrations over HTTP.

Scores and feedback get the embedded server's validation, limits and record ids and are
published to the lake before the 200; registrations land in the lake's registry, and the
lake engines attribute served names with the embedded views' history rules. Expected values
come from what the test sent (ids from the embedded server answering the same body).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from prefixscope.analytics.engines import DuckDBEngine
from prefixscope.cli import main
from tests.support.api_fixtures import INGEST, READ, WRITE
from tests.support.lake_fixtures import lake_rows
from tests.support.lake_fixtures import text_store as _text_store
from tests.support.lake_repoint import COUNTS_SQL, DECLARED, EXPECTED, lake_server, repointed_lake
from tests.support.serverproc import ServerProcess

T1, T2, T3 = "a1" * 16, "b2" * 16, "c3" * 16
S1 = "d4" * 8


def post(srv: ServerProcess, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(srv.base_url + path, json=body, headers=headers, timeout=60)


SCORES = [
    {"trace_id": T1, "span_id": S1, "name": "Groundedness", "value": 0.25},
    {"id": "client-chosen", "trace_id": T1, "name": "Groundedness", "value": 0.5},
    {"trace_id": T2.upper(), "name": "TaskCompletion", "value": 1.0, "reason": "ok"},
]


def test_annotations_are_published_with_the_embedded_ids(start_server: Any, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    collector = lake_server(start_server, lake)
    embedded = start_server()
    on_lake = post(collector, "/api/v1/scores", SCORES)
    on_store = post(embedded, "/api/v1/scores", SCORES)
    assert on_lake.status_code == 200, on_lake.text
    body = on_lake.json()
    assert body["ids"] == on_store.json()["ids"] and body["ids"][1] == "client-chosen"
    assert (body["accepted"], body["inserted"], body["duplicate_ids"]) == (3, 3, [])
    # durable at the 200: the rows are in published segments, as sent (ids lower-cased)
    rows = {r["id"]: r for r in lake_rows(lake, "scores")}
    assert set(rows) == set(body["ids"])
    assert rows["client-chosen"]["value"] == 0.5 and rows["client-chosen"]["span_id"] is None
    assert rows[body["ids"][2]]["trace_id"] == T2

    # an Idempotency-Key gives the embedded server's ids too (and not the content's)
    keyed = post(collector, "/api/v1/scores", SCORES[:1], **{"Idempotency-Key": "k-1"})
    assert (
        keyed.json()["ids"]
        == post(embedded, "/api/v1/scores", SCORES[:1], **{"Idempotency-Key": "k-1"}).json()["ids"]
    )
    assert keyed.json()["ids"] != body["ids"][:1]

    # a retried request writes a second copy; readers keep one per id
    assert post(collector, "/api/v1/scores", SCORES).status_code == 200
    assert len(lake_rows(lake, "scores")) == 7
    engine = DuckDBEngine.over_lake(str(lake))
    assert engine.arrow("SELECT count(*) AS n FROM scores").to_pylist() == [{"n": 4}]

    # one id twice in one request: stored once, reported
    twice = post(collector, "/api/v1/scores", [SCORES[1], {**SCORES[1], "value": 0.9}])
    assert twice.json()["duplicate_ids"] == ["client-chosen"] and twice.json()["inserted"] == 1

    # trace-level feedback, as the embedded server takes it
    fb = [{"trace_id": T3, "kind": "thumbs_down", "comment": "wrong code"}]
    got = post(collector, "/api/v1/feedback", fb)
    assert (
        got.status_code == 200
        and got.json()["ids"] == post(embedded, "/api/v1/feedback", fb).json()["ids"]
    )
    [row] = lake_rows(lake, "feedback")
    assert (row["trace_id"], row["span_id"], row["kind"], row["value"]) == (
        T3,
        None,
        "thumbs_down",
        1.0,
    )


def test_invalid_annotations_are_refused_and_write_nothing(
    start_server: Any, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    collector = lake_server(start_server, lake, "--max-body-bytes", "200000")
    bad = {
        "value out of range": ("/api/v1/scores", [{"trace_id": T1, "name": "G", "value": 1.5}]),
        "bad trace id": ("/api/v1/scores", [{"trace_id": "xyz", "name": "G", "value": 0.5}]),
        "unknown field": ("/api/v1/scores", {"trace_id": T1, "name": "G", "value": 0.5, "x": 1}),
        "thumbs value": ("/api/v1/feedback", {"trace_id": T1, "kind": "thumbs_down", "value": 3}),
        "empty list": ("/api/v1/feedback", []),
        "too many": ("/api/v1/scores", [{"trace_id": T1, "name": "G", "value": 0.5}] * 10_001),
    }
    for why, (path, body) in bad.items():
        resp = post(collector, path, body)
        assert resp.status_code in (413, 422), (why, resp.status_code, resp.text)
        assert resp.json()["error"] in ("unprocessable", "payload_too_large"), why
    big = [{"trace_id": T1, "name": "G", "value": 0.5, "reason": "x" * 10_000}] * 25
    resp = post(collector, "/api/v1/scores", big)
    assert resp.status_code == 413 and "exceeds 200000 bytes" in resp.json()["message"]
    not_json = httpx.post(
        collector.base_url + "/api/v1/scores",
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    assert lake_rows(lake, "scores") == [] and lake_rows(lake, "feedback") == []
    assert httpx.get(collector.base_url + "/healthz").status_code == 200


def test_registry_on_lake_collectors_repointed_name_and_embedded_parity(
    start_server: Any, tmp_path: Path
) -> None:
    """A served name first mapped after its spans (the backfill), then re-pointed to a new
    version: the lake engines keep the spans before the re-pointing on the older version, an
    explicit prefix.id wins, and the embedded server (same spans and PUTs) agrees."""
    lake = tmp_path / "lake"
    embedded = start_server("--request-settle", "0s", *DECLARED)
    a, _ = repointed_lake(start_server, lake, embedded)
    got = httpx.get(f"{a.base_url}/api/v1/prefixes/cardiology").json()
    assert (got["version"], got["owner"], got["n"]) == ("4", None, 0)
    assert httpx.get(f"{a.base_url}/api/v1/prefixes/nobody").status_code == 404

    lake_counts = {
        (r["prefix_id"], r["prefix_version"]): r["n"]
        for r in DuckDBEngine.over_lake(str(lake)).arrow(COUNTS_SQL).to_pylist()
    }
    assert lake_counts == EXPECTED
    deadline = time.monotonic() + 30
    while True:
        resp = httpx.post(
            embedded.base_url + "/api/v1/sql",
            json={"sql": COUNTS_SQL.replace("requests_base", "requests")},
        )
        store_counts = {(r[0], r[1]): r[2] for r in resp.json()["rows"]}
        if store_counts == EXPECTED or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert store_counts == EXPECTED


@pytest.fixture(scope="module")
def lake_auth(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("lake-auth")
    args = ["--store", "lake", "--lake-path", str(base / "lake")]
    args += ["--read-token", READ, "--write-token", WRITE, "--token", INGEST]
    srv = ServerProcess(base / "data", args).start()
    yield srv
    srv.stop()


LAKE_ROUTES = {
    ("POST", "/api/v1/scores"): ("write", {"trace_id": T1, "name": "G", "value": 0.5}, 200),
    ("POST", "/api/v1/feedback"): ("write", {"trace_id": T1, "kind": "thumbs_up"}, 200),
    ("PUT", "/api/v1/prefixes/radiology"): ("write", {"owner": "me"}, 200),
    ("GET", "/api/v1/prefixes/radiology"): ("read", None, 200),
}


def _call(srv: ServerProcess, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = LAKE_ROUTES[(method, path)][1]
    return httpx.request(method, srv.base_url + path, json=body, headers=headers, timeout=60)


def test_lake_collector_routes_are_all_classified(lake_auth: ServerProcess) -> None:
    spec = httpx.get(
        lake_auth.base_url + "/openapi.json", headers={"Authorization": f"Bearer {READ}"}
    ).json()
    routes = {
        (m.upper(), re.sub(r"\{prefix_id\}", "radiology", p))
        for p, ops in spec["paths"].items()
        if p.startswith("/api/")
        for m in ops
    }
    assert routes == set(LAKE_ROUTES)


@pytest.mark.parametrize(("method", "path"), sorted(LAKE_ROUTES))
def test_lake_collector_auth_matches_the_embedded_rules(
    lake_auth: ServerProcess, method: str, path: str
) -> None:
    scope, _, ok = LAKE_ROUTES[(method, path)]
    if method == "GET":  # something to read
        assert _call(lake_auth, "PUT", "/api/v1/prefixes/radiology", WRITE).status_code in (
            200,
            201,
        )
    missing = _call(lake_auth, method, path, None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert _call(lake_auth, method, path, "nope").status_code == 401
    assert _call(lake_auth, method, path, INGEST).status_code == 403
    assert _call(lake_auth, method, path, READ).status_code == (ok if scope == "read" else 403)
    assert _call(lake_auth, method, path, WRITE).status_code in (ok, 201)


def test_lake_collector_auth_writes_only_with_a_write_token(lake_auth: ServerProcess) -> None:
    lake = lake_auth.data_dir.parent / "lake"
    before = len(lake_rows(lake, "feedback"))
    body = {"trace_id": T2, "kind": "escalation"}
    for token in (None, "nope", READ, INGEST):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        httpx.post(lake_auth.base_url + "/api/v1/feedback", json=body, headers=headers)
    assert len(lake_rows(lake, "feedback")) == before
    ok = httpx.post(
        lake_auth.base_url + "/api/v1/feedback",
        json=body,
        headers={"Authorization": f"Bearer {WRITE}"},
    )
    assert ok.status_code == 200 and len(lake_rows(lake, "feedback")) == before + 1


class ScoreLoad:
    """Client threads posting batches of scores with ids of their own; remembers the acked."""

    def __init__(self, srv: ServerProcess, threads: int = 3, batch: int = 200) -> None:
        self.srv, self.batch = srv, batch
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def body(self, n: int) -> list[dict[str, Any]]:
        return [
            {"id": f"s-{n}-{i}", "trace_id": f"{n:032x}", "name": "G", "value": (i % 10) / 10}
            for i in range(self.batch)
        ]

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                n = self._next
                self._next += 1
            batch = self.body(n)
            with self._lock:
                self.sent.update(r["id"] for r in batch)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.srv.http_port, timeout=30)
                conn.request(
                    "POST",
                    "/api/v1/scores",
                    json.dumps(batch),
                    {"Content-Type": "application/json"},
                )
                status = conn.getresponse().status
                conn.close()
            except OSError:
                return  # the collector is gone
            if status == 200:
                with self._lock:
                    self.acked.update(r["id"] for r in batch)

    def start(self) -> ScoreLoad:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def test_kill_9_while_writing_annotations_loses_nothing_acknowledged(
    start_server: Any, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    srv = lake_server(start_server, lake)
    load = ScoreLoad(srv).start()
    deadline = time.monotonic() + 60
    while len(load.acked) < 6_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(30)
    load.stop()
    acked = set(load.acked)
    assert len(acked) >= 6_000
    stored = [r["id"] for r in lake_rows(lake, "scores")]
    assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged scores lost"
    # the sender retries what it never heard back about, on a new collector
    retry = lake_server(start_server, lake)
    unacked = sorted(load.sent - acked)
    for start in range(0, len(unacked), 1000):
        chunk = [
            {"id": i, "trace_id": f"{int(i.split('-')[1]):032x}", "name": "G", "value": 0.0}
            for i in unacked[start : start + 1000]
        ]
        assert post(retry, "/api/v1/scores", chunk).status_code == 200
    # ...and some it did hear back about (a client timeout after the 200)
    assert post(retry, "/api/v1/scores", load.body(0)).status_code == 200
    # a segment the killed collector was writing stays hidden; compaction deletes it once old
    for tmp in lake.rglob(".*.tmp"):
        os.utime(tmp, (time.time() - 7200, time.time() - 7200))
    result = CliRunner().invoke(main, ["lake", "compact", "--lake-path", str(lake)])
    assert result.exit_code == 0, result.output
    ids = [r["id"] for r in lake_rows(lake, "scores")]
    assert len(ids) == len(set(ids)) == len(load.sent)
    assert not [p for p in lake.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert len(list(lake.glob("scores/date=*/*.parquet"))) == 1


def test_lake_load_and_register_cli(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    runner = CliRunner()
    jsonl = tmp_path / "scores.jsonl"
    jsonl.write_text("\n".join(json.dumps(s) for s in SCORES) + "\n")
    out = runner.invoke(main, ["lake", "load", "scores", str(jsonl), "--lake-path", str(lake)])
    assert out.exit_code == 0, out.output
    assert "3 records read, 3 published" in out.output
    csv_file = tmp_path / "fb.csv"
    csv_file.write_text(
        f"trace_id,span_id,kind,value,comment\n{T1},,thumbs_down,1,\n{T2},{S1},x.y,7,z\n"
    )
    out = runner.invoke(main, ["lake", "load", "feedback", str(csv_file), "--lake-path", str(lake)])
    assert out.exit_code == 0, out.output
    rows = sorted(lake_rows(lake, "feedback"), key=lambda r: r["trace_id"])
    assert [(r["trace_id"], r["span_id"], r["kind"], r["value"], r["comment"]) for r in rows] == [
        (T1, None, "thumbs_down", 1.0, None),
        (T2, S1, "x.y", 7.0, "z"),
    ]
    # one bad row: nothing written, the row named
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(SCORES[0]) + "\n" + json.dumps({**SCORES[0], "value": 3}) + "\n")
    out = runner.invoke(main, ["lake", "load", "scores", str(bad), "--lake-path", str(lake)])
    assert out.exit_code == 1 and "row 2: value" in out.output
    assert len(lake_rows(lake, "scores")) == 3
    # the same file again: copies that readers drop (the API's content ids)
    runner.invoke(main, ["lake", "load", "scores", str(jsonl), "--lake-path", str(lake)])
    engine = DuckDBEngine.over_lake(str(lake))
    assert engine.arrow("SELECT count(*) AS n FROM scores").to_pylist() == [{"n": 3}]

    reg = runner.invoke(
        main,
        [
            *("lake", "register", "cardiology", "--lake-path", str(lake), "--version", "3"),
            *("--base-model", "tiny-base", "--served-model-name", "cardio"),
        ],
    )
    assert reg.exit_code == 0 and "registered" in reg.output, reg.output
    extra = runner.invoke(
        main, ["lake", "register", "--lake-path", str(lake), "--served-model", "c2=cardiology@2"]
    )
    assert extra.exit_code == 0 and "c2" in extra.output, extra.output
    names = DuckDBEngine.over_lake(str(lake)).arrow(
        "SELECT name, prefix_id, version, base_model FROM served_models ORDER BY name"
    )
    assert names.to_pylist() == [
        {"name": "c2", "prefix_id": "cardiology", "version": "2", "base_model": "tiny-base"},
        {"name": "cardio", "prefix_id": "cardiology", "version": "3", "base_model": "tiny-base"},
    ]
    wrong = runner.invoke(main, ["lake", "register", "--lake-path", str(lake)])
    assert wrong.exit_code == 2


def test_lake_load_of_a_parquet_file(tmp_path: Path) -> None:
    """A Parquet file (typed columns, NULLs, a timestamp) gives the rows its records give as
    JSONL: the same ids, values and times; a bad record is named by its row, nothing written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    created = dt.datetime(2025, 3, 1, 12, 30)
    records = [
        {
            "id": None,
            "trace_id": T1,
            "span_id": S1,
            "name": "G",
            "value": 0.25,
            "created_at": created,
        },
        {
            "id": "pq-1",
            "trace_id": T2,
            "span_id": None,
            "name": "TC",
            "value": 1.0,
            "created_at": created,
        },
    ]
    parquet = tmp_path / "scores.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    jsonl = tmp_path / "scores.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, default=str) for r in records))
    runner = CliRunner()
    loaded = {}
    for source in (parquet, jsonl):
        lake = tmp_path / f"lake-{source.suffix[1:]}"
        out = runner.invoke(main, ["lake", "load", "scores", str(source), "--lake-path", str(lake)])
        assert out.exit_code == 0 and "2 records read, 2 published" in out.output, out.output
        loaded[source.suffix] = sorted(
            (r["id"], r["trace_id"], r["span_id"], r["name"], r["value"], r["created_at"])
            for r in lake_rows(lake, "scores")
        )
    assert loaded[".parquet"] == loaded[".jsonl"]
    sent = {(r["trace_id"], r["span_id"], r["name"], r["value"], created) for r in records}
    assert {row[1:] for row in loaded[".parquet"]} == sent
    assert "pq-1" in {row[0] for row in loaded[".parquet"]}

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([records[1], {**records[1], "value": 3.0}]), bad)
    lake = tmp_path / "lake-bad"
    out = runner.invoke(main, ["lake", "load", "scores", str(bad), "--lake-path", str(lake)])
    assert out.exit_code == 1 and "row 2: value" in out.output, out.output
    assert lake_rows(lake, "scores") == []


def test_evaluate_on_the_lake_matches_the_store_and_is_idempotent(tmp_path: Path) -> None:
    from prefixscope.analytics.evaluators import JSONValidation
    from prefixscope.analytics.online import run_online
    from prefixscope.collector.storage.export import export_duckdb_tables

    con = _text_store()
    lake = str(tmp_path / "lake")
    export_duckdb_tables(con, lake)
    expected = run_online(con, [JSONValidation()], sample=0.5).to_dict()
    stored = {
        (r[0], r[1], r[2])
        for r in con.execute(
            "SELECT id, span_id, value FROM scores WHERE source = 'online'"
        ).fetchall()
    }
    runner = CliRunner()
    args = ["evaluate", "--lake-path", lake, "--evaluators", "JSONValidation", "--sample", "0.5"]
    first = runner.invoke(main, [*args, "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    for key in ("requests", "sampled_out", "scored", "skipped_by_reason", "scored_by_evaluator"):
        assert report[key] == expected[key], key
    assert report["scored"] > 0 and report["skipped_by_reason"]["no_output_text"] > 0
    rows = {(r["id"], r["span_id"], r["value"]) for r in lake_rows(Path(lake), "scores")}
    assert rows == stored  # the same requests sampled, the same ids and values
    again = json.loads(runner.invoke(main, [*args, "--json"]).output)
    assert (again["scored"], again["already_scored"]) == (0, report["scored"])
    assert len(lake_rows(Path(lake), "scores")) == len(stored)
