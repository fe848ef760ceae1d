"""Decode worker processes: the same results as in-process decoding, and crashes cost no data.

Real server processes; the decode workers are found as the server's child processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from prefixscope.collector.decode_proto import READY, REPLY, REQUEST
from prefixscope.collector.decoding import PROTOBUF, decode_body

from .conftest import query_store
from .serverproc import ServerProcess
from .test_collector_durability import make_body

HEADERS = {"Content-Type": PROTOBUF}


def worker_pids(srv: ServerProcess) -> list[int]:
    assert srv.proc is not None
    out = subprocess.run(
        ["pgrep", "-P", str(srv.proc.pid), "-f", "decode_worker"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [int(p) for p in out.split()]


def metric(srv: ServerProcess, name: str) -> float:
    text = httpx.get(srv.base_url + "/metrics").text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("workers", ["0", "2"])
def test_worker_count_and_same_result(
    start_server: Callable[..., ServerProcess], workers: str
) -> None:
    srv = start_server("--workers", workers)
    assert len(worker_pids(srv)) == int(workers)
    body, trace = make_body(1, 50)
    bad = b"\x0a\xff\xff\xff\xff\x0f"  # a length prefix far past the end: truncated protobuf
    r = httpx.post(srv.base_url + "/v1/traces", content=body, headers=HEADERS)
    assert r.status_code == 200, r.text
    r = httpx.post(
        srv.base_url + "/v1/traces",
        content=bad,
        headers={"Content-Type": "application/json", "Content-Encoding": "br"},
    )
    assert r.status_code == 415 and "Content-Encoding" in r.json()["message"]
    r = httpx.post(srv.base_url + "/v1/traces", content=bad, headers=HEADERS)
    assert r.status_code == 400
    srv.stop()
    assert query_store(srv.data_dir, "SELECT count(*) FROM spans WHERE trace_id = ?", [trace]) == [
        (50,)
    ]


def test_killed_worker_is_replaced_and_no_acked_span_is_lost(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server("--workers", "1")
    [first] = worker_pids(srv)
    acked: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def client(k: int) -> None:
        n = k * 100_000
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            while not stop.is_set():
                body, trace = make_body(n, 256)
                n += 1
                r = c.post("/v1/traces", content=body, headers=HEADERS)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    acked.append(trace)
                else:  # retryable, and says so
                    assert r.status_code == 503 and r.headers.get("Retry-After"), r.text

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = worker_pids(srv)
        if pids and pids != [first] and len(acked) > 0:
            break
        time.sleep(0.1)
    n_before = len(acked)
    time.sleep(1.5)  # the replacement serves
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > n_before, "no request succeeded after the worker was replaced"
    assert worker_pids(srv) and first not in worker_pids(srv)
    assert metric(srv, "prefixscope_decode_worker_restarts_total") == 1
    srv.stop()
    stored = {t for (t,) in query_store(srv.data_dir, "SELECT DISTINCT trace_id FROM spans")}
    assert set(acked) <= stored
    assert all(s in (200, 503) for s in statuses)


def test_sigint_to_the_process_group_drains_through_the_workers(tmp_path: Path) -> None:
    """Ctrl-C reaches the server and its workers together; the workers must outlive the drain."""
    srv = ServerProcess(tmp_path / "d", ["--workers", "1"], start_new_session=True).start()
    acked: list[str] = []
    stop = threading.Event()

    def client(k: int) -> None:
        n = k * 100_000
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            while not stop.is_set():
                body, trace = make_body(n, 256)
                n += 1
                try:
                    r = c.post("/v1/traces", content=body, headers=HEADERS)
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(trace)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert srv.proc is not None
    os.killpg(srv.proc.pid, signal.SIGINT)
    assert srv.proc.wait(60) == 0, srv.log()
    stop.set()
    for t in threads:
        t.join()
    assert acked
    stored = {t for (t,) in query_store(srv.data_dir, "SELECT DISTINCT trace_id FROM spans")}
    assert set(acked) <= stored
    assert "decode worker" not in srv.log()  # no worker died during the drain


def test_worker_protocol_round_trip() -> None:
    """The worker program itself, spoken to over its pipes (as the server does)."""
    body, _ = make_body(3, 10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefixscope.collector.decode_worker", "1000000", "100"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    assert proc.stdout.read(1) == READY
    proc.stdin.write(REQUEST.pack(len(body), 0, 0) + body)
    proc.stdin.flush()
    status, spans, rejected, truncated, msg_len, ipc_len = REPLY.unpack(
        proc.stdout.read(REPLY.size)
    )
    assert (status, spans, rejected, truncated, msg_len) == (0, 10, 0, 0, 0) and ipc_len > 0
    table = pa.ipc.open_stream(proc.stdout.read(ipc_len)).read_all()
    expected = decode_body(body, PROTOBUF, None, 1_000_000, 100).table
    assert table.equals(expected)
    proc.stdin.close()  # end of input: the worker exits cleanly
    assert proc.wait(10) == 0
