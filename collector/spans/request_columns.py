"""The columns of the request resolver: the span columns it reads and the ``requests`` table
it writes (one row per request), declared once for the store, the lake and the engines."""

from __future__ import annotations

import pyarrow as pa

#: the span columns :func:`resolve` reads
SKELETON_COLUMNS: tuple[str, ...] = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "service_name",
    "scope_name",
    "start_time",
    "end_time",
    "duration_ms",
    "status_code",
    "base_model",
    "request_model",
    "response_model",
    "prefix_id",
    "prefix_version",
    "prefix_type",
    "route",
    "prompt_version",
    "session_id",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "ttft_ms",
    "fallback_reason",
    "operation",
    "variant_scope",
    "cohort",
)
#: (column, arrow type, DuckDB type): the ``requests`` table, one row per request
REQUEST_COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("trace_id", pa.string(), "VARCHAR NOT NULL"),
    ("span_id", pa.string(), "VARCHAR NOT NULL"),
    ("scope_span_id", pa.string(), "VARCHAR"),
    ("name", pa.string(), "VARCHAR"),
    ("service_name", pa.string(), "VARCHAR"),
    ("start_time", pa.timestamp("us"), "TIMESTAMP"),
    ("end_time", pa.timestamp("us"), "TIMESTAMP"),
    ("base_model", pa.string(), "VARCHAR"),
    ("request_model", pa.string(), "VARCHAR"),
    ("response_model", pa.string(), "VARCHAR"),
    ("prefix_id", pa.string(), "VARCHAR"),
    ("prefix_version", pa.string(), "VARCHAR"),
    ("prefix_type", pa.string(), "VARCHAR"),
    ("route", pa.string(), "VARCHAR"),
    ("prompt_version", pa.string(), "VARCHAR"),
    ("session_id", pa.string(), "VARCHAR"),
    ("cohort", pa.string(), "JSON"),
    ("latency_ms", pa.float64(), "DOUBLE"),
    ("route_latency_ms", pa.float64(), "DOUBLE"),
    ("ttft_ms", pa.float64(), "DOUBLE"),
    ("input_tokens", pa.int64(), "BIGINT"),
    ("output_tokens", pa.int64(), "BIGINT"),
    ("cached_tokens", pa.int64(), "BIGINT"),
    ("error", pa.bool_(), "BOOLEAN"),
    ("fallback_reason", pa.string(), "VARCHAR"),
    ("last_in_trace", pa.bool_(), "BOOLEAN"),
    ("span_ids", pa.list_(pa.string()), "VARCHAR[]"),
)
REQUEST_COLUMN_NAMES: tuple[str, ...] = tuple(c[0] for c in REQUEST_COLUMNS)
REQUEST_SCHEMA: pa.Schema = pa.schema([(n, t) for n, t, _ in REQUEST_COLUMNS])
