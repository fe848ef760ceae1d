"""The decode worker pool (``collector/decoding/pool.py``), with real worker processes: each
request's future gets its own body's table (as decoding in-process gives it) under
concurrent submissions, a body a worker refuses comes back as the same 4xx error and the
worker stays, and a worker killed with requests outstanding fails exactly those with a
retryable 503 and is replaced."""

from __future__ import annotations

import gzip
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from prefixscope.collector.decoding import PROTOBUF, Decoded, decode_body
from prefixscope.collector.decoding.pool import DecodePool, WorkerGone
from prefixscope.errors import PayloadTooLarge, PrefixScopeError
from tests.support.otlp import make_body

MAX_INFLATED, MAX_ATTR = 1 << 22, 1024


@pytest.fixture
def restarts() -> list[float]:
    return []


@pytest.fixture
def pool(restarts: list[float]) -> Iterator[DecodePool]:
    p = DecodePool(2, MAX_INFLATED, MAX_ATTR, on_restart=lambda: restarts.append(time.time()))
    p.wait_ready()
    try:
        yield p
    finally:
        p.close()


def _same(a: Decoded, b: Decoded) -> None:
    assert a.table is not None and b.table is not None
    assert a.table.equals(b.table)
    assert (a.spans, a.rejected, a.truncated) == (b.spans, b.rejected, b.truncated)


def test_every_future_gets_its_own_body_decoded_as_in_process(pool: DecodePool) -> None:
    bodies = [make_body(i, 1 + i % 17)[0] for i in range(60)]
    futures: dict[int, Future[Decoded]] = {}
    lock = threading.Lock()

    def send(indices: range) -> None:
        for i in indices:
            fut = pool.submit(bodies[i], PROTOBUF, None)
            with lock:
                futures[i] = fut

    threads = [threading.Thread(target=send, args=(range(k, 60, 3),)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, body in enumerate(bodies):
        _same(futures[i].result(timeout=30), decode_body(body, PROTOBUF, None, MAX_INFLATED, 1024))


def test_a_refused_body_is_the_same_error_and_the_worker_stays(pool: DecodePool) -> None:
    pids = pool.pids
    with pytest.raises(PrefixScopeError) as in_process:
        decode_body(b"\xff\xff\xff garbage", PROTOBUF, None, MAX_INFLATED, MAX_ATTR)
    with pytest.raises(PrefixScopeError) as via_pool:
        pool.decode(b"\xff\xff\xff garbage", PROTOBUF, None)
    assert type(via_pool.value) is type(in_process.value)
    assert via_pool.value.http_status == in_process.value.http_status < 500
    assert str(via_pool.value) == str(in_process.value)
    bomb = gzip.compress(b"\0" * (MAX_INFLATED + 1))
    with pytest.raises(PayloadTooLarge):
        pool.decode(bomb, PROTOBUF, "gzip")
    body = make_body(1, 5)[0]
    assert pool.decode(body, PROTOBUF, None).spans == 5
    assert pool.pids == pids  # no worker was lost to bad input


def test_a_killed_worker_fails_its_outstanding_requests_and_is_replaced(
    pool: DecodePool, restarts: list[float]
) -> None:
    victim = pool.pids[0]
    os.kill(victim, signal.SIGSTOP)  # it stops reading: what is sent to it stays outstanding
    try:
        worker = pool._workers[0]
        outstanding = [worker.submit(make_body(i, 3)[0], PROTOBUF, None) for i in range(4)]
        other = pool._workers[1].submit(make_body(9, 3)[0], PROTOBUF, None)
        assert other.result(timeout=30).spans == 3  # the other worker is unaffected
        assert not any(f.done() for f in outstanding)
    finally:
        os.kill(victim, signal.SIGKILL)
    for fut in outstanding:
        with pytest.raises(WorkerGone) as gone:
            fut.result(timeout=30)
        assert gone.value.http_status == 503 and gone.value.retry_after_s
    deadline = time.monotonic() + 60
    while (victim in pool.pids or not restarts) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim not in pool.pids and len(restarts) == 1
    pool.wait_ready()
    assert [pool.decode(make_body(i, 2)[0], PROTOBUF, None).spans for i in range(4)] == [2] * 4
