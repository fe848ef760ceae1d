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

import base64
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

from .jsonsafe import json_safe


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
    fields = [pa.field(f.name, pa.float64()) if _is_interval(f.type) else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def _parquet_batch(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(target):
        return batch
    cols = [_interval_seconds(col) if _is_interval(col.type) else col for col in batch.columns]
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


# -- values as JSON text ------------------------------------------------------------------------
def _is_interval(t: pa.DataType) -> bool:
    return t == pa.month_day_nano_interval()


def json_fragments(arr: pa.Array) -> pa.Array:
    """Each value of ``arr`` as JSON text (``null`` for NULL), as the JSON answer has it."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return json_fragments(arr.dictionary_decode())
    if pa.types.is_null(t):
        return pa.array(["null"] * len(arr), pa.string())
    if pa.types.is_boolean(t):
        out = pc.if_else(arr, "true", "false")
    elif pa.types.is_integer(t) or pa.types.is_decimal(t):
        out = pc.cast(arr, pa.string())
    elif pa.types.is_floating(t):
        out = _float_text(arr, quoted=True)
    elif _is_text(t):
        out = _quote(pc.cast(arr, pa.string()))
    elif _is_temporal(t):
        out = _quote(_temporal_text(arr))
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        out = _list_json(arr)
    elif pa.types.is_map(t):
        out = _map_json(arr)
    elif pa.types.is_struct(t):
        out = _struct_json(arr)
    else:  # blobs, intervals, anything rarer: value by value
        out = pa.array(
            [None if v is None else json.dumps(json_safe(v)) for v in _python_values(arr)],
            pa.string(),
        )
    return pc.fill_null(out, "null")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_temporal(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t)


def _float_text(arr: pa.Array, *, quoted: bool) -> pa.Array:
    """Floats as Python writes them (``1.0``, not ``1``); non-finite ones as JSON's strings."""
    wide = pc.cast(arr, pa.float64())
    text = pc.cast(wide, pa.string())
    integral = pc.match_substring_regex(text, r"^-?[0-9]+$")
    text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
    q = '"' if quoted else ""
    text = pc.if_else(pc.is_nan(wide), f"{q}NaN{q}", text)
    text = pc.if_else(pc.equal(wide, math.inf), f"{q}Infinity{q}", text)
    return pc.if_else(pc.equal(wide, -math.inf), f"{q}-Infinity{q}", text)


_ESCAPES = {chr(c): json.dumps(chr(c))[1:-1] for c in range(0x20)}


def _quote(text: pa.Array) -> pa.Array:
    """Strings as JSON strings: quotes, backslashes and control characters escaped."""
    if pc.any(pc.match_substring_regex(text, r'["\\\x00-\x1f]')).as_py():
        text = pc.replace_substring(text, "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
        if pc.any(pc.match_substring_regex(text, r"[\x00-\x1f]")).as_py():
            for raw, escaped in _ESCAPES.items():
                text = pc.replace_substring(text, raw, escaped)
    return pc.binary_join_element_wise('"', text, '"', "")


def _temporal_text(arr: pa.Array) -> pa.Array:
    """ISO 8601 as Python's ``isoformat()``: microseconds only when not zero, the offset of a
    time zone as ``+HH:MM`` (Arrow's own cast to text, then three substitutions: strftime
    is ~30 times slower)."""
    t = arr.type
    if pa.types.is_date(t):
        return pc.cast(arr, pa.string())
    if pa.types.is_time(t):
        text = pc.cast(pc.cast(arr, pa.time64("us"), safe=False), pa.string())
        return pc.replace_substring(text, ".000000", "")
    micros = pc.cast(arr, pa.timestamp("us", t.tz), safe=False)
    text = pc.cast(micros, pa.string())  # 2025-01-02 04:04:05.500000[+0100]
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    text = pc.replace_substring(text, ".000000", "")
    if t.tz is not None:
        text = pc.replace_substring_regex(text, r"([+-][0-9]{2})([0-9]{2})$", r"\1:\2")
    return text


def _list_json(arr: pa.Array) -> pa.Array:
    if pa.types.is_fixed_size_list(arr.type):
        arr = pc.cast(arr, pa.list_(arr.type.value_type))
    offsets, values = _list_parts(arr)
    cls = pa.LargeListArray if pa.types.is_large_list(arr.type) else pa.ListArray
    lists = cls.from_arrays(offsets, json_fragments(values), mask=pc.is_null(arr))
    return pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")


def _map_json(arr: pa.Array) -> pa.Array:
    offsets, entries = _list_parts(arr)
    keys, items = entries.flatten()
    key_text = _text(keys)
    pairs = pc.binary_join_element_wise(_quote(key_text), ":", json_fragments(items), "")
    lists = pa.ListArray.from_arrays(offsets, pairs, mask=pc.is_null(arr))
    return pc.binary_join_element_wise("{", pc.binary_join(lists, ","), "}", "")


def _list_parts(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``(offsets, values)`` of a list or map array covering only its own rows (``.values``
    is the whole child even for a slice)."""
    offsets = arr.offsets
    first = offsets[0].as_py()
    last = offsets[len(offsets) - 1].as_py()
    values = arr.values.slice(first, last - first)
    if first:
        offsets = pc.subtract(offsets, pa.scalar(first, offsets.type))
    return offsets, values


def _struct_json(arr: pa.Array) -> pa.Array:
    fields = arr.flatten()  # children with the struct's offset and nulls applied
    if not fields:
        return pc.if_else(pc.is_null(arr), pa.scalar(None, pa.string()), "{}")
    parts: list[Any] = []
    for i, (field, values) in enumerate(zip(arr.type, fields, strict=True)):
        parts.append(("{" if i == 0 else ",") + json.dumps(field.name) + ":")
        parts.append(json_fragments(values))
    parts.append("}")
    joined = pc.binary_join_element_wise(*parts, "")
    return pc.if_else(pc.is_null(arr), pa.scalar(None, pa.string()), joined)


def _python_values(arr: pa.Array) -> list[Any]:
    """Values of the rare types the vectorized paths do not cover, as DuckDB's Python API
    gives them (an interval as a timedelta, months counted as 30 days)."""
    if _is_interval(arr.type):
        return _interval_seconds(arr).to_pylist()
    return arr.to_pylist()


def _interval_seconds(arr: pa.Array) -> pa.Array:
    out: list[float | None] = []
    for v in arr.to_pylist():
        if v is None:
            out.append(None)
        else:
            out.append((v.months * 30 + v.days) * 86400.0 + v.nanoseconds / 1e9)
    return pa.array(out, pa.float64())


# -- values as CSV fields ---------------------------------------------------------------------
def _text(arr: pa.Array) -> pa.Array:
    """A value as plain text (no JSON quotes): what a CSV field or a map key holds."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _text(arr.dictionary_decode())
    if _is_text(t):
        return pc.cast(arr, pa.string())
    if _is_temporal(t):
        return _temporal_text(arr)
    if pa.types.is_floating(t):
        return _float_text(arr, quoted=False)
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        return pc.cast(arr, pa.string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pa.array(
            [None if v is None else base64.b64encode(v).decode("ascii") for v in arr.to_pylist()],
            pa.string(),
        )
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if _is_interval(t):
        return pc.cast(_interval_seconds(arr), pa.string())
    # lists, structs, maps and anything else: their JSON text, NULL stays NULL
    return pc.if_else(pc.is_null(arr), pa.scalar(None, pa.string()), json_fragments(arr))


def _csv_column(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_dictionary(t):
        return _csv_column(arr.dictionary_decode())
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return arr  # written bare (NaN and infinities as nan, inf, -inf)
    if pa.types.is_decimal(t):
        return arr
    if _is_interval(t):
        return _interval_seconds(arr)
    return _text(arr)


#: format name → writer of the body from the answer's schema and batches
WRITERS = {
    ARROW.name: arrow_stream,
    PARQUET.name: parquet_file,
    CSV.name: csv_text,
    NDJSON.name: ndjson_text,
}
