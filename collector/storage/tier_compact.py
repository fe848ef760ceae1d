"""Compaction of the embedded store's cold tier: fewer, larger files, and no duplicate spans.

The lake roll writes one small file per roll and date (``part-<first>-<last>.parquet``). Once
a file's batches have all moved (``last <= moved_batch``), the cold half of the ``spans`` view
reads it (``tiers.py``). Compaction merges such files of one ``date=`` partition into one
``seg-<compaction>-<first>-<last>.parquet``, keeping one row per ``(trace_id, span_id)`` and
sorting by ``start_time``:

* a partition whose day lies wholly before the hot boundary (it gets no new cold rows but
  late spans) is merged whole, compacted files included, whenever it has two files or more:
  every duplicate in it is removed (a retry beyond the dedupe window, stored twice, is read
  twice until then);
* a partition still filling is merged when it holds ``min_files`` roll files (their
  duplicates among themselves are removed).

Readers switch files atomically. The merged file is published (fsynced, renamed) under a
compaction number the view does not read yet; one DuckDB transaction then records that number
and lists the replaced files in ``cold_superseded``, which the view excludes, and redefines
the view; only then are the replaced files deleted and the list cleared. Kill -9 at any step
loses nothing and reads nothing twice: before the commit the new file is invisible (and the
next compaction deletes it and reuses its number); after it, the old files are invisible (and
the next pass deletes them). A merged file only ever holds rows of batches that had moved, so
the view's ``start_time < boundary`` condition still splits it from the hot tier exactly.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..spans.model import SPAN_COLUMN_NAMES
from . import tiers
from .compact import CompactionReport
from .faults import crash_point
from .fs import publish, temporary_name
from .views import refresh_view

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

#: a partition still filling is compacted once it holds this many moved roll files
MIN_FILES = 16

_ROLL = re.compile(r"^part-(\d{12})-(\d{12})\.parquet$")
_SEG = re.compile(r"^seg-(\d{12})-(\d{12})-(\d{12})\.parquet$")
_DAY = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    first: int
    last: int
    roll: bool  # a roll file (else a compacted one)


def _cold_files(folder: Path, st: tiers.TierState) -> list[_File]:
    """The partition's files the cold view reads: moved roll files, committed segments."""
    out = []
    for p in folder.iterdir():
        if m := _ROLL.match(p.name):
            first, last = int(m.group(1)), int(m.group(2))
            if last <= st.moved_batch:
                out.append(_File(p, first, last, True))
        elif (m := _SEG.match(p.name)) and int(m.group(1)) <= st.compacted:
            out.append(_File(p, int(m.group(2)), int(m.group(3)), False))
    return sorted(out, key=lambda f: (f.first, f.path.name))


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def finish_pending(con: duckdb.DuckDBPyConnection, lake_dir: Path) -> int:
    """Delete what an earlier compaction left: files it replaced (listed, unread) and files it
    published without committing (numbered above the committed compaction). Returns files
    deleted."""
    st = tiers.state(con)
    if st is None:
        return 0
    deleted = 0
    gone = tiers.superseded(con)
    for path in gone:
        Path(path).unlink(missing_ok=True)
        deleted += 1
    if gone:
        crash_point("compact.removed")
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM cold_superseded WHERE table_name = 'spans'").fetchall()
            refresh_view(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    base = lake_dir / "spans"
    if base.is_dir():
        for folder in base.iterdir():
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                m = _SEG.match(p.name)
                stale = (m is not None and int(m.group(1)) > st.compacted) or (
                    p.name.startswith(".seg-") and p.name.endswith(".tmp")
                )
                if stale:
                    p.unlink(missing_ok=True)
                    deleted += 1
    return deleted


def compact(
    con: duckdb.DuckDBPyConnection,
    lake_dir: Path,
    *,
    row_group_rows: int,
    min_files: int = MIN_FILES,
) -> CompactionReport:
    """One compaction pass over the cold tier of ``spans`` (see the module doc)."""
    report = CompactionReport()
    finish_pending(con, lake_dir)
    st = tiers.state(con)
    base = lake_dir / "spans"
    if st is None or st.boundary is None or st.moved_batch <= 0 or not base.is_dir():
        return report
    number = st.compacted + 1
    schema_file = base / tiers.SCHEMA_FILE  # every current column, even if no input has it
    cols = ", ".join(SPAN_COLUMN_NAMES)
    replaced: list[Path] = []
    for folder in sorted(base.iterdir()):
        m = _DAY.match(folder.name)
        if m is None or not folder.is_dir():
            continue  # date=unknown: rows without a start time never go cold
        day_end = dt.datetime.strptime(m.group(1), "%Y-%m-%d") + dt.timedelta(days=1)
        files = _cold_files(folder, st)
        if day_end <= st.boundary:
            inputs = files if len(files) >= 2 else []
        else:
            rolls = [f for f in files if f.roll]
            inputs = rolls if len(rolls) >= min_files else []
        if not inputs:
            continue
        out = folder / tiers.seg_file_name(
            number, min(f.first for f in inputs), max(f.last for f in inputs)
        )
        tmp = temporary_name(out)
        sources = ", ".join(_lit(str(p)) for p in [schema_file, *(f.path for f in inputs)])
        rows_in = con.execute(
            f"SELECT count(*) FROM read_parquet([{sources}], union_by_name = true)"
        ).fetchall()[0][0]
        written = con.execute(
            f"COPY (SELECT {cols} FROM read_parquet([{sources}], union_by_name = true, "
            "hive_partitioning = false, filename = true, file_row_number = true) "
            "QUALIFY row_number() OVER (PARTITION BY trace_id, span_id "
            "ORDER BY filename, file_row_number) = 1 ORDER BY start_time) "
            f"TO {_lit(str(tmp))} (FORMAT parquet, COMPRESSION zstd, "
            f"ROW_GROUP_SIZE {int(row_group_rows)})"
        ).fetchall()[0][0]
        publish(tmp, out)
        replaced += [f.path for f in inputs]
        report.partitions += 1
        report.files_in += len(inputs)
        report.files_out += 1
        report.rows_in += int(rows_in)
        report.rows_out += int(written)
    if not replaced:
        return report
    crash_point("compact.published")
    con.execute("BEGIN TRANSACTION")
    try:
        con.executemany(
            "INSERT OR IGNORE INTO cold_superseded VALUES ('spans', ?)",
            [[str(p)] for p in replaced],
        )
        con.execute(
            "UPDATE tier_state SET compacted = ?, updated_at = now()::TIMESTAMP "
            "WHERE table_name = 'spans'",
            [number],
        ).fetchall()
        refresh_view(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    crash_point("compact.committed")
    finish_pending(con, lake_dir)
    if report.duplicates_removed:
        log.info("cold-tier compaction removed %d duplicate spans", report.duplicates_removed)
    return report
