"""Roll committed spans into the open Parquet lake.

``<data_dir>/lake/spans/date=YYYY-MM-DD/part-<first>-<last>.parquet``: hive-partitioned by the
span's start date, zstd, large row groups, readable by DuckDB, polars and Spark without
PrefixScope. Each roll exports the group-commit batches ``(last_batch, newest]``; the file name
is derived from that range, so a roll repeated after a crash rewrites the same file rather than
adding a duplicate. Files are written to a hidden temporary name, fsynced, then renamed: readers
never see a half-written file (they ignore names starting with ``.`` / ``_``).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prefixscope.metrics import Metrics

from .model import SPAN_COLUMN_NAMES
from .store import Store, scalar

log = logging.getLogger(__name__)


def write_parquet_atomic(table: pa.Table, path: Path, row_group_rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_rows)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class LakeRoller:
    """Exports new span batches to Parquet, periodically and once more on shutdown."""

    def __init__(
        self, store: Store, metrics: Metrics, *, interval_s: float, row_group_rows: int
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._interval = interval_s
        self._row_group_rows = row_group_rows
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._interval <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="prefixscope-lake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.roll()
            except Exception:  # keep rolling later; spans are safe in DuckDB meanwhile
                log.exception("Parquet lake roll failed")

    def roll(self) -> int:
        """Export every committed batch not yet in the lake; return rows written."""
        with self._lock:
            con = self._store.cursor()
            try:
                last = int(
                    str(
                        scalar(con, "SELECT last_batch FROM lake_state WHERE table_name = 'spans'")
                        or 0
                    )
                )
                newest = int(
                    str(scalar(con, "SELECT coalesce(max(ingest_batch), 0) FROM span_rows") or 0)
                )
                if newest <= last:
                    return 0
                cols = ", ".join(SPAN_COLUMN_NAMES)
                table = con.sql(
                    f"SELECT {cols}, CAST(start_time AS DATE)::VARCHAR AS _date FROM span_rows "
                    "WHERE ingest_batch > $1 AND ingest_batch <= $2 ORDER BY start_time",
                    params=[last, newest],
                ).to_arrow_table()
                written = self._write(table, last + 1, newest)
                con.execute(
                    "INSERT OR REPLACE INTO lake_state VALUES ('spans', ?, now()::TIMESTAMP)",
                    [newest],
                )
                return written
            finally:
                con.close()

    def _write(self, table: pa.Table, first: int, last: int) -> int:
        if table.num_rows == 0:
            return 0
        dates = table.column("_date")
        base = self._store.lake_dir / "spans"
        # A roll that crashed after writing files but before recording its watermark left
        # files starting at ``first``: this roll supersedes them.
        for stale in base.glob(f"date=*/part-{first:012d}-*.parquet"):
            stale.unlink()
        written = 0
        for date in pc.unique(dates).to_pylist():
            part = (
                table.filter(pc.equal(dates, date))
                if date is not None
                else table.filter(pc.is_null(dates))
            )
            part = part.drop_columns(["_date"])
            folder = base / f"date={date or 'unknown'}"
            write_parquet_atomic(
                part, folder / f"part-{first:012d}-{last:012d}.parquet", self._row_group_rows
            )
            written += part.num_rows
        self._metrics.lake_rows.labels("spans").inc(written)
        return written
