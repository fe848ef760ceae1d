"""From request bytes to committed spans: limits, gzip, decoding, and the hand-off to the writer.

Shared by the HTTP and gRPC transports. Decoding is CPU-bound pure Python; with
``workers > 1`` it runs in a pool of processes that return Arrow IPC buffers, so decoding
scales with cores while one writer thread owns the database.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from prefixscope.config import Settings
from prefixscope.errors import BadRequest, Overloaded, PayloadTooLarge, UnsupportedMediaType
from prefixscope.metrics import Metrics

from .decode import Limits, decode_protobuf
from .decode_json import decode_json
from .writer import CommitResult, GroupCommitWriter

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass(slots=True)
class Decoded:
    table: pa.Table | None
    spans: int
    rejected: int
    message: str
    truncated: int


def media_type_lenient(content_type: str | None) -> str | None:
    """The request's encoding if recognisable, else None (for encoding error replies)."""
    try:
        return media_type(content_type)
    except UnsupportedMediaType:
        return None


def media_type(content_type: str | None) -> str:
    """``application/x-protobuf`` or ``application/json``; anything else is a 415."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in (PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"):
        return PROTOBUF
    if base == JSON:
        return JSON
    raise UnsupportedMediaType(
        f"unsupported Content-Type {content_type!r}: use application/x-protobuf or application/json"
    )


def gunzip_limited(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body, refusing (413) as soon as the output would exceed ``limit``."""
    out = bytearray()
    data = body
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            chunk = d.decompress(data, limit + 1 - len(out))
            out += chunk
            while d.unconsumed_tail and len(out) <= limit:
                out += d.decompress(d.unconsumed_tail, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadRequest(f"body is not valid gzip: {exc}") from None
        if len(out) > limit:
            raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
        if not d.eof:
            raise BadRequest("gzip body is truncated")
        data = d.unused_data  # concatenated gzip members
    return bytes(out)


def decode_body(
    body: bytes, mtype: str, encoding: str | None, max_decompressed: int, max_attr_chars: int
) -> Decoded:
    enc = (encoding or "identity").strip().lower()
    if enc == "gzip":
        body = gunzip_limited(body, max_decompressed)
    elif enc not in ("identity", ""):
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    limits = Limits(max_attr_chars)
    batch = decode_protobuf(body, limits) if mtype == PROTOBUF else decode_json(body, limits)
    n = len(batch)
    try:
        table = batch.to_arrow() if n else None
    except (OverflowError, pa.ArrowException) as exc:  # backstop: a value no column can hold
        raise BadRequest(f"a span value does not fit its column: {exc}") from None
    return Decoded(table, n, batch.rejected, batch.partial_message, batch.truncated_attributes)


def _decode_to_ipc(
    body: bytes, mtype: str, encoding: str | None, max_decompressed: int, max_attr_chars: int
) -> tuple[bytes | None, int, int, str, int]:
    d = decode_body(body, mtype, encoding, max_decompressed, max_attr_chars)
    buf = None
    if d.table is not None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, d.table.schema) as w:
            w.write_table(d.table)
        buf = sink.getvalue().to_pybytes()
    return buf, d.spans, d.rejected, d.message, d.truncated


def _from_ipc(res: tuple[bytes | None, int, int, str, int]) -> Decoded:
    buf, spans, rejected, message, truncated = res
    table = pa.ipc.open_stream(buf).read_all() if buf is not None else None
    return Decoded(table, spans, rejected, message, truncated)


class IngestPipeline:
    """decode → (metrics) → writer. One per server; both transports use it."""

    def __init__(self, settings: Settings, writer: GroupCommitWriter, metrics: Metrics) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self._pool: Executor | None = None
        if settings.workers > 1:
            self._pool = ProcessPoolExecutor(max_workers=settings.workers)
        self.threads = ThreadPoolExecutor(
            max_workers=max(4, settings.workers * 2), thread_name_prefix="prefixscope-decode"
        )
        # Requests admitted but not yet handed to the writer. Bounding them bounds the memory
        # held by bodies in flight; refusing before the body is read keeps shedding cheap.
        self.max_inflight = max(8, settings.workers * 8)
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        # Bodies being received are bounded apart (and more loosely): a client dribbling its
        # body holds a receive slot, never a decode slot, so it cannot starve other clients.
        self.max_receiving = self.max_inflight * 4
        self._receiving = 0

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Admission control: 429 before reading a body the server cannot take now."""
        s = self.settings
        with self._inflight_lock:
            if self.writer.queued_spans >= s.queue_max_spans or self._inflight >= self.max_inflight:
                self.metrics.requests_shed.inc()
                raise Overloaded(
                    "server is at capacity; retry later", retry_after_s=s.retry_after_s
                )
            self._inflight += 1
        try:
            yield
        finally:
            with self._inflight_lock:
                self._inflight -= 1

    @contextmanager
    def receiving(self) -> Iterator[None]:
        """Admission for reading a body: 429 when the queue is full or too many are in transit."""
        s = self.settings
        with self._inflight_lock:
            if self.writer.queued_spans >= s.queue_max_spans or (
                self._receiving >= self.max_receiving
            ):
                self.metrics.requests_shed.inc()
                raise Overloaded(
                    "server is at capacity; retry later", retry_after_s=s.retry_after_s
                )
            self._receiving += 1
        try:
            yield
        finally:
            with self._inflight_lock:
                self._receiving -= 1

    def close(self) -> None:
        self.threads.shutdown(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def decode(self, body: bytes, mtype: str, encoding: str | None) -> Decoded:
        """Decode one body (blocking; call from a worker thread)."""
        s = self.settings
        args = (body, mtype, encoding, s.max_decompressed_bytes, s.max_attribute_bytes)
        if self._pool is not None:
            return _from_ipc(self._pool.submit(_decode_to_ipc, *args).result())
        return decode_body(*args)

    def submit(self, decoded: Decoded, transport: str) -> Future[CommitResult] | None:
        """Hand decoded spans to the writer; None when there is nothing to store."""
        m = self.metrics
        m.spans_received.labels(transport).inc(decoded.spans)
        if decoded.rejected:
            m.spans_rejected.inc(decoded.rejected)
        if decoded.truncated:
            m.attributes_truncated.inc(decoded.truncated)
        if decoded.table is None:
            return None
        return self.writer.submit(decoded.table)
