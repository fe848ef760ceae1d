"""Versioned schema migrations for the embedded store.

Each migration runs once, in order, inside one transaction, and is recorded in
``schema_migrations``. Never edit a released migration: append a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from ..spans.model import SPAN_COLUMNS
from ..spans.request_columns import REQUEST_COLUMNS

#: Columns new in migration 4 (the rest are the released migration 1's, in order).
_V4_NEW = frozenset(
    {"request_model", "response_model", "events", "links", "scope_name", "scope_version"}
)
#: Columns new in migration 11.
_V11_NEW = frozenset({"operation", "variant_scope"})
#: Migrations are frozen: each one's column list is the model's as of that migration, so a
#: later column added to ``SPAN_COLUMNS`` needs a new migration (tests/test_schema.py checks).
_V1_SPAN_COLUMNS = tuple(c for c in SPAN_COLUMNS if c[0] not in _V4_NEW | _V11_NEW)
_V4_SPAN_COLUMNS = tuple(c for c in SPAN_COLUMNS if c[0] not in _V11_NEW)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def _spans_ddl(
    table: str = "spans",
    columns: tuple[tuple[str, object, str], ...] = (),
    *,
    primary_key: bool = True,
) -> str:
    cols = ",\n  ".join(f"{name} {ddl}" for name, _, ddl in columns or _V1_SPAN_COLUMNS)
    # ingest_batch: the group-commit number that wrote the row (drives the Parquet roll);
    # ingested_at: when it became durable (ack-to-queryable lag is measurable from SQL).
    key = ",\n  PRIMARY KEY (trace_id, span_id)" if primary_key else ""
    return (
        f"CREATE TABLE {table} (\n  "
        + cols
        + ",\n  ingested_at TIMESTAMP,\n  ingest_batch BIGINT"
        + key
        + "\n)"
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "core tables: spans, scores, feedback, alerts",
        (
            _spans_ddl(),
            """CREATE TABLE scores (
  id VARCHAR PRIMARY KEY,
  trace_id VARCHAR NOT NULL,
  span_id VARCHAR,
  name VARCHAR NOT NULL,
  value DOUBLE NOT NULL,
  label VARCHAR,
  reason VARCHAR,
  source VARCHAR,
  created_at TIMESTAMP NOT NULL
)""",
            """CREATE TABLE feedback (
  id VARCHAR PRIMARY KEY,
  trace_id VARCHAR NOT NULL,
  span_id VARCHAR,
  kind VARCHAR NOT NULL,
  value DOUBLE NOT NULL DEFAULT 1,
  comment VARCHAR,
  created_at TIMESTAMP NOT NULL
)""",
            """CREATE TABLE alerts (
  id VARCHAR PRIMARY KEY,
  prefix_id VARCHAR,
  prefix_version VARCHAR,
  route VARCHAR,
  cohort JSON,
  metric VARCHAR NOT NULL,
  baseline VARCHAR,
  baseline_value DOUBLE,
  value DOUBLE,
  delta DOUBLE,
  ci_low DOUBLE,
  ci_high DOUBLE,
  p_value DOUBLE,
  q_value DOUBLE,
  n BIGINT,
  n_baseline BIGINT,
  direction VARCHAR,
  severity VARCHAR,
  status VARCHAR NOT NULL,
  example_trace_ids JSON,
  created_at TIMESTAMP NOT NULL,
  updated_at TIMESTAMP,
  resolved_at TIMESTAMP,
  fingerprint VARCHAR,
  method VARCHAR,
  details JSON
)""",
            "CREATE INDEX alerts_fingerprint ON alerts (fingerprint)",
        ),
    ),
    Migration(
        2,
        "golden datasets, prefix registry, Parquet-roll watermarks",
        (
            """CREATE TABLE datasets (
  name VARCHAR NOT NULL,
  version VARCHAR NOT NULL,
  description VARCHAR,
  cohort_fields JSON,
  metadata JSON,
  created_at TIMESTAMP NOT NULL,
  PRIMARY KEY (name, version)
)""",
            """CREATE TABLE dataset_items (
  dataset VARCHAR NOT NULL,
  version VARCHAR NOT NULL,
  item_id VARCHAR NOT NULL,
  input VARCHAR NOT NULL,
  expected VARCHAR,
  context JSON,
  cohort JSON,
  metadata JSON,
  PRIMARY KEY (dataset, version, item_id)
)""",
            """CREATE TABLE prefixes (
  prefix_id VARCHAR PRIMARY KEY,
  base_model VARCHAR,
  prefix_type VARCHAR,
  version VARCHAR,
  owner VARCHAR,
  specialty VARCHAR,
  training_corpus VARCHAR,
  adapter_hash VARCHAR,
  status VARCHAR,
  metadata JSON,
  registered_at TIMESTAMP NOT NULL,
  updated_at TIMESTAMP NOT NULL
)""",
            """CREATE TABLE lake_state (
  table_name VARCHAR PRIMARY KEY,
  last_batch BIGINT NOT NULL,
  updated_at TIMESTAMP NOT NULL
)""",
        ),
    ),
    Migration(
        3,
        "mSPRT sequences: running minimum p-value and bound per comparison and growing window",
        (
            """CREATE TABLE sequential_state (
  anchor VARCHAR NOT NULL,
  fingerprint VARCHAR NOT NULL,
  min_p DOUBLE NOT NULL,
  worse_bound DOUBLE NOT NULL,
  last_until TIMESTAMP NOT NULL,
  updated_at TIMESTAMP NOT NULL,
  PRIMARY KEY (anchor, fingerprint)
)""",
        ),
    ),
)


def _copy_spans_v4() -> str:
    """Old rows into ``span_rows``; the model names they carried are read back from their
    attributes, so variant attribution sees spans stored before this migration too."""
    new = {
        "request_model": "coalesce(json_extract_string(attributes, '$.\"gen_ai.request.model\"'), "
        "json_extract_string(attributes, '$.\"llm.model_name\"'))",
        "response_model": "json_extract_string(attributes, '$.\"gen_ai.response.model\"')",
    }
    cols = [name for name, _, _ in _V4_SPAN_COLUMNS]
    exprs = [new.get(c, "NULL") if c in _V4_NEW else c for c in cols]
    return (
        f"INSERT INTO span_rows ({', '.join(cols)}, ingested_at, ingest_batch) "
        f"SELECT {', '.join(exprs)}, ingested_at, ingest_batch FROM spans"
    )


MIGRATIONS += (
    Migration(
        4,
        "spans: events, links, scope, request/response model; stored as span_rows behind a "
        "spans view (variant attribution); served_models history; GenAI log events",
        (
            _spans_ddl("span_rows", _V4_SPAN_COLUMNS),
            _copy_spans_v4(),
            "DROP TABLE spans",
            """CREATE TABLE served_models (
  name VARCHAR NOT NULL,
  prefix_id VARCHAR,
  version VARCHAR,
  base_model VARCHAR,
  prefix_type VARCHAR,
  valid_from TIMESTAMP NOT NULL,
  source VARCHAR NOT NULL,
  PRIMARY KEY (name, valid_from)
)""",
            """CREATE TABLE log_events (
  id VARCHAR PRIMARY KEY,
  trace_id VARCHAR,
  span_id VARCHAR,
  time TIMESTAMP,
  event_name VARCHAR NOT NULL,
  body JSON,
  attributes JSON,
  resource JSON,
  scope_name VARCHAR,
  ingested_at TIMESTAMP NOT NULL
)""",
            "CREATE VIEW spans AS SELECT * FROM span_rows",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        5,
        "hot and cold tiers: where the lake is, and what has moved out of span_rows",
        (
            """CREATE TABLE tier_state (
  table_name VARCHAR PRIMARY KEY,
  lake_dir VARCHAR NOT NULL,
  boundary TIMESTAMP,
  moved_batch BIGINT NOT NULL,
  updated_at TIMESTAMP NOT NULL
)""",
        ),
    ),
)

_V6_SPAN_COLUMNS = _V4_SPAN_COLUMNS

MIGRATIONS += (
    Migration(
        6,
        "span_rows without the (trace_id, span_id) primary key: retries are dropped by the "
        "writer's bounded dedupe window (collector/storage/dedupe.py)",
        (
            _spans_ddl("span_rows_v6", _V6_SPAN_COLUMNS, primary_key=False),
            "INSERT INTO span_rows_v6 SELECT * FROM span_rows ORDER BY ingest_batch",
            "DROP VIEW spans",
            "DROP TABLE span_rows",
            "ALTER TABLE span_rows_v6 RENAME TO span_rows",
            "CREATE VIEW spans AS SELECT * FROM span_rows",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        7,
        "scores and feedback stored as score_rows/feedback_rows behind views (hot and cold tiers)",
        (
            "ALTER TABLE scores RENAME TO score_rows",
            "CREATE VIEW scores AS SELECT * FROM score_rows",
            "ALTER TABLE feedback RENAME TO feedback_rows",
            "CREATE VIEW feedback AS SELECT * FROM feedback_rows",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        8,
        "cold-tier compaction: the committed compaction generation, and the lake files a "
        "compaction replaced (read by no view; deleted after its commit)",
        (
            "ALTER TABLE tier_state ADD COLUMN compacted BIGINT DEFAULT 0",
            "UPDATE tier_state SET compacted = 0",
            """CREATE TABLE cold_superseded (
  table_name VARCHAR NOT NULL,
  path VARCHAR NOT NULL,
  PRIMARY KEY (table_name, path)
)""",
        ),
    ),
)

#: Free-form JSON columns stored with zstd instead of DuckDB's default dictionary + FSST: a
#: segment of those holds only ~2,000 spans' distinct attribute maps, so the default cost the
#: reference workload 120 B/span for ``attributes`` alone; zstd, about 20 (bench/soak.py).
#: ``cohort`` keeps the default (few distinct values, and analytics groups by it).
_ZSTD_COLUMNS = frozenset({"attributes", "resource", "events", "links"})
_V9_SPAN_COLUMNS = tuple(
    (name, arrow, f"{ddl} USING COMPRESSION zstd" if name in _ZSTD_COLUMNS else ddl)
    for name, arrow, ddl in _V6_SPAN_COLUMNS
)

MIGRATIONS += (
    Migration(
        9,
        "span_rows stores its attribute, resource, event and link JSON with zstd (the store's "
        "footprint; rewrites span_rows once)",
        (
            _spans_ddl("span_rows_v9", _V9_SPAN_COLUMNS, primary_key=False),
            "INSERT INTO span_rows_v9 SELECT * FROM span_rows ORDER BY ingest_batch",
            "DROP VIEW spans",
            "DROP TABLE span_rows",
            "ALTER TABLE span_rows_v9 RENAME TO span_rows",
            "CREATE VIEW spans AS SELECT * FROM span_rows",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        10,
        "span_rolls: every watermark the lake roll committed (a move's moved_batch is always "
        "one, so a roll file is never half cold)",
        (
            """CREATE TABLE span_rolls (
  last_batch BIGINT PRIMARY KEY,
  rolled_at TIMESTAMP NOT NULL
)""",
            "INSERT INTO span_rolls SELECT last_batch, updated_at FROM lake_state "
            "WHERE table_name = 'spans' AND last_batch > 0",
        ),
    ),
)

_V11_SPAN_COLUMNS = tuple(
    (name, arrow, f"{ddl} USING COMPRESSION zstd" if name in _ZSTD_COLUMNS else ddl)
    for name, arrow, ddl in SPAN_COLUMNS
)
#: the request rule's span kind and scope id of rows stored before they had columns, read back
#: from their attributes (the same keys, in the same order, as ``normalize.py``)
_V11_FILL = {
    "operation": "coalesce("
    + ", ".join(
        f"json_extract_string(attributes, '$.\"{key}\"')"
        for key in (
            "prefixscope.span.kind",
            "gen_ai.operation.name",
            "openinference.span.kind",
            "traceloop.span.kind",
            "gen_ai.span.kind",
        )
    )
    + ")",
    "variant_scope": "json_extract_string(attributes, '$.\"variant.scope\"')",
}


def _copy_spans_v11() -> str:
    cols = [name for name, _, _ in _V11_SPAN_COLUMNS]
    exprs = [_V11_FILL.get(c, c) for c in cols]
    return (
        f"INSERT INTO span_rows_v11 ({', '.join(cols)}, ingested_at, ingest_batch) "
        f"SELECT {', '.join(exprs)}, ingested_at, ingest_batch FROM span_rows "
        "ORDER BY ingest_batch"
    )


def _requests_ddl() -> str:
    cols = ",\n  ".join(f"{name} {ddl}" for name, _, ddl in REQUEST_COLUMNS)
    # resolve_batch: the span batch the resolver had reached when it wrote the row
    return f"CREATE TABLE request_rows (\n  {cols},\n  resolve_batch BIGINT NOT NULL\n)"


MIGRATIONS += (
    Migration(
        11,
        "spans: operation and variant_scope (the request rule's inputs); request_rows, one row "
        "per request (collector/spans/requests.py), behind the requests views",
        (
            _spans_ddl("span_rows_v11", _V11_SPAN_COLUMNS, primary_key=False),
            _copy_spans_v11(),
            "DROP VIEW spans",
            "DROP TABLE span_rows",
            "ALTER TABLE span_rows_v11 RENAME TO span_rows",
            "CREATE VIEW spans AS SELECT * FROM span_rows",
            _requests_ddl(),
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)"
    )
    rows = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()
    return int(rows[0][0]) if rows else 0


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every pending migration; return the versions applied."""
    applied: list[int] = []
    have = current_version(con)
    if have > LATEST_VERSION:
        raise RuntimeError(
            f"store schema version {have} is newer than this PrefixScope ({LATEST_VERSION})"
        )
    for mig in MIGRATIONS:
        if mig.version <= have:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for stmt in mig.statements:
                con.execute(stmt)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)",
                [mig.version, mig.description],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        applied.append(mig.version)
    return applied
