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

from prefixscope.collector.decoding import PROTOBUF, decode_body, running_decoder
from prefixscope.collector.decoding.wire import READY, REPLY, REQUEST
from tests.support.decoders import require_native_decoder
from tests.support.otlp import make_body
from tests.support.serverproc import ServerProcess
from tests.support.store import query_store

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial

HEADERS = {"Content-Type": PROTOBUF}


def worker_pids(srv: ServerProcess) -> list[int]:
    assert srv.proc is not None
    out = subprocess.run(
        ["pgrep", "-P", str(srv.proc.pid), "-f", "decoding.worker"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [int(p) for p in out.split()]


def metric(srv: ServerProcess, name: str) -> float:
    text = httpx.get(srv.base_url + "/metrics").text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class Clients:
    """Threads sending distinct 256-span requests until stopped (or the server goes away);
    they remember which traces got a 200 and every reply's status and Retry-After."""

    def __init__(self, srv: ServerProcess, n: int = 3) -> None:
        self.srv = srv
        self.acked: list[str] = []
        self.replies: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(n)]
        for t in self._threads:
            t.start()

    def _run(self, k: int) -> None:
        n = k * 100_000
        with httpx.Client(base_url=self.srv.base_url, timeout=30) as c:
            while not self._stop.is_set():
                body, trace = make_body(n, 256)
                n += 1
                try:
                    r = c.post("/v1/traces", content=body, headers=HEADERS)
                except httpx.HTTPError:
                    return
                self.replies.append((r.status_code, r.headers.get("Retry-After")))
                if r.status_code == 200:
                    self.acked.append(trace)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


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
    clients = Clients(srv)
    time.sleep(1.0)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = worker_pids(srv)
        if pids and pids != [first]:
            break
        time.sleep(0.1)
    n_before = len(clients.acked)
    time.sleep(1.5)  # the replacement serves
    clients.stop()
    assert len(clients.acked) > n_before, "no request succeeded after the worker was replaced"
    assert worker_pids(srv) and first not in worker_pids(srv)
    assert metric(srv, "prefixscope_decode_worker_restarts_total") == 1
    srv.stop()
    stored = {t for (t,) in query_store(srv.data_dir, "SELECT DISTINCT trace_id FROM spans")}
    assert set(clients.acked) <= stored
    # a request the dead worker held is refused as retryable, and says when to retry
    assert all(st == 200 or (st == 503 and ra) for st, ra in clients.replies), clients.replies


def test_sigint_to_the_process_group_drains_through_the_workers(tmp_path: Path) -> None:
    """Ctrl-C reaches the server and its workers together; the workers must outlive the drain."""
    srv = ServerProcess(tmp_path / "d", ["--workers", "1"], start_new_session=True).start()
    clients = Clients(srv)
    time.sleep(1.0)
    assert srv.proc is not None
    os.killpg(srv.proc.pid, signal.SIGINT)
    assert srv.proc.wait(60) == 0, srv.log()
    clients.stop()
    assert clients.acked
    stored = {t for (t,) in query_store(srv.data_dir, "SELECT DISTINCT trace_id FROM spans")}
    assert set(clients.acked) <= stored
    assert "decode worker" not in srv.log()  # no worker died during the drain


@pytest.mark.parametrize("decoder", ["python", "native"])
def test_worker_protocol_round_trip(decoder: str) -> None:
    """The worker program itself, spoken to over its pipes (as the server does), with either
    decoder: the table it returns is the reference decoder's (decoded here, in Python)."""
    require_native_decoder(decoder)
    body, _ = make_body(3, 10)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefixscope.collector.decoding.worker",
            "1000000",
            "100",
            decoder,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    assert proc.stdout.read(1) == READY
    proc.stdin.write(REQUEST.pack(len(body), 0, 0) + body)
    proc.stdin.flush()
    status, flags, spans, rejected, truncated, msg_len, ipc_len = REPLY.unpack(
        proc.stdout.read(REPLY.size)
    )
    # flags 0: not deferred (the native decoder handled it itself)
    assert (status, flags, spans, rejected, truncated, msg_len) == (0, 0, 10, 0, 0, 0)
    assert ipc_len > 0
    table = pa.ipc.open_stream(proc.stdout.read(ipc_len)).read_all()
    assert running_decoder() == "python"
    expected = decode_body(body, PROTOBUF, None, 1_000_000, 100).table
    assert table.equals(expected)
    proc.stdin.close()  # end of input: the worker exits cleanly
    assert proc.wait(10) == 0
