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
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from .annotation_views import refresh_annotation_views
from .schema import migrate
from .tiers import ensure_schema_files, set_lake
from .views import refresh_view

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Something that stops ad-hoc reads to free DuckDB memory; returns how many it stopped.
MemoryValve = Callable[[], int]
#: Pauses between a write's attempts after DuckDB ran out of memory (about 0.8 s in all):
#: an interrupted query gives its memory back within milliseconds.
WRITE_RETRY_PAUSES_S = (0.02, 0.05, 0.1, 0.2, 0.4)
#: how DuckDB words running out of its memory limit when it happens inside COMMIT, which it
#: reports as a TransactionException ("Failed to commit: failed to pin block of size ...")
_OOM_WORDING = re.compile(r"(failed to|could not) (allocate|pin)|out of memory", re.IGNORECASE)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckDB refusing an allocation at its memory limit."""
    if isinstance(exc, duckdb.OutOfMemoryException):
        return True
    # inside COMMIT DuckDB reports it as a failed transaction, or (when flushing the table's
    # appended rows) as a fatal error that invalidates the database until it is reopened
    fatal_or_commit = duckdb.TransactionException | duckdb.FatalException
    return isinstance(exc, fatal_or_commit) and bool(_OOM_WORDING.search(str(exc)))


DB_FILENAME = "prefixscope.duckdb"
LAKE_DIRNAME = "lake"
#: DuckDB's share of ``--store-memory-mb``. DuckDB fills its limit with cached table blocks
#: and keeps them until it needs the room, so the limit is its steady size; the rest of the
#: budget is the store's memory outside DuckDB: the writer's queue and Arrow batches, the
#: dedupe window and the lake roll's buffers (bench/soak.py, docs/benchmarks/soak.md).
DUCKDB_MEMORY_SHARE = 0.5
#: a floor, so that a small budget still leaves DuckDB room for a query and recent rows
DUCKDB_MEMORY_MIN_MB = 128


#: The dedupe window's share of ``--store-memory-mb`` and what one key costs there at most
#: (dedupe.py: the hash, its bucket's bitmap, the window's filter). 1,024 MB: 19M keys, i.e.
#: the full 15 minutes up to 21k spans/s sustained.
DEDUPE_MEMORY_SHARE = 0.25
DEDUPE_BYTES_PER_KEY = 14


def duckdb_memory_mb(store_memory_mb: int) -> int:
    """The DuckDB memory limit for a store budget of ``store_memory_mb``."""
    return max(DUCKDB_MEMORY_MIN_MB, int(store_memory_mb * DUCKDB_MEMORY_SHARE))


def dedupe_max_keys(store_memory_mb: int | None) -> int:
    """The most keys the dedupe window may hold for a store budget (0: no budget, no bound)."""
    if not store_memory_mb:
        return 0
    return int(store_memory_mb * DEDUPE_MEMORY_SHARE * 2**20) // DEDUPE_BYTES_PER_KEY


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
            # the primary-key index, which made it half of the ingest cost
            # (docs/benchmarks/ingest.md).
            self._config["checkpoint_threshold"] = f"{checkpoint_wal_mb}MB"
        if memory_mb:
            # DuckDB's default is 80 % of RAM. Its buffer manager (table blocks, rows not yet
            # checkpointed, aggregates, joins, sorts) evicts, spills or fails beyond this; the
            # SQL sandbox bounds what the limit does not see (vectors of huge scalar values).
            self._config["memory_limit"] = f"{duckdb_memory_mb(memory_mb)}MB"
        self._lock = threading.Lock()
        self._closed = False
        self._valves: list[MemoryValve] = []
        #: how many times the file was opened; a cursor from an earlier one is closed
        self.generation = 0
        #: run by :meth:`read_cursor` before a read of derived tables (the server sets the
        #: request resolver's catch-up: analytics then counts every committed span)
        self.before_read: Callable[[], object] | None = None
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
        """Open the file again after DuckDB invalidated the database on a fatal error (a
        checkpoint on a full or read-only disk, a commit that ran out of memory): committed
        data is in the file and its WAL. Raises while the file cannot be opened yet; the
        caller retries later."""
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            with contextlib.suppress(duckdb.Error):
                self._con.close()
            self._con = self._connect()
            self.generation += 1

    def ensure_open(self) -> None:
        """:meth:`reopen` if DuckDB has invalidated the database, else nothing."""
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            try:
                self._con.execute("SELECT 1").fetchall()
                return
            except duckdb.Error as exc:
                log.warning("reopening the store: %s", str(exc).splitlines()[0])
        self.reopen()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database, for one thread's use."""
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            return self._con.cursor()

    def read_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for analytics reads: derived tables (``request_rows``) are brought up to
        date with everything committed first (:meth:`bring_up_to_date`)."""
        self.bring_up_to_date()
        return self.cursor()

    def bring_up_to_date(self) -> None:
        """Derive what is committed but not yet derived (requests from their spans), so a
        read of the derived tables sees every committed span. Costly under ingest: a read of
        the spans alone does not call it."""
        if self.before_read is not None:
            self.before_read()

    # -- writes before reads ---------------------------------------------------------------------
    def add_memory_valve(self, valve: MemoryValve) -> None:
        """Register what :meth:`relieve_memory` may stop (the SQL sandbox's running queries)."""
        with self._lock:
            self._valves.append(valve)

    def relieve_memory(self) -> int:
        """Stop the ad-hoc reads holding DuckDB memory, so a write can commit."""
        with self._lock:
            valves = list(self._valves)
        return sum(valve() for valve in valves)

    def write(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (one write transaction, rolled back whole when it fails) and retry
        it after DuckDB ran out of memory, having stopped the reads that hold the memory.
        After a fatal one the store is reopened first, so attempts take a new cursor.
        DuckDB's limit is shared by every cursor: without this, one user's heavy query could
        make an acknowledged-or-refused ingest commit fail."""
        for pause in WRITE_RETRY_PAUSES_S:
            try:
                return attempt()
            except duckdb.Error as exc:
                if not out_of_memory(exc):
                    raise
                stopped = self.relieve_memory()
                log.warning(
                    "write ran out of DuckDB memory; stopped %d ad-hoc queries, retrying: %s",
                    stopped,
                    str(exc).splitlines()[0],
                )
                time.sleep(pause)
                if isinstance(exc, duckdb.FatalException):
                    self.ensure_open()
        return attempt()

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
