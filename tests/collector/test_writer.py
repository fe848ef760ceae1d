"""The group-commit writer (``collector/pipeline/writer.py``) over a real DuckDB sink and store:
submissions commit in order, a future resolves only once its spans are in the store,
a full queue refuses new work (back-pressure) and loses nothing it accepted, lingering
groups concurrent submissions into one commit, and a failed commit answers every waiting
client with a retryable error while the writer carries on."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pyarrow as pa
import pytest

from prefixscope.collector.decoding import PROTOBUF, decode_body
from prefixscope.collector.pipeline.writer import CommitResult, GroupCommitWriter
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store, scalar
from prefixscope.errors import Overloaded, Unavailable
from prefixscope.metrics import Metrics
from tests.support.otlp import make_body


def _table(req_no: int, n: int = 10) -> pa.Table:
    body, _ = make_body(req_no, n)
    t = decode_body(body, PROTOBUF, None, 1 << 24, 1024).table
    assert t is not None
    return t


def _trace(req_no: int) -> str:
    return (req_no + 1).to_bytes(16, "big").hex()


def _stored(store: Store, req_no: int) -> int:
    con = store.cursor()
    try:
        return int(scalar(con, "SELECT count(*) FROM spans WHERE trace_id = ?", [_trace(req_no)]))
    finally:
        con.close()


def _writer(store: Store, sink: object | None = None, **kw: object) -> GroupCommitWriter:
    args: dict[str, object] = {"queue_max_spans": 1_000, "batch_max_spans": 1_000, **kw}
    return GroupCommitWriter(sink or DuckDBSink(store), Metrics(), **args)  # type: ignore[arg-type]


def test_an_acknowledgement_comes_after_the_commit_and_in_order(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        writer = _writer(store, batch_max_spans=10)  # one request per group
        seen: list[tuple[int, int, int]] = []  # (request, batch, spans visible at the ack)

        def on_done(req_no: int) -> object:
            def done(fut: Future[CommitResult]) -> None:
                seen.append((req_no, fut.result().batch, _stored(store, req_no)))

            return done

        futures = []
        for req_no in range(8):  # queued before the thread starts: eight groups in order
            fut = writer.submit(_table(req_no))
            fut.add_done_callback(on_done(req_no))  # type: ignore[arg-type]
            futures.append(fut)
        writer.start()
        results = [f.result(timeout=30) for f in futures]
        writer.stop()
    assert [r.accepted for r in results] == [10] * 8
    assert [r.inserted for r in results] == [10] * 8  # one request per commit: its own
    assert [s[0] for s in seen] == list(range(8))  # answered in submission order
    assert [s[1] for s in seen] == sorted(s[1] for s in seen)  # batch numbers ascend
    assert len({s[1] for s in seen}) == 8
    assert all(visible == 10 for _, _, visible in seen)  # durable when the client hears


def test_a_full_queue_refuses_new_spans_and_keeps_what_it_accepted(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        writer = _writer(store, queue_max_spans=25)  # not started: nothing drains
        accepted = [writer.submit(_table(0)), writer.submit(_table(1))]
        with pytest.raises(Overloaded, match="queue is full") as refused:
            writer.submit(_table(2))
        assert refused.value.retry_after_s > 0
        assert writer.queued_spans == 20
        writer.start()
        assert [f.result(timeout=30).accepted for f in accepted] == [10, 10]
        assert [_stored(store, i) for i in range(2)] == [10, 10]
        assert writer.queued_spans == 0
        writer.submit(_table(2)).result(timeout=30)  # room again once drained
        writer.stop()
        assert [_stored(store, i) for i in range(3)] == [10, 10, 10]
        with pytest.raises(Unavailable, match="shutting down"):
            writer.submit(_table(3))


def test_lingering_groups_concurrent_requests_into_one_commit(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        coming = threading.Event()
        coming.set()
        writer = _writer(
            store,
            linger_s=5.0,
            linger_target_spans=40,
            more_coming=coming.is_set,
        )
        writer.start()
        futures = [writer.submit(_table(i)) for i in range(4)]  # 40 spans: the target
        batches = {f.result(timeout=30).batch for f in futures}
        assert len(batches) == 1  # one commit for the four
        coming.clear()  # nothing more being decoded: no wait for a lone request
        assert writer.submit(_table(9)).result(timeout=2).batch == batches.pop() + 1
        writer.stop()


class _FailingOnce(DuckDBSink):
    """The real sink, whose next write fails once as a full disk would (the real failure is
    exercised end to end in test_reliability_diskfull.py)."""

    fail_next = False

    def write(self, table: pa.Table, batch_no: int) -> int:
        if self.fail_next:
            self.fail_next = False
            raise OSError("No space left on device")
        return super().write(table, batch_no)


def test_a_failed_commit_answers_every_waiting_client_and_the_writer_carries_on(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        sink = _FailingOnce(store)
        writer = _writer(store, sink)
        sink.fail_next = True
        failed = [writer.submit(_table(i)) for i in range(3)]  # one group: it fails
        writer.start()
        for fut in failed:
            with pytest.raises(Unavailable, match="could not commit: OSError"):
                fut.result(timeout=30)
        assert not writer.healthy
        assert writer.queued_spans == 0  # released: the queue is not leaked
        assert [_stored(store, i) for i in range(3)] == [0, 0, 0]  # nothing half-written
        again = [writer.submit(_table(i)) for i in range(3)]  # the clients retry
        assert [f.result(timeout=30).accepted for f in again] == [10, 10, 10]
        assert [_stored(store, i) for i in range(3)] == [10, 10, 10]
        assert writer.healthy
        writer.stop()
        assert [_stored(store, i) for i in range(3)] == [10, 10, 10]
