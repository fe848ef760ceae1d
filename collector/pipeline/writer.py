"""Group commit: many concurrent export requests share one DuckDB transaction.

Request handlers ``submit()`` an Arrow table of decoded spans and wait on the returned future;
one writer thread drains everything queued and hands it to the sink in one durable write (the
DuckDB sink: one ``INSERT OR IGNORE`` transaction; the lake sink: one Parquet segment).
Futures resolve only after the commit, so a 200 always means durable. The queue is bounded in
spans: when it is full ``submit()`` raises :class:`Overloaded` and the client is told to retry.

GenAI log events (``submit_logs``) take the same thread in slices of their own queue: each
turn commits at most one group of spans, then at most ``log_batch_max`` log records, so a
log flood adds at most one bounded log insert to a span group's wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from prefixscope.errors import Overloaded, Unavailable
from prefixscope.metrics import Metrics

from ..storage.sinks import LogSink, SpanSink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What happened to one submitted table."""

    accepted: int  # spans offered
    inserted: int  # spans new to the store (commit-wide share not tracked per request)
    batch: int  # the ingest_batch number of the commit


@dataclass(slots=True)
class _Pending:
    table: pa.Table
    future: Future[Any]  # CommitResult for spans, the count of records for log events


class GroupCommitWriter:
    """The one thread that writes spans to the store."""

    def __init__(
        self,
        sink: SpanSink,
        metrics: Metrics,
        *,
        queue_max_spans: int,
        batch_max_spans: int,
        retry_after_s: float = 1.0,
        linger_s: float = 0.0,
        linger_target_spans: int = 4096,
        on_commit: Callable[[pa.Table], None] | None = None,
        log_sink: LogSink | None = None,
        log_batch_max: int = 10_000,
        log_queue_max: int = 100_000,
        more_coming: Callable[[], bool] = lambda: False,
    ) -> None:
        self._sink = sink
        self._log_sink = log_sink
        self._log_batch_max = log_batch_max
        self._log_queue_max = log_queue_max
        self._log_queue: deque[_Pending] = deque()
        self._queued_logs = 0
        self._metrics = metrics
        #: called with the spans each group commit stored (without the retried duplicates
        #: the sink dropped) after its clients are answered (derived metrics, the roll count)
        self._on_commit = on_commit
        self._last_table: pa.Table | None = None
        self._queue_max = queue_max_spans
        self._batch_max = batch_max_spans
        self._retry_after = retry_after_s
        self._linger = linger_s
        self._linger_target = linger_target_spans
        #: True while requests are being decoded (the pipeline's :class:`InFlight`): worth
        #: lingering for
        self._more_coming = more_coming
        self._queue: deque[_Pending] = deque()
        self._queued_spans = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._batch_no = 0
        self.last_commit_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._batch_no = self._sink.open()
        self._thread = threading.Thread(target=self._run, name="prefixscope-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit everything already queued, then stop. New submissions are refused."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._sink.close()

    @property
    def queued_spans(self) -> int:
        return self._queued_spans

    @property
    def queued_log_records(self) -> int:
        return self._queued_logs

    @property
    def stores_logs(self) -> bool:
        return self._log_sink is not None

    @property
    def healthy(self) -> bool:
        return self.last_commit_error is None and not self._stopping

    # -- producer side ----------------------------------------------------------------------
    def submit(self, table: pa.Table) -> Future[CommitResult]:
        n = table.num_rows
        fut: Future[CommitResult] = Future()
        with self._cond:
            if self._stopping:
                raise Unavailable("server is shutting down", retry_after_s=self._retry_after)
            if self._queued_spans and self._queued_spans + n > self._queue_max:
                self._metrics.spans_dropped.labels("queue_full").inc(n)
                raise Overloaded(
                    f"ingest queue is full ({self._queued_spans} spans waiting)",
                    retry_after_s=self._retry_after,
                )
            self._queue.append(_Pending(table, fut))
            self._queued_spans += n
            self._metrics.queue_depth.set(self._queued_spans)
            self._cond.notify()
        return fut

    def submit_logs(self, table: pa.Table) -> Future[int]:
        """Queue log events (rows of ``log_events``); the future resolves (to the rows offered)
        once they are durable. A record stored before (a retried export) is not stored again."""
        n = table.num_rows
        fut: Future[int] = Future()
        with self._cond:
            if self._log_sink is None:
                raise Unavailable("this writer does not store log events")
            if self._stopping:
                raise Unavailable("server is shutting down", retry_after_s=self._retry_after)
            if self._queued_logs and self._queued_logs + n > self._log_queue_max:
                raise Overloaded(
                    f"log queue is full ({self._queued_logs} records waiting)",
                    retry_after_s=self._retry_after,
                )
            self._log_queue.append(_Pending(table, fut))
            self._queued_logs += n
            self._cond.notify()
        return fut

    # -- writer thread ------------------------------------------------------------------------
    def _take(self) -> tuple[list[_Pending], list[_Pending]]:
        """At most one group of spans and one slice of log records, for one turn."""
        with self._cond:
            while not self._queue and not self._log_queue and not self._stopping:
                self._cond.wait()
            # Linger briefly for requests still being decoded: a commit costs per call as
            # well as per span, so a few ms buy a bigger, cheaper group.
            if self._queue and self._linger > 0 and not self._stopping:
                deadline = time.monotonic() + self._linger
                while (
                    self._queued_spans < self._linger_target
                    and not self._stopping
                    and self._more_coming()
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            group: list[_Pending] = []
            rows = 0
            while self._queue and (
                not group or rows + self._queue[0].table.num_rows <= self._batch_max
            ):
                item = self._queue.popleft()
                rows += item.table.num_rows
                group.append(item)
            logs: list[_Pending] = []
            records = 0
            while self._log_queue and (
                not logs or records + self._log_queue[0].table.num_rows <= self._log_batch_max
            ):
                item = self._log_queue.popleft()
                records += item.table.num_rows
                logs.append(item)
            return group, logs

    def _release(self, group: list[_Pending]) -> None:
        with self._cond:
            self._queued_spans -= sum(p.table.num_rows for p in group)
            self._metrics.queue_depth.set(self._queued_spans)

    def _run(self) -> None:
        while True:
            group, logs = self._take()
            if not group and not logs:
                return  # stopping and drained
            if group:
                self._write_spans(group)
            if logs:
                self._write_logs(logs)

    def _write_logs(self, logs: list[_Pending]) -> None:
        assert self._log_sink is not None
        n = sum(p.table.num_rows for p in logs)
        try:
            table = logs[0].table if len(logs) == 1 else pa.concat_tables([p.table for p in logs])
            self._log_sink.write_logs(table)
        except Exception as exc:  # storage failure: retryable, like a span group's
            with self._cond:
                self._queued_logs -= n
            self.last_commit_error = f"{type(exc).__name__}: {exc}"
            log.error("commit of %d log records failed: %s", n, self.last_commit_error)
            self._metrics.commit_errors.inc()
            err = Unavailable(
                f"storage could not commit: {type(exc).__name__}", retry_after_s=self._retry_after
            )
            for p in logs:
                p.future.set_exception(err)
            return
        self.last_commit_error = None
        with self._cond:
            self._queued_logs -= n
        for p in logs:
            p.future.set_result(p.table.num_rows)

    def _write_spans(self, group: list[_Pending]) -> None:
        try:
            result = self._commit(group)
        except Exception as exc:  # storage failure: retryable for every waiting client
            self._release(group)
            n = sum(p.table.num_rows for p in group)
            self.last_commit_error = f"{type(exc).__name__}: {exc}"
            log.error("group commit of %d spans failed: %s", n, self.last_commit_error)
            self._metrics.commit_errors.inc()
            self._metrics.spans_dropped.labels("commit_failed").inc(n)
            err = Unavailable(
                f"storage could not commit: {type(exc).__name__}",
                retry_after_s=self._retry_after,
            )
            for p in group:
                p.future.set_exception(err)
            return
        self.last_commit_error = None
        self._release(group)
        for p in group:
            p.future.set_result(
                CommitResult(accepted=p.table.num_rows, inserted=result, batch=self._batch_no)
            )
        if self._on_commit is not None and self._last_table is not None:
            try:  # once per group: the hook's fixed cost is paid per commit, not request
                self._on_commit(self._last_table)
            except Exception:  # derived metrics never fail ingest
                log.exception("on_commit hook failed")
            self._last_table = None

    def _commit(self, group: list[_Pending]) -> int:
        started = time.perf_counter()
        table = group[0].table if len(group) == 1 else pa.concat_tables([p.table for p in group])
        batch_no = self._batch_no + 1
        inserted = self._sink.write(table, batch_no)
        self._batch_no = batch_no
        # what the hook observes: the spans stored, not the retried ones the sink dropped
        self._last_table = self._sink.take_written()
        m = self._metrics
        m.commit_latency.observe(time.perf_counter() - started)
        m.commit_batch_spans.observe(table.num_rows)
        m.spans_committed.inc(inserted)
        m.spans_duplicate.inc(table.num_rows - inserted)
        return inserted
