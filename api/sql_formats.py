"""The formats of a SQL answer (``POST /api/v1/sql``), chosen by ``Accept`` or ``format=``.

==========  ====================================  ==========================================
name        media type                            body
==========  ====================================  ==========================================
``json``    ``application/json`` (default)        ``{"columns", "types", "rows", "truncated"}``
``arrow``   ``application/vnd.apache.arrow.stream``  Arrow IPC stream, zstd-compressed buffers
``parquet`` ``application/vnd.apache.parquet``    one Parquet file (zstd)
``csv``     ``text/csv``                          a header line, then one line per row
``ndjson``  ``application/x-ndjson``              one JSON object per line
==========  ====================================  ==========================================

Every format but JSON is produced from the Arrow record batches DuckDB streams
(:meth:`SqlSandbox.run_arrow`), without Python rows: the Arrow and Parquet writers take the
batches as they are, and CSV/NDJSON text is built column by column with Arrow compute
kernels. Values read as in the JSON answer (:mod:`.jsonsafe`): timestamps and dates in ISO
8601 (``2025-01-02T03:04:05.500000``, ``+00:00`` for a zone), NaN and infinities as the
strings ``"NaN"``/``"Infinity"``/``"-Infinity"``, blobs in base64, intervals in seconds, JSON
columns as their text, lists as arrays, structs and maps as objects (map keys as strings). In
CSV a NULL is an empty field, an empty string is ``""``, every other text is quoted,
lists/structs/maps are their JSON text, and numbers and booleans are written bare (a
non-finite float as ``nan``, ``inf``, ``-inf``). Parquet cannot store an INTERVAL: such a
column is written as seconds (DOUBLE), as in JSON.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from prefixscope.errors import NotAcceptable

from .sql_text import interval_seconds, is_interval, json_fragments, plain_text


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    media_type: str
    extension: str


JSON = Format("json", "application/json", "json")
ARROW = Format("arrow", "application/vnd.apache.arrow.stream", "arrow")
PARQUET = Format("parquet", "application/vnd.apache.parquet", "parquet")
CSV = Format("csv", "text/csv", "csv")
NDJSON = Format("ndjson", "application/x-ndjson", "ndjson")
#: in order of preference for a wildcard (``*/*`` and ``application/*`` pick JSON)
FORMATS: tuple[Format, ...] = (JSON, ARROW, PARQUET, CSV, NDJSON)
BY_NAME = {f.name: f for f in FORMATS}
BY_MEDIA_TYPE = {f.media_type: f for f in FORMATS}


def supported() -> str:
    """The supported formats, for error messages."""
    return ", ".join(f"{f.media_type} (format={f.name})" for f in FORMATS)


def negotiate(accept: str | None, requested: str | None = None) -> Format:
    """The answer's format: ``requested`` (``format=``: a name or a media type) when given,
    else the best supported media range of ``accept`` (by ``q``, then specificity, then
    order); JSON when neither says anything. Raises :class:`NotAcceptable` (406) otherwise."""
    if requested is not None and requested.strip():
        key = requested.strip().lower()
        fmt = BY_NAME.get(key) or BY_MEDIA_TYPE.get(key)
        if fmt is None:
            raise NotAcceptable(f"format {requested!r} is not supported; supported: {supported()}")
        return fmt
    if accept is None or not accept.strip():
        return JSON
    ranges: list[tuple[float, int, int, Format]] = []
    for order, item in enumerate(accept.split(",")):
        media, _, params = item.partition(";")
        media = media.strip().lower()
        if not media:
            continue
        q = _quality(params)
        if q <= 0:
            continue
        for fmt, specificity in _matches(media):
            ranges.append((-q, -specificity, order, fmt))
    if not ranges:
        raise NotAcceptable(
            f"none of the accepted types ({accept.strip()[:200]}) is supported; "
            f"supported: {supported()}"
        )
    return min(ranges, key=lambda r: r[:3])[3]


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if math.isfinite(q) else 0.0
    return 1.0


def _matches(media: str) -> list[tuple[Format, int]]:
    if media in BY_MEDIA_TYPE:
        return [(BY_MEDIA_TYPE[media], 2)]
    if media == "*/*":
        return [(JSON, 0)]
    major, _, minor = media.partition("/")
    if minor == "*":
        first = next((f for f in FORMATS if f.media_type.startswith(major + "/")), None)
        return [(first, 1)] if first else []
    return []


# -- writers ----------------------------------------------------------------------------------
#: rows per Parquet row group
PARQUET_ROW_GROUP_ROWS = 262_144


class _Sink(io.RawIOBase):
    """A file the Arrow writers write into; :meth:`drain` hands over what they wrote."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def drain(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def arrow_stream(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """An Arrow IPC stream: the schema, then each batch (buffers zstd-compressed)."""
    sink = _Sink()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
            yield sink.drain()
    yield sink.drain()


def parquet_file(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """One Parquet file (zstd), a row group per :data:`PARQUET_ROW_GROUP_ROWS` rows."""
    target = _parquet_schema(schema)
    sink = _Sink()
    with pq.ParquetWriter(sink, target, compression="zstd") as writer:
        group: list[pa.RecordBatch] = []
        rows = 0
        for batch in batches:
            group.append(_parquet_batch(batch, target))
            rows += batch.num_rows
            if rows >= PARQUET_ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(group, target), rows)
                group, rows = [], 0
                yield sink.drain()
        if group or not rows:
            writer.write_table(pa.Table.from_batches(group, target), max(rows, 1))
    yield sink.drain()


def _parquet_schema(schema: pa.Schema) -> pa.Schema:
    fields = [pa.field(f.name, pa.float64()) if is_interval(f.type) else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def _parquet_batch(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(target):
        return batch
    cols = [interval_seconds(col) if is_interval(col.type) else col for col in batch.columns]
    return pa.RecordBatch.from_arrays(cols, schema=target)


def csv_text(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """RFC 4180 CSV with a header line; fields as described in the module docstring."""
    names = schema.names
    header = pa.Table.from_arrays([pa.array([], pa.string()) for _ in names], names=names)
    out = io.BytesIO()
    pa_csv.write_csv(header, out)
    options = pa_csv.WriteOptions(include_header=False)
    for batch in batches:
        fields = [_csv_column(col) for col in batch.columns]
        pa_csv.write_csv(pa.Table.from_arrays(fields, names=names), out, options)
        yield out.getvalue()
        out = io.BytesIO()
    yield out.getvalue()


def ndjson_text(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """One JSON object per row and line, keys in column order."""
    keys = [json.dumps(name) for name in schema.names]
    for batch in batches:
        parts: list[Any] = []
        for i, col in enumerate(batch.columns):
            parts.append(("{" if i == 0 else ",") + keys[i] + ":")
            parts.append(json_fragments(col))
        parts.append("}\n")
        yield _concatenated(pc.binary_join_element_wise(*parts, ""))


def _concatenated(strings: pa.Array) -> bytes:
    """The UTF-8 bytes of all of ``strings`` one after the other (one copy, not one a row)."""
    if len(strings) == 0:
        return b""
    wide = pa.types.is_large_string(strings.type)
    _, offsets_buf, data = strings.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if wide else np.int32)
    first = int(offsets[strings.offset])
    last = int(offsets[strings.offset + len(strings)])
    return data.slice(first, last - first).to_pybytes() if data is not None else b""


# -- values as CSV fields ---------------------------------------------------------------------
def _csv_column(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_dictionary(t):
        return _csv_column(arr.dictionary_decode())
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return arr  # written bare (NaN and infinities as nan, inf, -inf)
    if pa.types.is_decimal(t):
        return arr
    if is_interval(t):
        return interval_seconds(arr)
    return plain_text(arr)


#: format name → writer of the body from the answer's schema and batches
WRITERS = {
    ARROW.name: arrow_stream,
    PARQUET.name: parquet_file,
    CSV.name: csv_text,
    NDJSON.name: ndjson_text,
}
