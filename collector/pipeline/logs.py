"""OTLP logs (``POST /v1/logs``, gRPC ``LogsService/Export``): GenAI events kept, the rest
counted.

The official OTel GenAI instrumentors send message content as log events, not span
attributes: ``gen_ai.system.message``, ``gen_ai.user.message``, ``gen_ai.assistant.message``,
``gen_ai.tool.message`` and ``gen_ai.choice``, each carrying the trace and span id of the
call. A record whose event name (the ``event_name`` field, else the ``event.name``
attribute) starts with ``gen_ai.`` is stored in ``log_events``; every other record is
accepted, counted (``prefixscope_log_records_total{kept="false"}``) and dropped: PrefixScope
is not a general log store. Events join their span by ``(trace_id, span_id)`` when text is
read (:mod:`..spans.messages`), so it does not matter which of the two arrives first.

A record is stored once: its id is a hash of (trace, span, time, event name, body), so a
retried export is ignored.

Logs never starve traces: with decode workers (``--workers`` >= 1) a log export is decoded
in a log decode worker process of its own (nice 10, started at the first export), never in
the trace decode workers nor under this process's GIL. Its events come back as one Arrow
table, handed to the
group-commit writer in slices of at most ``--logs-batch-max-records`` (one slice waiting at a
time), and the writer alternates span groups and log slices. Log requests have their own
budget (``--logs-max-inflight`` requests decoded or committed at once, in their own threads);
beyond it they get 429 with ``Retry-After`` before their body is read, whatever traces do.
At shutdown a request still between slices answers 503 (its slices so far are stored, and
its retry stores each record once).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from prefixscope.config import Settings
from prefixscope.errors import BadRequest, Overloaded, Unavailable
from prefixscope.metrics import Metrics

from ..decoding.logs import decode_logs_body
from ..decoding.pool import DecodePool
from .writer import GroupCommitWriter

#: nice value of the log decode worker process: trace ingest's processes win a core first
LOG_WORKER_NICE = 10


@dataclass(frozen=True, slots=True)
class LogsDecoded:
    """What one export held: its kept events as rows of ``log_events``, and counts."""

    table: pa.Table | None
    received: int
    dropped: int
    truncated: int


class LogPipeline:
    """Decodes OTLP log exports and stores their GenAI events (embedded store only), within
    the logs' own budget: requests in flight, and records per group commit."""

    def __init__(self, settings: Settings, writer: GroupCommitWriter, metrics: Metrics) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self.max_inflight = settings.logs_max_inflight
        self.slice_records = settings.logs_batch_max_records
        #: log requests decode and wait for their commits here, never in the trace threads
        self.threads = ThreadPoolExecutor(
            max_workers=self.max_inflight, thread_name_prefix="prefixscope-logs"
        )
        self._inflight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._pool: DecodePool | None = None

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """The logs' admission budget: 429 before the body is read once it is spent."""
        with self._lock:
            if self._closing.is_set():
                raise Unavailable(
                    "server is shutting down", retry_after_s=self.settings.retry_after_s
                )
            if self._inflight >= self.max_inflight:
                self.metrics.log_requests_shed.inc()
                raise Overloaded(
                    f"log ingest is at capacity ({self.max_inflight} log exports in flight, "
                    "--logs-max-inflight); retry later",
                    retry_after_s=self.settings.retry_after_s,
                )
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1

    def begin_shutdown(self) -> None:
        """Requests still between slices stop with 503 (retryable); new ones are refused."""
        self._closing.set()

    def close(self) -> None:
        self.begin_shutdown()
        self.threads.shutdown(wait=True)
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @property
    def inflight(self) -> int:
        """Log exports admitted and not yet answered."""
        return self._inflight

    @property
    def worker_pids(self) -> list[int]:
        pool = self._pool
        return pool.pids if pool is not None else []

    def export(self, body: bytes, mtype: str, encoding: str | None) -> Future[LogsDecoded]:
        """Decode and store one export in the logs' threads; the future is done when its
        events are committed (200 means durable) or with the error to answer. The caller holds
        :meth:`admitted` around reading the body and this wait: the logs' budget covers both."""
        return self.threads.submit(self.handle, body, mtype, encoding)

    def handle(self, body: bytes, mtype: str, encoding: str | None) -> LogsDecoded:
        """Decode and store (blocking: call from a worker thread). 200 means durable."""
        decoded = self._decode(body, mtype, encoding)
        del body
        if decoded.table is not None and decoded.table.num_rows:
            if not self.writer.stores_logs:
                raise BadRequest(
                    "GenAI log events are stored by the embedded store only (--store duckdb); "
                    "this collector runs in lake mode: send logs to the serving process"
                )
            self._store(decoded.table)
        m = self.metrics
        m.log_records.labels("true").inc(decoded.received - decoded.dropped)
        m.log_records.labels("false").inc(decoded.dropped)
        if decoded.truncated:
            m.attributes_truncated.inc(decoded.truncated)
        return decoded

    def _decode(self, body: bytes, mtype: str, encoding: str | None) -> LogsDecoded:
        """In the log decode worker process (started at the first export) when the server
        has decode workers, so a big export's Python decoding never holds this process's
        GIL nor its memory; else in this thread."""
        s = self.settings
        if s.workers > 0:
            d = self._worker().decode(body, mtype, encoding, logs=True)
            return LogsDecoded(d.table, d.spans, d.rejected, d.truncated)
        batch = decode_logs_body(
            body, mtype, encoding, s.max_decompressed_bytes, s.max_attribute_bytes
        )
        table = batch.table() if batch.rows else None
        return LogsDecoded(
            table, batch.received, batch.dropped, batch.counters.truncated_attributes
        )

    def _worker(self) -> DecodePool:
        with self._lock:
            if self._closing.is_set():
                raise Unavailable(
                    "server is shutting down", retry_after_s=self.settings.retry_after_s
                )
            if self._pool is not None:
                return self._pool
            s = self.settings
            pool = self._pool = DecodePool(
                1,
                s.max_decompressed_bytes,
                s.max_attribute_bytes,
                on_restart=self.metrics.decode_worker_restarts.inc,
                nice=LOG_WORKER_NICE,
            )
        try:
            pool.wait_ready()
        except RuntimeError as exc:  # could not start: retryable, and the next export tries again
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.close()
            raise Unavailable(
                f"log decode worker could not start: {exc}",
                retry_after_s=self.settings.retry_after_s,
            ) from None
        return pool

    def _store(self, table: pa.Table) -> None:
        """Slice by slice through the group-commit writer, one slice waiting at a time, so
        span groups are committed between them."""
        for offset in range(0, table.num_rows, self.slice_records):
            if self._closing.is_set():
                raise Unavailable(
                    "server is shutting down; the export was stored in part, a retry stores "
                    "each record once",
                    retry_after_s=self.settings.retry_after_s,
                )
            self.writer.submit_logs(table.slice(offset, self.slice_records)).result()
