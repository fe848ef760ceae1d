"""The soak's short CI version (bench/soak.py checks speed; this checks correctness): the
reference workload through one server with a 10 s hot retention, retries inside the dedupe
window, kill -9 while rows move to the cold tier, and every acknowledged span read once."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import httpx
import pytest

from bench.soak import MARK, SPANS_PER_REQUEST, run, templates
from tests.support.api_fixtures import sql_rows
from tests.support.serverproc import ServerProcess

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial

SPANS = 100 * SPANS_PER_REQUEST
ARGS = ["--hot-retention", "10s", "--dedupe-window", "15s", "--lake-roll-interval-s", "1"]


def _resend(srv: ServerProcess, ks: range) -> None:
    bodies = templates()
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=60)
    for k in ks:
        body = bodies[k % len(bodies)].replace(MARK, k.to_bytes(4, "big"))
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.close()


def _cold(srv: ServerProcess) -> int:
    return int(sql_rows(srv, "SELECT count(*) FROM spans WHERE ingest_batch IS NULL")[0][0])


def test_short_soak_tiers_dedupe_window_and_kill_9_during_moves(tmp_path: Path) -> None:
    data = tmp_path / "data"
    soak, srv = run(SPANS, clients=4, server_args=ARGS, data=data)
    try:
        assert sum(n for _, n, _ in soak.acked) == SPANS
        _resend(srv, range(100 - 8, 100))  # retries inside the window: dropped
        metrics = httpx.get(f"{srv.base_url}/metrics").text
        assert f"prefixscope_spans_duplicate_total {8 * SPANS_PER_REQUEST}.0" in metrics
        assert sql_rows(srv, "SELECT count(*), count(DISTINCT span_id) FROM spans") == [
            [SPANS, SPANS]
        ]
        # the workload's spans started in 2023: once the window has passed they move
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _cold(srv) == 0:
            time.sleep(0.2)
        assert _cold(srv) > 0, srv.log()
        srv.kill()  # kill -9 while moves are under way
        srv = ServerProcess(data, ARGS).start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _cold(srv) < SPANS:
            time.sleep(0.5)
        assert sql_rows(srv, "SELECT count(*), count(DISTINCT span_id) FROM spans") == [
            [SPANS, SPANS]
        ]
        assert _cold(srv) == SPANS, "every span moved to the cold tier"
        assert srv.stop() == 0
    finally:
        srv.kill()
    hot = data / "prefixscope.duckdb"
    assert hot.stat().st_size > 0
