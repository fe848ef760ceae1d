"""Retention: drop data older than ``--retention`` everywhere it is kept.

* The Parquet lake: whole ``<table>/date=YYYY-MM-DD`` partitions whose day ended before the
  cutoff, for ``spans``, ``scores`` and ``feedback`` (each partitioned by its own time column:
  span start, score and feedback creation). A partition is removed file by file, the
  directory last; a reader listing it meanwhile sees fewer files, never a torn one.
* The embedded store: rows of ``span_rows``, ``score_rows``, ``feedback_rows`` and ``log_events``
  older than the cutoff, in one transaction.

Alerts, the registry, datasets and the served-model mapping are kept (they are small and
describe the deployment, not its traffic). A partition whose day is partly inside the window
is kept whole, so data lives between ``retention`` and ``retention`` + 1 day.
``prefixscope lake retention`` applies the same rule to a lake offline; ``serve --retention``
applies it every ``lake_roll_interval_s`` (after each roll), and counts what it dropped in
``/metrics``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from .fs import open_fs
from .tables import LAKE_TABLES

log = logging.getLogger(__name__)

#: lake tables retention applies to (each partitioned by its own time column)
#: store tables and their time column
STORE_TABLES = (
    ("span_rows", "start_time"),
    ("request_rows", "start_time"),
    ("score_rows", "created_at"),
    ("feedback_rows", "created_at"),
    ("log_events", "ingested_at"),
)
_DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})$")


@dataclass(slots=True)
class RetentionReport:
    cutoff: dt.datetime
    partitions: dict[str, list[str]] = field(default_factory=dict)  # table -> dropped days
    rows: dict[str, int] = field(default_factory=dict)  # store table -> rows deleted

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "partitions_dropped": self.partitions,
            "rows_deleted": self.rows,
        }


def cutoff_for(retention: dt.timedelta, now: dt.datetime | None = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now - retention


def expired_partitions(fs: Any, root: str, table: str, cutoff: dt.datetime) -> list[str]:
    """Partition folders whose whole day ended at or before ``cutoff``."""
    base = f"{root}/{table}"
    if not fs.exists(base):
        return []
    out = []
    for folder in fs.ls(base, detail=False):
        m = _DATE_DIR.search(folder.rstrip("/"))
        if not m:
            continue  # "date=unknown" (no time) is kept: retention cannot date it
        day = dt.datetime.strptime(m.group(1), "%Y-%m-%d")
        if day + dt.timedelta(days=1) <= cutoff:
            out.append(folder.rstrip("/"))
    return sorted(out)


def apply_to_lake(
    lake_url: str,
    cutoff: dt.datetime,
    *,
    dry_run: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> RetentionReport:
    fs, root = open_fs(lake_url, storage_options)
    report = RetentionReport(cutoff)
    for table in (name for name, spec in LAKE_TABLES.items() if spec.retained):
        dropped = []
        for folder in expired_partitions(fs, root, table, cutoff):
            if not dry_run:
                for f in sorted(fs.ls(folder, detail=False)):
                    fs.rm(f)
                if fs.exists(folder):
                    fs.rm(folder, recursive=True)
            dropped.append(folder.rpartition("date=")[2])
        if dropped:
            report.partitions[table] = dropped
    return report


def apply_to_store(con: Any, cutoff: dt.datetime) -> dict[str, int]:
    """Delete the store's rows older than ``cutoff`` (one transaction); rows deleted per table."""
    out: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for table, column in STORE_TABLES:
            rows = con.execute(f"DELETE FROM {table} WHERE {column} < ?", [cutoff]).fetchall()
            n = int(rows[0][0]) if rows else 0
            if n:
                out[table] = n
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return out
