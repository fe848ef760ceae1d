"""From request bytes to committed spans: admission control, decoding, the hand-off to the
writer and the wait for its commit, as one call (:meth:`IngestPipeline.export`) that every
transport makes. Decoding (:mod:`.decoding`) is CPU-bound Python: with
``workers >= 1`` it runs in that many decode worker processes (:mod:`.decoding.pool`), so the
serving process keeps its GIL for HTTP, the API and the DuckDB writer; with ``workers = 0``
it runs in a thread of the serving process (lighter, for embedding and small loads).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from prefixscope.config import Settings
from prefixscope.errors import Overloaded
from prefixscope.metrics import Metrics

from ..decoding import Decoded, decode_body
from ..decoding.pool import DecodePool
from .writer import CommitResult, GroupCommitWriter


class InFlight:
    """Requests admitted and not yet handed to the writer: the pipeline counts them, the
    writer lingers while there are any (``busy``, given to it at construction)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def busy(self) -> bool:
        return self.count > 0


class IngestPipeline:
    """decode → (metrics) → writer. One per server; both transports use it."""

    def __init__(
        self,
        settings: Settings,
        writer: GroupCommitWriter,
        metrics: Metrics,
        inflight: InFlight | None = None,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self._flight = inflight or InFlight()
        self._pool: DecodePool | None = None
        # Threads that decode (workers = 0) or wait on a worker process (workers >= 1).
        self.threads = ThreadPoolExecutor(
            max_workers=max(4, settings.workers * 4), thread_name_prefix="prefixscope-decode"
        )
        # Requests admitted but not yet handed to the writer. Bounding them bounds the memory
        # held by bodies in flight; refusing before the body is read keeps shedding cheap.
        self.max_inflight = max(16, settings.workers * 16)
        # Bodies being received are bounded apart (and more loosely): a client dribbling its
        # body holds a receive slot, never a decode slot, so it cannot starve other clients.
        self.max_receiving = self.max_inflight * 4
        self._receiving = 0

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Admission control: 429 before decoding a body the server cannot take now (the
        writer's queue is full or ``max_inflight`` bodies are being decoded)."""
        self._take_decode_slot()
        try:
            yield
        finally:
            self._give_back_decode_slot()

    def _take_decode_slot(self) -> None:
        flight = self._flight
        with self._admit(lambda: flight.count >= self.max_inflight):
            flight.count += 1

    def _give_back_decode_slot(self) -> None:
        with self._flight.lock:
            self._flight.count -= 1

    @contextmanager
    def receiving(self) -> Iterator[None]:
        """Admission for reading a body: 429 when the queue is full or too many are in transit."""
        with self._admit(lambda: self._receiving >= self.max_receiving):
            self._receiving += 1
        try:
            yield
        finally:
            with self._flight.lock:
                self._receiving -= 1

    @contextmanager
    def _admit(self, full: Callable[[], bool]) -> Iterator[None]:
        """The one admission check (under the lock; the body runs when admitted): the
        writer's queue, then the slot kind's own bound ``full``."""
        s = self.settings
        with self._flight.lock:
            if self.writer.queued_spans >= s.queue_max_spans or full():
                self.metrics.requests_shed.inc()
                raise Overloaded(
                    "server is at capacity; retry later", retry_after_s=s.retry_after_s
                )
            yield

    def close(self) -> None:
        self.threads.shutdown(wait=True)
        if self._pool is not None:
            self._pool.close()

    def start(self) -> None:
        """Start the decode workers (if any) and wait until they are up."""
        s = self.settings
        if s.workers > 0 and self._pool is None:
            self._pool = DecodePool(
                s.workers,
                s.max_decompressed_bytes,
                s.max_attribute_bytes,
                on_restart=self.metrics.decode_worker_restarts.inc,
            )
            self._pool.wait_ready()

    @property
    def worker_pids(self) -> list[int]:
        return self._pool.pids if self._pool is not None else []

    def export(
        self, body: bytes, mtype: str, encoding: str | None, transport: str
    ) -> Future[Decoded]:
        """One trace export, whatever its transport: admission (raises
        :class:`~prefixscope.errors.Overloaded` here, before any work), then decoding in a
        decode thread, the hand-off to the writer and its commit. The future is done when the
        spans are committed (durable: the answer may be sent) or with the error to answer.

        No thread waits for the commit: the writer's future completes this one, so an HTTP
        request awaits it on the event loop and a gRPC call in its own thread."""
        self._take_decode_slot()
        out: Future[Decoded] = Future()
        parts = [body]  # dropped once decoded: the body's memory is not held to the commit

        def run() -> None:
            try:
                try:
                    decoded = self.decode(parts.pop(), mtype, encoding)
                finally:
                    # out of the decode slot before queueing, so the writer's linger sees the
                    # spans as queued
                    self._give_back_decode_slot()
                committed = self.submit(decoded, transport)
            except BaseException as exc:  # handed to the caller, who answers with it
                out.set_exception(exc)
                return
            if committed is None:
                out.set_result(decoded)
                return

            def done(f: Future[CommitResult]) -> None:
                exc = f.exception()
                if exc is not None:
                    out.set_exception(exc)
                else:
                    out.set_result(decoded)

            committed.add_done_callback(done)

        try:
            self.threads.submit(run)
        except BaseException:
            self._give_back_decode_slot()
            raise
        return out

    def decode(self, body: bytes, mtype: str, encoding: str | None) -> Decoded:
        """Decode one body (blocking; call from a worker thread)."""
        if self._pool is not None:
            return self._pool.decode(body, mtype, encoding)
        s = self.settings
        return decode_body(body, mtype, encoding, s.max_decompressed_bytes, s.max_attribute_bytes)

    def submit(self, decoded: Decoded, transport: str) -> Future[CommitResult] | None:
        """Hand decoded spans to the writer; None when there is nothing to store."""
        m = self.metrics
        m.spans_received.labels(transport).inc(decoded.spans)
        if decoded.rejected:
            m.spans_rejected.inc(decoded.rejected)
        if decoded.truncated:
            m.attributes_truncated.inc(decoded.truncated)
        if decoded.deferred:
            m.decode_deferred.inc()
        if decoded.table is None:
            return None
        return self.writer.submit(decoded.table)
