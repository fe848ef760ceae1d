"""The embedded store: one DuckDB file owned by one process.

The serving process opens the file once. Every other user in that process (the group-commit
writer, the API, analytics, the SQL sandbox) takes a cursor from :meth:`Store.cursor`.
The database runs with ``enable_external_access=false`` and ``lock_configuration=true`` from
start-up on: nothing reached through it can touch files outside the Parquet lake, load
extensions or change settings. The lake is written with pyarrow, not through DuckDB.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import duckdb

from ..attribution import refresh_view
from .schema import migrate
from .tiers import ensure_schema_files, refresh_annotation_views, set_lake

log = logging.getLogger(__name__)

DB_FILENAME = "prefixscope.duckdb"
LAKE_DIRNAME = "lake"
#: DuckDB's share of ``--store-memory-mb``. DuckDB fills its limit with cached table blocks
#: and keeps them until it needs the room, so the limit is its steady size; the rest of the
#: budget is the store's memory outside DuckDB: the writer's queue and Arrow batches, the
#: dedupe window and the lake roll's buffers (bench/soak.py, README "Soak").
DUCKDB_MEMORY_SHARE = 0.5
#: a floor, so that a small budget still leaves DuckDB room for a query and recent rows
DUCKDB_MEMORY_MIN_MB = 128


def duckdb_memory_mb(store_memory_mb: int) -> int:
    """The DuckDB memory limit for a store budget of ``store_memory_mb``."""
    return max(DUCKDB_MEMORY_MIN_MB, int(store_memory_mb * DUCKDB_MEMORY_SHARE))


class Store:
    """Owns the DuckDB database of one data directory."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        threads: int | None = None,
        checkpoint_wal_mb: int | None = None,
        memory_mb: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lake_dir = self.data_dir / LAKE_DIRNAME
        self.lake_dir.mkdir(exist_ok=True)
        self.db_path = self.data_dir / DB_FILENAME
        self._config: dict[str, str | bool | int | float | list[str]] = {}
        if threads:
            self._config["threads"] = threads
        if checkpoint_wal_mb:
            # DuckDB's default (16 MB) checkpoints every ~18k spans; each checkpoint rewrites
            # the primary-key index, which made it half of the ingest cost (see README).
            self._config["checkpoint_threshold"] = f"{checkpoint_wal_mb}MB"
        if memory_mb:
            # DuckDB's default is 80 % of RAM. Its buffer manager (table blocks, rows not yet
            # checkpointed, aggregates, joins, sorts) evicts, spills or fails beyond this; the
            # SQL sandbox bounds what the limit does not see (vectors of huge scalar values).
            self._config["memory_limit"] = f"{duckdb_memory_mb(memory_mb)}MB"
        self._lock = threading.Lock()
        self._closed = False
        self._con = self._connect()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(str(self.db_path), config=self._config)
        try:
            migrate(con)
            ensure_schema_files(self.lake_dir)
            set_lake(con, self.lake_dir)
            refresh_view(con)
            refresh_annotation_views(con)
            lake = str(self.lake_dir).replace("'", "''")
            con.execute(f"SET allowed_directories=['{lake}/']")
            con.execute("SET enable_external_access=false")
            con.execute("SET lock_configuration=true")
        except BaseException:
            con.close()
            raise
        return con

    def reopen(self) -> None:
        """Open the file again after DuckDB invalidated the database on a fatal I/O error
        (a checkpoint on a full or read-only disk): committed data is in the file and its WAL.
        Raises while the file cannot be opened yet; the caller retries later."""
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            with contextlib.suppress(duckdb.Error):
                self._con.close()
            self._con = self._connect()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database, for one thread's use."""
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            return self._con.cursor()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as exc:  # e.g. invalidated by a disk fault: the WAL has it all
                log.warning("final checkpoint failed (the WAL is replayed at next start): %s", exc)
            finally:
                self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> object:
    """First column of the first row (the result is fully consumed, as DuckDB 2 requires)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None
