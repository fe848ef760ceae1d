"""The tables of the Parquet lake, their layout, and a writer for any of them.

``<lake>/<table>/date=YYYY-MM-DD/<unique name>.parquet`` for every table, partitioned by the UTC
date of its time column:

* ``spans`` — :data:`~.model.SPAN_COLUMNS`, by ``start_time``; unique by ``(trace_id, span_id)``.
  Written by collectors in ``--store lake`` mode (and by the embedded server's lake roll).
* ``scores`` — DESIGN.md's ``scores`` columns plus ``id``, by ``created_at``; unique by ``id``.
* ``feedback`` — DESIGN.md's ``feedback`` columns plus ``id``, by ``created_at``; unique by ``id``.
* ``requests`` — one row per request (``spans.request_columns.REQUEST_SCHEMA``), by
  ``start_time``; written by the embedded server when its requests move to the cold tier.
  A lake written by collectors in ``--store lake`` mode has none: readers resolve requests
  from ``spans``.
* ``prefixes`` — the variant registry's history (:data:`~.model.PREFIXES_SCHEMA`), one row
  per registration, by ``updated_at``; unique by ``id``. A variant's registration is its
  latest row (``updated_at``, then ``id``).
* ``served_models`` — the served-name mapping's history (:data:`~.model.SERVED_MODELS_SCHEMA`),
  by ``valid_from``; unique by ``(name, valid_from)``. Read by the lake engines with the same
  rule as the embedded views (``storage/views.py``).

``prefixes`` and ``served_models`` are written by lake collectors (``PUT /api/v1/prefixes``,
``serve --store lake --served-model``) and ``prefixscope lake register``
(``storage/lake_registry.py``); retention keeps them (a mapping made a year ago still
attributes today's spans).

Scores and feedback are written by whatever produces them in a scale-out deployment (evaluator
jobs, a feedback service): :func:`write_lake_table` here, or any Parquet writer that keeps the
columns and publishes files atomically. Readers dedupe on the key (``prefixscope lake compact``
removes the duplicates for good). Files whose names start with ``.`` or ``_`` are not published.

Where a key's copies are depends on the table. A span's partition follows from its own
``start_time``, so its copies share a partition. A score's or feedback record's ``created_at``
is stamped by the collector that received it (or sent by the client) and its id does not
depend on it: a retry after UTC midnight, or one file loaded on two days, puts one id in two
partitions (:attr:`LakeTable.stable_partition` is False). Such a table is deduplicated across
partitions, keeping the *first copy* of a key (:data:`FIRST_COPY`): the one first published,
as the embedded server keeps the first record sent under an id. :func:`write_lake_table`
names its files ``part-<publish time in ns>-<random>.parquet`` so that names sort in publish
order, and compaction's ``compact-`` files sort before every ``part-`` file, which is right:
after a compaction (it leaves one copy per key across partitions) a copy in a ``part-`` file
beside a compacted one was published after it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..spans.model import (
    FEEDBACK_SCHEMA,
    PREFIXES_SCHEMA,
    SCORE_SCHEMA,
    SERVED_MODELS_SCHEMA,
    SPAN_ARROW_SCHEMA,
)
from ..spans.request_columns import REQUEST_SCHEMA
from .fs import is_local, open_fs, publish_parquet


@dataclass(frozen=True, slots=True)
class LakeTable:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    time_column: str
    #: retention drops its old partitions (the registry's history is kept)
    retained: bool = True
    #: every copy of a key lands in one date partition (the time column is part of what the
    #: key names); False when a writer stamps it, so readers and compaction dedupe across
    #: partitions (the module doc)
    stable_partition: bool = True


LAKE_TABLES: dict[str, LakeTable] = {
    t.name: t
    for t in (
        LakeTable("spans", SPAN_ARROW_SCHEMA, ("trace_id", "span_id"), "start_time"),
        LakeTable("scores", SCORE_SCHEMA, ("id",), "created_at", stable_partition=False),
        LakeTable("feedback", FEEDBACK_SCHEMA, ("id",), "created_at", stable_partition=False),
        LakeTable("requests", REQUEST_SCHEMA, ("trace_id", "span_id"), "start_time"),
        LakeTable("prefixes", PREFIXES_SCHEMA, ("id",), "updated_at", retained=False),
        LakeTable(
            "served_models",
            SERVED_MODELS_SCHEMA,
            ("name", "valid_from"),
            "valid_from",
            retained=False,
        ),
    )
}


_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    pa.int64(): "BIGINT",
    pa.bool_(): "BOOLEAN",
    pa.list_(pa.string()): "VARCHAR[]",
}


def sql_type(t: pa.DataType) -> str:
    """The DuckDB SQL type of a lake column's Arrow type."""
    return "TIMESTAMP" if pa.types.is_timestamp(t) else _SQL_TYPES[t]


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order: columns that files written
    before a column was added lack read as nulls (old lake files stay readable)."""
    cols = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=schema)


def lake_table(name: str) -> LakeTable:
    try:
        return LAKE_TABLES[name]
    except KeyError:
        raise ValueError(f"unknown lake table {name!r}: use one of {sorted(LAKE_TABLES)}") from None


#: name prefix of the files ``prefixscope lake compact`` publishes (one per partition)
COMPACTED_PREFIX = "compact-"
#: the order of a key's copies, first copy first, where a table's copies may cross
#: partitions: the file's name (``compact-`` files, then ``part-<ns>-`` files in publish
#: order), its full path (two partitions' files of one write share a name), the row in it.
#: DuckDB spells it ``parse_filename(filename), filename, file_row_number``, Spark
#: ``_metadata.file_name, _metadata.file_path, _metadata.row_index``, compaction in polars.
FIRST_COPY = ("file name", "file path", "row")


def published_files(fs: Any, root: str, table: str) -> tuple[list[str], list[str]]:
    """``(clean, dirty)`` published Parquet files of a lake table.

    *Clean* files are the only file of their date partition and were written by compaction,
    so their rows are unique by the table's key; in a table whose copies of a key share a
    partition (:attr:`LakeTable.stable_partition`) no other file holds them, so readers may
    skip deduplicating them. Everything else is *dirty*: readers dedupe it on the key. In a
    table whose copies cross partitions (scores, feedback) every file is dirty: a copy
    published after the compaction (a retry after midnight) may be in the next day's files.
    """
    spec = lake_table(table)
    base = f"{root}/{table}"
    if not fs.exists(base):
        return [], []
    by_partition: dict[str, list[str]] = {}
    for f in fs.glob(f"{base}/*/*.parquet"):
        folder, _, name = f.rpartition("/")
        if not name.startswith((".", "_")):
            by_partition.setdefault(folder, []).append(f)
    clean: list[str] = []
    dirty: list[str] = []
    for files in by_partition.values():
        only = len(files) == 1 and files[0].rpartition("/")[2].startswith(COMPACTED_PREFIX)
        only = only and spec.stable_partition
        (clean if only else dirty).extend(sorted(files))
    return sorted(clean), sorted(dirty)


def partition_by_date(table: pa.Table, column: str = "start_time") -> list[tuple[str, pa.Table]]:
    """Split rows by the UTC date of ``column`` (``unknown`` when missing)."""
    dates = pc.strftime(table.column(column), format="%Y-%m-%d")
    out = []
    for date in pc.unique(dates).to_pylist():
        mask = pc.is_null(dates) if date is None else pc.equal(dates, date)
        out.append((date or "unknown", table.filter(mask)))
    return out


def write_lake_table(
    lake_url: str,
    name: str,
    table: pa.Table,
    *,
    row_group_rows: int = 1_000_000,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Publish ``table`` (columns of lake table ``name``) as new segments; return their paths."""
    spec = lake_table(name)
    table = table.select(spec.schema.names).cast(spec.schema)
    fs, root = open_fs(lake_url, storage_options)
    if is_local(fs):
        fs.makedirs(f"{root}/{name}", exist_ok=True)
    paths = []
    tag = f"{time.time_ns():020d}-{uuid.uuid4().hex}"  # names sort in publish order
    for date, part in partition_by_date(table, spec.time_column):
        path = f"{root}/{name}/date={date}/part-{tag}.parquet"
        publish_parquet(fs, part, path, row_group_rows)
        paths.append(path)
    return paths


def read_lake_table(
    lake_url: str, name: str, *, storage_options: dict[str, Any] | None = None
) -> pa.Table:
    """A whole (small) lake table, one row per key: for the registry's tables, which stay
    small (a row per registration or mapping change), never for spans."""
    spec = lake_table(name)
    fs, root = open_fs(lake_url, storage_options)
    clean, dirty = published_files(fs, root, name)
    parts = []
    for path in (*clean, *dirty):
        with fs.open(path, "rb") as fh:
            parts.append(conform(pq.read_table(fh), spec.schema))
    if not parts:
        return spec.schema.empty_table()
    table = pa.concat_tables(parts)
    if dirty:
        frame = pl.DataFrame(pl.from_arrow(table))
        table = frame.unique(subset=list(spec.key), keep="first", maintain_order=True).to_arrow()
        table = conform(table, spec.schema)
    return table
