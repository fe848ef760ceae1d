"""Arrow values as JSON text and as plain text, column by column with Arrow compute kernels
(no Python row): the bodies of the SQL answer's NDJSON and CSV formats (:mod:`.sql_formats`),
reading as the JSON answer does (:mod:`.jsonsafe`)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .jsonsafe import json_safe


# -- values as JSON text ------------------------------------------------------------------------
def is_interval(t: pa.DataType) -> bool:
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
    key_text = plain_text(keys)
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
    if is_interval(arr.type):
        return interval_seconds(arr).to_pylist()
    return arr.to_pylist()


def interval_seconds(arr: pa.Array) -> pa.Array:
    out: list[float | None] = []
    for v in arr.to_pylist():
        if v is None:
            out.append(None)
        else:
            out.append((v.months * 30 + v.days) * 86400.0 + v.nanoseconds / 1e9)
    return pa.array(out, pa.float64())


def plain_text(arr: pa.Array) -> pa.Array:
    """A value as plain text (no JSON quotes): what a CSV field or a map key holds."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return plain_text(arr.dictionary_decode())
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
    if is_interval(t):
        return pc.cast(interval_seconds(arr), pa.string())
    # lists, structs, maps and anything else: their JSON text, NULL stays NULL
    return pc.if_else(pc.is_null(arr), pa.scalar(None, pa.string()), json_fragments(arr))
