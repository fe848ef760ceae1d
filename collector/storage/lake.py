"""Roll committed spans into the open Parquet lake.

``<data_dir>/lake/spans/date=YYYY-MM-DD/part-<first>-<last>.parquet``: hive-partitioned by the
span's start date, zstd, large row groups, readable by DuckDB, polars and Spark without
PrefixScope. Each roll exports the group-commit batches ``(last_batch, newest]``; the file name
is derived from that range, so a roll repeated after a crash rewrites the same file rather than
adding a duplicate. Files are written to a hidden temporary name, fsynced, then renamed: readers
never see a half-written file (they ignore names starting with ``.`` / ``_``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prefixscope.metrics import Metrics

from ..spans.model import SPAN_COLUMN_NAMES
from . import tier_compact, tiers
from .annotation_views import refresh_annotation_views
from .background import log_pass_failure, lower_priority
from .compact import CompactionReport
from .faults import crash_point
from .fs import publish, temporary_name
from .retention import RetentionReport, apply_to_lake, apply_to_store, cutoff_for
from .store import Store, scalar
from .views import refresh_view

log = logging.getLogger(__name__)


#: rows per batch fetched from DuckDB's streaming result. The process's peak grows with it
#: far beyond the batch's own Arrow size (a roll of 2M spans: +300 MB at 8,192 rows, +740 MB
#: at 65,536), so fetch small batches ...
ROLL_BATCH_ROWS = 4_096
#: ... and buffer them per date partition into row groups of this many rows (or the lake's
#: row-group setting, if smaller): ~40 MB of Arrow data for the reference workload's spans
ROLL_GROUP_ROWS = 32_768


class LakeRoller:
    """Exports new span batches to Parquet, periodically and once more on shutdown.

    A roll starts every ``interval_s``, and also as soon as ``roll_rows`` spans have been
    committed since the last one (:meth:`committed` counts them; 0: by the interval only). Under
    heavy ingest that keeps every roll about the same size, so its share of the cores is steady
    instead of one large burst per interval. The move to the cold tier, compaction and retention
    run on the interval only.
    """

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        interval_s: float,
        row_group_rows: int,
        retention: dt.timedelta | None = None,
        hot_retention: dt.timedelta | None = None,
        dedupe_window: dt.timedelta = dt.timedelta(0),
        roll_rows: int = 0,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._interval = interval_s
        #: with a retention, each pass (after the roll) drops what is older, everywhere
        self._retention = retention
        #: with a hot retention, each roll is followed by a move of older rolled rows out of
        #: DuckDB (tiers.py)
        self._hot_retention = hot_retention if interval_s > 0 else None
        #: rows stay hot at least this long after they arrived (retries are dropped meanwhile)
        self._dedupe_window = dedupe_window
        self._row_group_rows = row_group_rows
        self._roll_rows = roll_rows if interval_s > 0 else 0
        #: spans committed since the last roll started (approximate: no lock, one writer)
        self._pending_rows = 0
        self._stop = threading.Event()
        #: set by stop() and by committed() once ``roll_rows`` spans wait: wakes the loop
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        """Observe the pass's duration (also when it fails: a slow failure is worth seeing).
        Entered after the lock: the time a pass waits for another is not its own."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._metrics.lake_pass_seconds.labels(step).observe(time.perf_counter() - t0)

    @property
    def lock(self) -> threading.Lock:
        """Held by every pass that writes the store's tiers (shared with the request
        resolver, which writes request_rows that the move also deletes from)."""
        return self._lock

    def start(self) -> None:
        if self._interval <= 0 and self._retention is None:
            return
        self._thread = threading.Thread(target=self._loop, name="prefixscope-lake", daemon=True)
        self._thread.start()

    def committed(self, table: pa.Table) -> None:
        """The writer's commit hook: count the group's spans; wake a roll at ``roll_rows``."""
        if self._roll_rows <= 0:
            return
        self._pending_rows += table.num_rows
        if self._pending_rows >= self._roll_rows:
            self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(60)

    def _loop(self) -> None:
        lower_priority()
        # no roll (interval 0) but a retention: enforce it every ten minutes
        period = self._interval if self._interval > 0 else 600.0
        due = time.monotonic() + period
        while True:
            self._wake.wait(max(0.0, due - time.monotonic()))
            if self._stop.is_set():
                return
            self._wake.clear()
            if time.monotonic() < due:  # woken by committed(): a roll, nothing else
                self._pass(full=False)
                continue
            due = time.monotonic() + period
            self._pass(full=True)

    def _pass(self, *, full: bool) -> None:
        if self._interval > 0:
            try:
                self.roll()
            except Exception as exc:  # keep rolling later; spans are safe in DuckDB meanwhile
                log_pass_failure(log, "Parquet lake roll failed", exc)
            else:
                if full:
                    self._move_and_compact()
        if full and self._retention is not None:
            try:
                self.enforce_retention()
            except Exception as exc:
                log_pass_failure(log, "retention pass failed; will retry", exc)

    def _move_and_compact(self) -> None:
        try:
            self.move()
        except Exception as exc:  # the rows stay hot; the next pass moves them
            log_pass_failure(log, "moving rows to the cold tier failed", exc)
            return
        try:
            self.compact()
        except Exception as exc:  # the files stay as they are; the next pass retries
            log_pass_failure(log, "cold-tier compaction failed", exc)

    def enforce_retention(self, now: dt.datetime | None = None) -> RetentionReport | None:
        """Drop lake partitions and store rows older than the retention (see retention.py)."""
        if self._retention is None:
            return None
        cutoff = cutoff_for(self._retention, now)
        with self._lock, self._timed("retention"):  # not while a roll writes into a partition
            report = apply_to_lake(str(self._store.lake_dir), cutoff)
            con = self._store.cursor()
            try:
                report.rows = apply_to_store(con, cutoff)
            finally:
                con.close()
        m = self._metrics
        for table, days in report.partitions.items():
            m.retention_partitions.labels(table).inc(len(days))
        for table, n in report.rows.items():
            m.retention_rows.labels(table).inc(n)
        m.retention_cutoff.set(cutoff.replace(tzinfo=dt.UTC).timestamp())
        if report.partitions or report.rows:
            log.info("retention: %s", report.to_dict())
        return report

    def move(self, now: dt.datetime | None = None) -> int:
        """Move rolled rows older than the hot retention to the cold tier (tiers.py)."""
        if self._hot_retention is None:
            return 0
        boundary = cutoff_for(self._hot_retention, now)
        with self._lock, self._timed("move"):  # a roll's watermark is final while rows move
            con = self._store.cursor()
            try:
                rolled = rolled_batch(con)
                moved, st = 0, None
                if rolled > 0:  # else no span is in the lake yet (scores and feedback move)
                    arrived = cutoff_for(self._dedupe_window, now)
                    moved, st = tiers.move(
                        con, boundary, rolled, refresh_view, ingested_before=arrived
                    )
                annotations = {
                    spec.view: tiers.move_annotations(
                        con, spec, boundary, self._write_moved, refresh_annotation_views
                    )
                    for spec in tiers.ANNOTATIONS
                }
                annotations["requests"] = tiers.move_annotations(
                    con, tiers.REQUESTS, boundary, self._write_moved, refresh=refresh_view
                )
            finally:
                con.close()
        m = self._metrics
        m.tier_moved_rows.labels("spans").inc(moved)
        for table, n in annotations.items():
            m.tier_moved_rows.labels(table).inc(n)
        boundary_now = st.boundary if st is not None else None
        if boundary_now is not None:
            m.tier_boundary.set(boundary_now.replace(tzinfo=dt.UTC).timestamp())
        if moved:
            log.info("moved %d spans older than %s to the cold tier", moved, boundary_now)
        return moved

    def compact(self, *, min_files: int = tier_compact.MIN_FILES) -> CompactionReport:
        """Merge the cold tier's small files and drop duplicate spans (tier_compact.py)."""
        report = CompactionReport()
        if self._hot_retention is None:
            return report
        with self._lock, self._timed("compact"):  # no roll, move or retention pass meanwhile
            con = self._store.cursor()
            try:
                report = tier_compact.compact(
                    con,
                    self._store.lake_dir,
                    row_group_rows=self._row_group_rows,
                    min_files=min_files,
                )
            finally:
                con.close()
        m = self._metrics
        if report.files_out:
            m.tier_compacted_files.labels("in").inc(report.files_in)
            m.tier_compacted_files.labels("out").inc(report.files_out)
        m.tier_duplicates_removed.inc(report.duplicates_removed)
        return report

    def roll(self) -> int:
        """Export every committed batch not yet in the lake; return rows written.

        Streams: rows come out of DuckDB ``ROLL_BATCH_ROWS`` at a time into one Parquet writer
        per date partition, so memory is bounded by a batch, not by the roll (a roll after
        30 s at 40k spans/s is 1.2M rows; materialized whole it held ~1.8 GB)."""
        with self._lock, self._timed("roll"):
            self._pending_rows = 0  # what commits from now on is for the next roll
            con = self._store.cursor()
            try:
                last = rolled_batch(con)
                newest = int(
                    str(scalar(con, "SELECT coalesce(max(ingest_batch), 0) FROM span_rows") or 0)
                )
                if newest <= last:
                    return 0
                cols = ", ".join(SPAN_COLUMN_NAMES)
                reader = con.sql(
                    f"SELECT {cols}, CAST(start_time AS DATE)::VARCHAR AS _date FROM span_rows "
                    "WHERE ingest_batch > $1 AND ingest_batch <= $2",
                    params=[last, newest],
                ).to_arrow_reader(ROLL_BATCH_ROWS)
                written = self._write(reader, last + 1, newest)
                crash_point("roll.published")
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(
                        "INSERT OR REPLACE INTO lake_state VALUES ('spans', ?, now()::TIMESTAMP)",
                        [newest],
                    )
                    # a move may stop only at a roll's end (tiers.move)
                    con.execute(
                        "INSERT OR IGNORE INTO span_rolls VALUES (?, now()::TIMESTAMP)", [newest]
                    )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                crash_point("roll.committed")
                return written
            finally:
                con.close()

    def _write(self, reader: pa.RecordBatchReader, first: int, last: int) -> int:
        base = self._store.lake_dir / "spans"
        # A roll that crashed after writing files but before recording its watermark left
        # files starting at ``first``: this roll supersedes them.
        for stale in base.glob(f"date=*/part-{first:012d}-*.parquet"):
            stale.unlink()
        name = tiers.roll_file_name(first, last)
        written = write_partitioned(reader, base, name, self._row_group_rows, "roll.written")
        self._metrics.lake_rows.labels("spans").inc(written)
        return written

    def _write_moved(self, reader: pa.RecordBatchReader, base: Path, name: str) -> int:
        """A score/feedback move's files (a crashed attempt's files of that number go)."""
        for stale in base.glob(f"date=*/{name}"):
            stale.unlink()
        written = write_partitioned(reader, base, name, self._row_group_rows, "move.written")
        self._metrics.lake_rows.labels(base.name).inc(written)
        return written


def write_partitioned(
    reader: pa.RecordBatchReader, base: Path, name: str, row_group_rows: int, step: str
) -> int:
    """Stream ``reader`` (its ``_date`` column says the partition) into one file
    ``<base>/date=<date>/<name>`` per date: hidden temporary names, fsync, rename."""
    writers: dict[str, tuple[pq.ParquetWriter, Path, Path]] = {}
    pending: dict[str, list[pa.Table]] = {}
    group = min(row_group_rows, ROLL_GROUP_ROWS)
    written = 0

    def flush(key: str) -> None:
        parts = pending.pop(key, [])
        if parts:
            writers[key][0].write_table(pa.concat_tables(parts), row_group_size=row_group_rows)

    try:
        for batch in reader:
            dates = batch.column(batch.schema.get_field_index("_date"))
            body = pa.Table.from_batches([batch]).drop_columns(["_date"])
            days = pc.unique(dates).to_pylist()
            for date in days:
                if len(days) == 1:  # the common case: no copy
                    part = body
                else:
                    mask = pc.is_null(dates) if date is None else pc.equal(dates, date)
                    part = body.filter(mask)
                key = date or "unknown"
                if key not in writers:
                    folder = base / f"date={key}"
                    folder.mkdir(parents=True, exist_ok=True)
                    tmp = temporary_name(folder / name)
                    writer = pq.ParquetWriter(tmp, part.schema, compression="zstd")
                    writers[key] = (writer, tmp, folder / name)
                pending.setdefault(key, []).append(part)
                if sum(t.num_rows for t in pending[key]) >= group:
                    flush(key)
                written += part.num_rows
        for key in list(pending):
            flush(key)
        for writer, _, _ in writers.values():
            writer.close()
        crash_point(step)
        for _, tmp, final in writers.values():
            publish(tmp, final)
    except BaseException:
        for writer, tmp, _ in writers.values():
            with contextlib.suppress(Exception):
                writer.close()
            tmp.unlink(missing_ok=True)
        raise
    return written


def rolled_batch(con: duckdb.DuckDBPyConnection) -> int:
    """The lake roll's watermark: every span batch up to it is in the lake (0: none)."""
    value = scalar(con, "SELECT last_batch FROM lake_state WHERE table_name = 'spans'")
    return int(str(value or 0))
