"""Hot and cold tiers of the embedded store, read as one ``spans`` table.

Every committed span is rolled into the Parquet lake (``lake.py``) within a roll interval, so
the lake always holds a copy. The *move* then deletes from the hot tier (the DuckDB table
``span_rows``) the rows that are both

* older than the hot window: ``start_time < boundary`` (``boundary = now - --hot-retention``),
* and already in the lake: ``1 <= ingest_batch <= moved_batch``, where ``moved_batch`` is the
  lake roll's watermark at the time of the move,

* and committed more than the dedupe window ago (``--dedupe-window``: the primary key drops
  a retried export only while the first copy is hot),

and records ``(boundary, moved_batch)`` in ``tier_state`` in the same DuckDB transaction.
Both only grow, so the rows the hot tier has lost are exactly ``start_time < boundary AND
ingest_batch <= moved_batch``, and the cold half of the view reads exactly those rows back:

    spans = span_rows                               -- the hot tier, all of it
            UNION ALL
            lake rows of roll files with batches <= moved_batch AND start_time < boundary

A roll file ``part-<first>-<last>.parquet`` holds batches ``first..last``, and
``moved_batch`` is always the end of a roll (``span_rolls`` lists the ends the roll committed;
a dedupe cutoff inside a roll's batches stops the move at the previous end), so "batches <=
moved_batch" is a file-name condition that DuckDB evaluates before opening a file. No row is
in both halves and none is in neither: a span that arrives late (an old ``start_time`` in a
new batch) stays hot until a later move, and a roll file published but not yet recorded (a
crash between the two) has batches above ``moved_batch`` and is not read.

Kill -9 at any step loses nothing: the lake files are fsynced and renamed before the roll's
watermark commits, and the delete, the new state and the new view commit together or not at
all. Rows inserted directly by tools (``ingest_batch = 0``: synthetic data, replays) are never
rolled, so they stay hot. Rows without a ``start_time`` stay hot too.

**Scores and feedback** (``score_rows``/``feedback_rows`` behind the ``scores``/``feedback``
views) have no roll: their move writes the lake files itself. In one DuckDB transaction it
streams the rows whose ``created_at`` is older than the boundary into
``<table>/date=…/part-<move number>.parquet`` (fsynced, renamed), deletes exactly those rows
(the transaction's snapshot: a row committed meanwhile is neither written nor deleted),
records the move number and redefines the view. The cold half reads files whose number is at
most the recorded one (a file of a move that crashed before its commit is ignored, and the
next move overwrites it), minus ids present in the hot table, and of an id moved more than once
only the newest move's copy: a score re-evaluated or re-sent after its first copy went cold
replaces it, before and after it moves too, so an id is read once.

Every reader of ``spans`` (the SQL endpoint, scorecards, detection, the gate, the dashboard)
goes through the view, so the tiers are invisible to them. The lake always holds an empty
``spans/date=unknown/.schema.parquet`` with the current columns: the view's glob never matches
nothing (a hidden name in a real partition: other readers skip it, and hive-partitioned reads
of the lake stay consistent), and
lake files written before a column existed read it as NULL.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from ..spans.model import SPAN_COLUMN_NAMES
from .faults import crash_point
from .fs import publish, temporary_name
from .tables import LAKE_TABLES

if TYPE_CHECKING:
    from collections.abc import Callable

    import duckdb
    import pyarrow as pa

ROWS_TABLE = "span_rows"
#: the empty file with the current span columns (hidden from other lake readers)
SCHEMA_FILE = "date=unknown/.schema.parquet"


@dataclass(frozen=True, slots=True)
class Annotations:
    """A table moved by age alone (no roll): scores, feedback, requests."""

    view: str
    rows: str
    schema: pa.Schema
    #: the age is this column's
    time_column: str = "created_at"
    #: move only whole hours (one file per hour and day at most, instead of one per pass)
    hourly: bool = False

    @property
    def columns(self) -> str:
        return ", ".join(self.schema.names)

    def boundary(self, boundary: dt.datetime) -> dt.datetime:
        return boundary.replace(minute=0, second=0, microsecond=0) if self.hourly else boundary


ANNOTATIONS = (
    Annotations("scores", "score_rows", LAKE_TABLES["scores"].schema),
    Annotations("feedback", "feedback_rows", LAKE_TABLES["feedback"].schema),
)
#: ``request_rows`` (request_store.py) moves like the annotations, by its start time
REQUESTS = Annotations(
    "requests", "request_rows", LAKE_TABLES["requests"].schema, "start_time", hourly=True
)
#: every tiered lake table and its columns (``tables.LAKE_TABLES`` defines them); the
#: registry's tables are not tiered (the embedded store keeps them whole)
LAKE_SCHEMAS: dict[str, pa.Schema] = {
    name: LAKE_TABLES[name].schema for name in ("spans", "scores", "feedback", "requests")
}


@dataclass(frozen=True, slots=True)
class TierState:
    lake_dir: str
    boundary: dt.datetime | None  # rows older than this (and rolled) live in the lake
    moved_batch: int  # the lake roll watermark of the last move (0: nothing moved)
    compacted: int = 0  # the last committed cold-tier compaction (tier_compact.py)


def roll_file_name(first: int, last: int) -> str:
    """The lake roll's file name for batches ``first..last`` (zero-padded: names sort as
    numbers, which the cold view's file filter relies on)."""
    return f"part-{first:012d}-{last:012d}.parquet"


def move_file_name(number: int) -> str:
    """A score/feedback move's file name (one per date partition the move touches)."""
    return f"part-{number:012d}.parquet"


#: a cold-tier compaction's output: ``seg-<compaction>-<first batch>-<last batch>.parquet``
SEG_PREFIX = "seg-"


def seg_file_name(compaction: int, first: int, last: int) -> str:
    return f"{SEG_PREFIX}{compaction:012d}-{first:012d}-{last:012d}.parquet"


def segbelow(compaction: int) -> str:
    """Sorts after every compacted file of a compaction below ``compaction``."""
    return f"{SEG_PREFIX}{compaction:012d}"


def below(number: int) -> str:
    """Sorts after every ``part-`` name whose first number is below ``number``."""
    return f"part-{number:012d}"


def ensure_schema_files(lake_dir: Path) -> None:
    """(Re)write ``<table>/date=unknown/.schema.parquet`` with the current columns, atomically
    (``date=unknown`` also holds rows without a time; retention never drops it)."""
    for table, schema in LAKE_SCHEMAS.items():
        path = lake_dir / table / SCHEMA_FILE
        folder = path.parent
        folder.mkdir(parents=True, exist_ok=True)
        if path.exists():
            try:
                if pq.read_schema(path).equals(schema, check_metadata=False):
                    continue
            except Exception:  # unreadable: rewrite it below
                pass
        tmp = temporary_name(path)
        pq.write_table(schema.empty_table(), tmp)
        publish(tmp, path)


def set_lake(con: duckdb.DuckDBPyConnection, lake_dir: Path) -> None:
    """Record where this store's lake is (at every open: the data dir may have moved)."""
    for table in LAKE_SCHEMAS:
        con.execute(
            "INSERT INTO tier_state (table_name, lake_dir, boundary, moved_batch, updated_at) "
            "VALUES (?, ?, NULL, 0, now()::TIMESTAMP) "
            "ON CONFLICT (table_name) DO UPDATE SET lake_dir = excluded.lake_dir",
            [table, str(lake_dir)],
        ).fetchall()


def state(con: duckdb.DuckDBPyConnection, table: str = "spans") -> TierState | None:
    rows = con.execute(
        "SELECT lake_dir, boundary, moved_batch, coalesce(compacted, 0) FROM tier_state "
        "WHERE table_name = ?",
        [table],
    ).fetchall()
    if not rows:
        return None
    lake_dir, boundary, moved, compacted = rows[0]
    return TierState(str(lake_dir), boundary, int(moved), int(compacted))


def superseded(con: duckdb.DuckDBPyConnection, table: str = "spans") -> list[str]:
    """Lake files a committed compaction replaced and that are not deleted yet."""
    rows = con.execute(
        "SELECT path FROM cold_superseded WHERE table_name = ? ORDER BY path", [table]
    ).fetchall()
    return [str(r[0]) for r in rows]


def _record(con: duckdb.DuckDBPyConnection, table: str, boundary: dt.datetime, number: int) -> None:
    """Inside a move's transaction: what the cold tier of ``table`` now holds."""
    con.execute(
        "UPDATE tier_state SET boundary = ?, moved_batch = ?, updated_at = now()::TIMESTAMP "
        "WHERE table_name = ?",
        [boundary, number, table],
    ).fetchall()


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def rows_source(con: duckdb.DuckDBPyConnection) -> str:
    """The FROM item that reads both tiers (just ``span_rows`` while nothing has moved)."""
    st = state(con)
    if st is None or st.boundary is None or st.moved_batch <= 0:
        return ROWS_TABLE
    glob = lit(f"{st.lake_dir}/spans/*/*.parquet")
    # names sort as numbers: every roll file whose batches are all <= moved_batch, and the
    # schema file (".schema…" sorts before "part-"); then the compacted files of committed
    # compactions ("seg-<n>-…", n <= compacted), minus the files they replaced
    name = "parse_filename(filename)"
    files = f"{name} < {lit(below(st.moved_batch + 1))}"
    if st.compacted > 0:
        segs = f"{name} >= {lit(SEG_PREFIX)} AND {name} < {lit(segbelow(st.compacted + 1))}"
        files = f"({files} OR ({segs}))"
    gone = superseded(con)
    if gone:
        files += f" AND filename NOT IN ({', '.join(lit(p) for p in gone)})"
    cols = ", ".join(SPAN_COLUMN_NAMES)
    return (
        f"(SELECT * FROM {ROWS_TABLE} UNION ALL "
        f"SELECT {cols}, NULL::TIMESTAMP AS ingested_at, NULL::BIGINT AS ingest_batch "
        f"FROM read_parquet({glob}, union_by_name = true, hive_partitioning = false, "
        f"filename = true) "
        f"WHERE {files} "
        f"AND start_time < {lit(st.boundary.isoformat(sep=' '))}::TIMESTAMP)"
    )


def move(
    con: duckdb.DuckDBPyConnection,
    boundary: dt.datetime,
    lake_batch: int,
    refresh: Callable[[duckdb.DuckDBPyConnection], None],
    ingested_before: dt.datetime | None = None,
) -> tuple[int, TierState]:
    """Move rows older than ``boundary`` that the lake holds (batches ``<= lake_batch``) out
    of the hot tier: one transaction deletes them, records the state and redefines the views
    (``refresh``: ``views.refresh_view``, which reads this module).

    With ``ingested_before``, only batches committed before it move: a row stays hot for the
    dedupe window after it arrived, so the primary key still drops a retried export of it.
    Returns (rows moved, the new state). Neither the boundary nor the batch goes back."""
    con.execute("BEGIN TRANSACTION")
    try:
        st = state(con)
        if st is None:
            raise RuntimeError("tier_state has no lake recorded (set_lake runs at open)")
        if st.boundary is not None:
            boundary = max(boundary, st.boundary)
        batch = lake_batch
        if ingested_before is not None:
            # batches are numbered in commit order, so every row of a batch at or below the
            # newest one committed before the cutoff arrived before it too
            rows = con.execute(
                f"SELECT coalesce(max(ingest_batch), 0) FROM {ROWS_TABLE} "
                "WHERE ingest_batch BETWEEN ? AND ? AND ingested_at < ?",
                [st.moved_batch + 1, lake_batch, ingested_before],
            ).fetchall()
            batch = int(rows[0][0]) if rows else 0
            if batch < lake_batch:
                # The cutoff may fall inside a roll file's batches; the cold half selects whole
                # files, so stop at the end of the last roll wholly before it.
                rows = con.execute(
                    "SELECT coalesce(max(last_batch), 0) FROM span_rolls WHERE last_batch <= ?",
                    [batch],
                ).fetchall()
                batch = int(rows[0][0]) if rows else 0
        batch = max(batch, st.moved_batch)
        rows = con.execute(
            f"DELETE FROM {ROWS_TABLE} WHERE start_time < ? AND ingest_batch BETWEEN 1 AND ?",
            [boundary, batch],
        ).fetchall()
        moved = int(rows[0][0]) if rows else 0
        crash_point("move.deleted")
        _record(con, "spans", boundary, batch)
        con.execute("DELETE FROM span_rolls WHERE last_batch < ?", [batch]).fetchall()
        refresh(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    crash_point("move.committed")
    return moved, TierState(st.lake_dir, boundary, batch)


def move_annotations(
    con: duckdb.DuckDBPyConnection,
    spec: Annotations,
    boundary: dt.datetime,
    write: Callable[[pa.RecordBatchReader, Path, str], int],
    refresh: Callable[[duckdb.DuckDBPyConnection], None],
) -> int:
    """Move ``spec``'s rows older than ``boundary`` into the lake (see the module doc);
    returns rows moved. ``refresh`` redefines the views that read them (for scores and
    feedback, ``annotation_views.refresh_annotation_views``)."""
    boundary = spec.boundary(boundary)
    age = spec.time_column
    con.execute("BEGIN TRANSACTION")
    try:
        st = state(con, spec.view)
        if st is None:
            raise RuntimeError("tier_state has no lake recorded (set_lake runs at open)")
        rows = con.execute(
            f"SELECT count(*) FROM {spec.rows} WHERE {age} < ?", [boundary]
        ).fetchall()
        if not rows or not rows[0][0]:
            con.execute("ROLLBACK")
            return 0
        number = st.moved_batch + 1
        reader = con.sql(
            f"SELECT {spec.columns}, CAST({age} AS DATE)::VARCHAR AS _date "
            f"FROM {spec.rows} WHERE {age} < $1",
            params=[boundary],
        ).to_arrow_reader(65_536)
        written = write(reader, Path(st.lake_dir) / spec.view, move_file_name(number))
        crash_point(f"move.{spec.view}.published")
        deleted = con.execute(f"DELETE FROM {spec.rows} WHERE {age} < ?", [boundary]).fetchall()
        moved = int(deleted[0][0]) if deleted else 0
        if moved != written:  # the same snapshot: cannot happen unless DuckDB misbehaves
            raise RuntimeError(f"{spec.view}: wrote {written} rows but would delete {moved}")
        _record(con, spec.view, boundary, number)
        refresh(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return moved
