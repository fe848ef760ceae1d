"""The one internal span model: a columnar batch.

Decoders turn OTLP bytes (protobuf or JSON, from HTTP or gRPC) into a :class:`SpanBatch`;
nothing downstream sees protobuf. The column list is the ``spans`` table of DESIGN.md plus a
few documented extensions (``request_model``/``response_model``: the model names the span
carried, which variant attribution matches against), and it is defined once here: the DuckDB
DDL, the Arrow schema and the Parquet lake schema are all derived from :data:`SPAN_COLUMNS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

# (column, arrow type, duckdb type). Order is the table's column order.
SPAN_COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("trace_id", pa.string(), "VARCHAR NOT NULL"),
    ("span_id", pa.string(), "VARCHAR NOT NULL"),
    ("parent_span_id", pa.string(), "VARCHAR"),
    ("name", pa.string(), "VARCHAR"),
    ("kind", pa.string(), "VARCHAR"),
    ("service_name", pa.string(), "VARCHAR"),
    ("start_time", pa.timestamp("us"), "TIMESTAMP"),
    ("end_time", pa.timestamp("us"), "TIMESTAMP"),
    ("duration_ms", pa.float64(), "DOUBLE"),
    ("status_code", pa.string(), "VARCHAR"),
    ("status_message", pa.string(), "VARCHAR"),
    ("base_model", pa.string(), "VARCHAR"),
    ("request_model", pa.string(), "VARCHAR"),
    ("response_model", pa.string(), "VARCHAR"),
    ("prefix_id", pa.string(), "VARCHAR"),
    ("prefix_version", pa.string(), "VARCHAR"),
    ("prefix_type", pa.string(), "VARCHAR"),
    ("route", pa.string(), "VARCHAR"),
    ("prompt_version", pa.string(), "VARCHAR"),
    ("session_id", pa.string(), "VARCHAR"),
    ("input_tokens", pa.int64(), "BIGINT"),
    ("output_tokens", pa.int64(), "BIGINT"),
    ("cached_tokens", pa.int64(), "BIGINT"),
    ("ttft_ms", pa.float64(), "DOUBLE"),
    ("fallback_reason", pa.string(), "VARCHAR"),
    ("operation", pa.string(), "VARCHAR"),
    ("variant_scope", pa.string(), "VARCHAR"),
    ("cohort", pa.string(), "JSON"),
    ("attributes", pa.string(), "JSON"),
    ("resource", pa.string(), "JSON"),
    ("events", pa.string(), "JSON"),
    ("links", pa.string(), "JSON"),
    ("scope_name", pa.string(), "VARCHAR"),
    ("scope_version", pa.string(), "VARCHAR"),
)

SPAN_COLUMN_NAMES: tuple[str, ...] = tuple(c[0] for c in SPAN_COLUMNS)
SPAN_ARROW_SCHEMA: pa.Schema = pa.schema([(n, t) for n, t, _ in SPAN_COLUMNS])

#: Evaluator scores and user feedback: the store's ``scores``/``feedback`` columns and the
#: lake's, in order (the DDL of migration 1 matches them; ``id`` is each table's key).
SCORE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("name", pa.string()),
        ("value", pa.float64()),
        ("label", pa.string()),
        ("reason", pa.string()),
        ("source", pa.string()),
        ("created_at", pa.timestamp("us")),
    ]
)
FEEDBACK_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("kind", pa.string()),
        ("value", pa.float64()),
        ("comment", pa.string()),
        ("created_at", pa.timestamp("us")),
    ]
)
#: GenAI log events (``log_events``, migration 4's DDL, in order; ``id`` is the key). Decoders
#: fill every column but ``ingested_at``, which the receiver sets.
LOG_EVENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("time", pa.timestamp("us")),
        ("event_name", pa.string()),
        ("body", pa.string()),
        ("attributes", pa.string()),
        ("resource", pa.string()),
        ("scope_name", pa.string()),
        ("ingested_at", pa.timestamp("us")),
    ]
)

#: The variant registry's rows (``PUT /api/v1/prefixes/{id}``): one per registration in the
#: embedded store, one per change (its history) in the lake, where ``id`` keys a row.
PREFIXES_SCHEMA = pa.schema(
    [
        ("prefix_id", pa.string()),
        ("base_model", pa.string()),
        ("prefix_type", pa.string()),
        ("version", pa.string()),
        ("owner", pa.string()),
        ("specialty", pa.string()),
        ("training_corpus", pa.string()),
        ("adapter_hash", pa.string()),
        ("status", pa.string()),
        ("metadata", pa.string()),
        ("registered_at", pa.timestamp("us")),
        ("updated_at", pa.timestamp("us")),
        ("id", pa.string()),
    ]
)
#: The served-name mapping's history (``collector/storage/attribution.py``): from ``valid_from`` on,
#: ``name`` stands for ``prefix_id`` at ``version`` (a NULL ``prefix_id``: the name was dropped).
SERVED_MODELS_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("prefix_id", pa.string()),
        ("version", pa.string()),
        ("base_model", pa.string()),
        ("prefix_type", pa.string()),
        ("valid_from", pa.timestamp("us")),
        ("source", pa.string()),
    ]
)

#: Columns the normalizer fills from attributes (the rest come from the span envelope).
NORMALIZED_COLUMNS: tuple[str, ...] = (
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
)


@dataclass(slots=True)
class Rejection:
    """Spans of one request that could not be accepted, and why (OTLP partial success)."""

    count: int
    message: str


if SPAN_COLUMN_NAMES[11:27] != NORMALIZED_COLUMNS:
    raise ValueError("NORMALIZED_COLUMNS must follow status_message in SPAN_COLUMNS")


@dataclass(slots=True)
class SpanBatch:
    """Spans decoded from one export request.

    Decoders append one tuple per span in :data:`SPAN_COLUMN_NAMES` order (cheaper than one
    list append per column); :meth:`to_arrow` transposes them into columns in C.
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rejected: int = 0
    reject_messages: list[str] = field(default_factory=list)
    truncated_attributes: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def columns(self) -> dict[str, list[Any]]:
        """The spans as ``{column: [values]}`` (for inspection and tests)."""
        if not self.rows:
            return {name: [] for name in SPAN_COLUMN_NAMES}
        return {name: list(col) for name, col in zip(SPAN_COLUMN_NAMES, zip(*self.rows))}

    def reject(self, message: str, count: int = 1) -> None:
        self.rejected += count
        if len(self.reject_messages) < 5:
            self.reject_messages.append(message)

    @property
    def partial_message(self) -> str:
        return "; ".join(self.reject_messages)

    def to_arrow(self) -> pa.Table:
        if not self.rows:
            return SPAN_ARROW_SCHEMA.empty_table()
        columns = zip(*self.rows)
        arrays = [pa.array(col, type=typ) for col, (_, typ, _) in zip(columns, SPAN_COLUMNS)]
        return pa.Table.from_arrays(arrays, schema=SPAN_ARROW_SCHEMA)
