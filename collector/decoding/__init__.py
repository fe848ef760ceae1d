"""Bytes to a decoded Arrow table: media types, gzip under a limit, protobuf/JSON decoding.

The one decode path behind HTTP and gRPC, run in the serving process (``--workers 0``) or in
decode worker processes. Nothing here touches the store.

* ``protobuf`` — OTLP protobuf, pure Python (the reference); ``json`` — OTLP JSON.
* ``native`` — the compiled protobuf decoder (C), used when :func:`use_decoder` selects it; it
  hands any request outside the shape it handles back to ``protobuf``.
* ``spans`` — what both share: id checks, normalization, the JSON columns, limits.
* ``pool`` — the server's side of the decode workers; ``worker`` — a worker process;
  ``wire`` — the pipe protocol between them (not protobuf).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from prefixscope.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

from .common import Limits
from .json import decode_json
from .protobuf import decode_protobuf

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: ``--decoder`` choices: ``auto`` runs the compiled decoder when it is built, else Python
DECODERS = ("auto", "native", "python")
_native: Any = None  # the native module while it is the selected decoder


@dataclass(slots=True)
class Decoded:
    table: pa.Table | None
    spans: int
    rejected: int
    message: str
    truncated: int
    #: the native decoder handed this protobuf request to the Python one
    deferred: bool = False


def use_decoder(choice: str) -> tuple[str, str | None]:
    """Select this process's protobuf decoder: ``(running, why not native)``.

    ``native`` when it cannot run is an error (``RuntimeError`` saying why): a deployment that
    asked for it must not quietly run four times slower. ``auto`` falls back to ``python``."""
    global _native
    if choice not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {choice!r}")
    _native = None
    if choice == "python":
        return "python", "--decoder python"
    from . import native

    if native.UNAVAILABLE is not None:
        if choice == "native":
            raise RuntimeError(f"--decoder native cannot run: {native.UNAVAILABLE}")
        return "python", native.UNAVAILABLE
    _native = native
    return "native", None


def running_decoder() -> str:
    return "python" if _native is None else "native"


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


def gunzip_limited(body: bytes | bytearray, limit: int) -> bytes:
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
    body: bytes | bytearray,
    mtype: str,
    encoding: str | None,
    max_decompressed: int,
    max_attr_chars: int,
) -> Decoded:
    enc = (encoding or "identity").strip().lower()
    if enc == "gzip":
        body = gunzip_limited(body, max_decompressed)
    elif enc not in ("identity", ""):
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    deferred = False
    if mtype == PROTOBUF and _native is not None:
        done = _native.decode(body, max_attr_chars)
        if done is not None:
            table, spans, truncated = done
            return Decoded(table, spans, 0, "", truncated)
        deferred = True  # the reference decides (and words any error)
    limits = Limits(max_attr_chars)
    batch = decode_protobuf(body, limits) if mtype == PROTOBUF else decode_json(body, limits)
    n = len(batch)
    try:
        table = batch.to_arrow() if n else None
    except (OverflowError, pa.ArrowException) as exc:  # backstop: a value no column can hold
        raise BadRequest(f"a span value does not fit its column: {exc}") from None
    return Decoded(
        table, n, batch.rejected, batch.partial_message, batch.truncated_attributes, deferred
    )


def table_to_ipc(table: pa.Table) -> pa.Buffer:
    """An Arrow IPC stream of ``table`` (what a decode worker sends back)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()
