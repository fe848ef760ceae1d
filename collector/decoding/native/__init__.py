"""The compiled OTLP protobuf decoder: bytes to the span columns' Arrow buffers in C.

``otlp.c`` reads ``ExportTraceServiceRequest`` straight from the wire format and writes each
column's buffers; :func:`decode` wraps them into a table. It returns exactly what the
pure-Python decoder (``protobuf.py``, the reference) returns, or ``None`` when the request is
outside the shape it handles (an error, a rejected span, a duplicate key, an unknown field, a
value that needs Python's parsing rules...): the caller then decodes the same bytes with the
reference, so errors and rare rules come from one place.

The normalization tables are not repeated in C: :func:`_configure` hands ``normalize.py``'s
tables to the extension once, at import. If the extension is missing (no compiler at install
time) or the span model changed under it, :data:`UNAVAILABLE` says why and the server runs the
Python decoder.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pyarrow as pa

from prefixscope import semconv as k

from ...spans import normalize as _nz
from ...spans.model import NORMALIZED_COLUMNS, SPAN_ARROW_SCHEMA, SPAN_COLUMN_NAMES, SPAN_COLUMNS
from .. import common as _spans

#: the column layout otlp.c writes (its enum of columns); the model must match it
LAYOUT: tuple[str, ...] = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "service_name", "start_time",
    "end_time", "duration_ms", "status_code", "status_message", *NORMALIZED_COLUMNS, "cohort",
    "attributes", "resource", "events", "links", "scope_name", "scope_version",
)  # fmt: skip
#: normalize.py's conversions, in otlp.c's code order (its Conv enum)
_CONVERSIONS = (
    _nz._str,
    _nz._int,
    _nz._seconds_to_ms,
    _nz._model_of_params,
    _nz._ms,
    _nz._json_str,
    _nz._logfire_kind,
)
_CONV_CODES: dict[Any, int] = {conv: code for code, conv in enumerate(_CONVERSIONS)}
_TYPE_CODES = {pa.string(): "s", pa.int64(): "i", pa.float64(): "f"}

_ext: Any = None
#: why the compiled decoder cannot run here (None: it can)
UNAVAILABLE: str | None = None


def _configure(ext: Any) -> str | None:
    if SPAN_COLUMN_NAMES != LAYOUT:
        return "the span columns changed since otlp.c was written: update its column enum"
    if len(NORMALIZED_COLUMNS) != 16 or _spans.MAX_DEPTH != 16:
        return "otlp.c's N_NORM / MAX_DEPTH no longer match the Python decoder"
    rules = []
    for key, (idx, rank, conv) in _nz._KEYMAP.items():
        code = _CONV_CODES.get(conv)
        if code is None:
            return f"normalize.py has a conversion otlp.c does not know ({conv.__name__})"
        rules.append((key, idx, rank, code))
    fallbacks = [(idx, key) for idx, keys in _nz._RESOURCE_FALLBACKS for key in keys]
    types = {name: typ for name, typ, _ in SPAN_COLUMNS}
    try:
        norm_types = "".join(_TYPE_CODES[types[c]] for c in NORMALIZED_COLUMNS)
    except KeyError:
        return "a normalized column has a type otlp.c does not write"
    ext.configure(
        rules,
        k.COHORT_PREFIX,
        k.SERVICE_NAME,
        sorted(k.FIRST_TOKEN_EVENTS),
        fallbacks,
        _nz._BASE,
        _nz._REQ,
        _nz._RESP,
        NORMALIZED_COLUMNS.index("ttft_ms"),
        norm_types,
        list(_CONVERSIONS),
    )
    return None


def _load() -> Any:
    """The extension module: the installed one, or (``PREFIXSCOPE_NATIVE_PATH``) a build of it
    at that path, e.g. the sanitizer build the tests make."""
    path = os.environ.get("PREFIXSCOPE_NATIVE_PATH")
    if not path:
        from . import _otlp  # type: ignore[attr-defined]

        return _otlp
    spec = importlib.util.spec_from_file_location(f"{__name__}._otlp", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"PREFIXSCOPE_NATIVE_PATH={path} is not an extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


try:
    _ext = _load()
except ImportError as exc:
    UNAVAILABLE = f"the compiled decoder is not built ({exc})"
else:
    UNAVAILABLE = _configure(_ext)


def decode(
    body: bytes | bytearray, max_attribute_chars: int
) -> tuple[pa.Table | None, int, int] | None:
    """``(table or None if no spans, spans, attributes truncated)``, or ``None``: decode this
    request with the reference decoder instead."""
    if UNAVAILABLE is not None:
        raise RuntimeError(UNAVAILABLE)
    out = _ext.decode(body, max_attribute_chars)
    if out is None:
        return None
    rows, truncated, columns = out
    if rows == 0:
        return None, 0, truncated
    arrays = []
    for field, (nulls, valid, offsets, data) in zip(SPAN_ARROW_SCHEMA, columns):
        buffers = [None if valid is None else pa.py_buffer(valid)]
        if offsets is not None:
            buffers.append(pa.py_buffer(offsets))
        buffers.append(pa.py_buffer(data))
        arrays.append(pa.Array.from_buffers(field.type, rows, buffers, null_count=nulls))
    return pa.Table.from_arrays(arrays, schema=SPAN_ARROW_SCHEMA), rows, truncated
