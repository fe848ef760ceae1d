"""Every stored table's columns are defined once (``collector/spans/model.py``, gathered in
``collector/storage/tables.py``) and everything else agrees with that definition: the DuckDB
tables the migrations build, the views over both tiers, the lake's schema files and the API's
request and response models. A column added in one place and forgotten in another fails here."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefixscope.api.models import FeedbackIn, ScoreIn, TraceFeedback, TraceScore
from prefixscope.collector.spans.model import SPAN_COLUMN_NAMES
from prefixscope.collector.spans.request_columns import REQUEST_COLUMN_NAMES
from prefixscope.collector.storage import retention, tiers
from prefixscope.collector.storage.store import Store
from prefixscope.collector.storage.tables import LAKE_TABLES

#: the hot tier's own bookkeeping columns, after the span columns (never in the lake)
HOT_ONLY = {
    "span_rows": ["ingested_at", "ingest_batch"],
    "score_rows": [],
    "feedback_rows": [],
    "request_rows": ["resolve_batch"],
}
ROWS = {
    "spans": "span_rows",
    "scores": "score_rows",
    "feedback": "feedback_rows",
    "requests": "request_rows",
}
#: the view over both tiers of each table (requests: analytics' view, without the joined
#: scores and feedback of the ``requests`` view users read)
VIEWS = {"spans": "spans", "scores": "scores", "feedback": "feedback", "requests": "requests_base"}


def _duckdb_schema(store: Store, table: str) -> pa.Schema:
    cur = store.cursor()
    try:
        return cur.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
    finally:
        cur.close()


def test_the_tiered_tables_are_the_ones_defined() -> None:
    tiered = {"spans", "scores", "feedback", "requests"}
    assert set(LAKE_TABLES) == tiered | {"prefixes", "served_models"}
    assert LAKE_TABLES["spans"].schema.names == list(SPAN_COLUMN_NAMES)
    assert LAKE_TABLES["requests"].schema.names == list(REQUEST_COLUMN_NAMES)
    assert {n: t.schema for n, t in LAKE_TABLES.items() if n in tiered} == tiers.LAKE_SCHEMAS
    # the registry's history is kept by retention; traffic tables are dropped by age
    assert {n for n, t in LAKE_TABLES.items() if t.retained} == tiered
    assert [a.view for a in tiers.ANNOTATIONS] == ["scores", "feedback"]
    for a in (*tiers.ANNOTATIONS, tiers.REQUESTS):
        assert a.schema.equals(LAKE_TABLES[a.view].schema)
        assert a.rows == ROWS[a.view]
    assert ROWS["spans"] == tiers.ROWS_TABLE
    # retention drops partitions of every lake table, and only of those
    assert retention.LAKE_TABLES is LAKE_TABLES


@pytest.mark.parametrize("name", ["spans", "scores", "feedback", "requests"])
def test_duckdb_tables_views_and_lake_schema_files_match_the_definition(
    tmp_path: Path, name: str
) -> None:
    spec = LAKE_TABLES[name]
    assert len(spec.schema) > 5
    with Store(tmp_path) as store:
        rows = _duckdb_schema(store, ROWS[name])
        view = _duckdb_schema(store, VIEWS[name])
    # the hot table: the defined columns, in order, with the same types, then bookkeeping
    assert rows.names == spec.schema.names + HOT_ONLY[ROWS[name]]
    for field in spec.schema:
        assert rows.field(field.name).type == field.type, field.name
    # the one view across both tiers shows the same columns (not the resolver's bookkeeping)
    assert view.names == [n for n in rows.names if n != "resolve_batch"]
    # the lake's schema file (what cold reads fall back on) holds exactly the definition
    schema_file = tmp_path / "lake" / name / tiers.SCHEMA_FILE
    assert pq.read_schema(schema_file).equals(spec.schema, check_metadata=False)


@pytest.mark.parametrize(
    ("name", "request_model", "response_model"),
    [("scores", ScoreIn, TraceScore), ("feedback", FeedbackIn, TraceFeedback)],
)
def test_api_models_carry_the_defined_columns(
    name: str, request_model: type, response_model: type
) -> None:
    columns = LAKE_TABLES[name].schema.names
    # what a client may send is every column (id and created_at are optional)
    assert list(request_model.model_fields) == columns
    # what a trace view returns is every column but the trace id it is nested under
    assert list(response_model.model_fields) == [c for c in columns if c != "trace_id"]


@pytest.mark.parametrize("name", ["prefixes", "served_models"])
def test_the_lake_registry_has_the_store_registry_columns(tmp_path: Path, name: str) -> None:
    """A lake's registry rows are the store's (``prefixes`` adds the ``id`` of a history row),
    so the embedded store's registry exports as it is and both read the same rows."""
    with Store(tmp_path) as store:
        stored = _duckdb_schema(store, name)
    lake = LAKE_TABLES[name].schema
    assert [n for n in lake.names if n != "id"] == stored.names
    for field in stored:
        assert lake.field(field.name).type == field.type or (
            field.name == "metadata" and lake.field(field.name).type == pa.string()
        ), field.name
