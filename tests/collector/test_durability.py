"""Durability: a 200 means committed. kill -9, SIGTERM drain, overload, retries."""

from __future__ import annotations

import http.client
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.otlp import PROTOBUF_HEADERS as PROTOBUF
from tests.support.otlp import make_body
from tests.support.serverproc import ServerProcess
from tests.support.store import query_store

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial


class Load:
    """Client threads that send distinct requests and remember which ones got a 200."""

    def __init__(self, srv: ServerProcess, threads: int = 4, n_spans: int = 64) -> None:
        self.srv = srv
        self.n_spans = n_spans
        self.acked: dict[str, int] = {}
        self.statuses: list[int] = []
        self.retry_after: list[str | None] = []
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            with self._lock:
                n = self._next
                self._next += 1
            body, trace = make_body(n, self.n_spans)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.srv.http_port, timeout=30)
                conn.request("POST", "/v1/traces", body, PROTOBUF)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                conn = None
                time.sleep(0.01)
                continue
            with self._lock:
                self.statuses.append(resp.status)
                if resp.status == 200:
                    self.acked[trace] = self.n_spans
                else:
                    self.retry_after.append(resp.getheader("Retry-After"))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def stored_per_trace(data_dir: Path) -> dict[str, int]:
    return dict(query_store(data_dir, "SELECT trace_id, count(*) FROM spans GROUP BY trace_id"))


def test_kill_9_loses_no_acknowledged_span(start_server: Any) -> None:
    srv = start_server()
    data_dir = srv.data_dir
    for _trial in range(3):
        with Load(srv, threads=4) as load:
            time.sleep(1.0)
            srv.kill()  # SIGKILL mid-traffic
        assert load.acked, "no request was acknowledged before the kill"
        srv = start_server(data_dir=data_dir)  # restart on the same store
        srv.stop()
        stored = stored_per_trace(data_dir)
        missing = {t: n for t, n in load.acked.items() if stored.get(t, 0) != n}
        assert not missing, f"{len(missing)} acknowledged requests lost after kill -9"
        srv = start_server(data_dir=data_dir)
    srv.stop()


def test_sigterm_drains_every_acknowledged_span(start_server: Any) -> None:
    srv = start_server()
    with Load(srv, threads=4, n_spans=256) as load:
        time.sleep(1.0)
        assert srv.stop() == 0  # graceful: exit code 0 after draining
    stored = stored_per_trace(srv.data_dir)
    assert load.acked
    assert all(stored.get(t) == n for t, n in load.acked.items())
    assert "Traceback" not in srv.log()


def test_overload_sheds_with_retry_after_and_keeps_acked(start_server: Any) -> None:
    srv = start_server("--queue-max-spans", "600", "--retry-after-s", "2")
    with Load(srv, threads=8, n_spans=512) as load:
        deadline = time.monotonic() + 20
        while 429 not in load.statuses and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(srv.base_url + "/healthz", timeout=5).status_code == 200
    assert 429 in load.statuses, "queue bound never reached"
    assert load.retry_after and all(v == "2" for v in load.retry_after)
    metrics = httpx.get(srv.base_url + "/metrics").text
    shed = re.search(r"^prefixscope_requests_shed_total ([0-9.]+)", metrics, re.M)
    assert 'prefixscope_spans_dropped_total{reason="queue_full"}' in metrics or (
        shed is not None and float(shed.group(1)) > 0
    )
    srv.stop()
    stored = stored_per_trace(srv.data_dir)
    assert all(stored.get(t) == n for t, n in load.acked.items())


def test_retried_export_is_not_duplicated(server: ServerProcess) -> None:
    body, trace = make_body(42, 10)
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    for _ in range(3):
        conn.request("POST", "/v1/traces", body, PROTOBUF)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    server.stop()
    assert stored_per_trace(server.data_dir) == {trace: 10}
