"""Where the group-commit writer puts spans: the embedded DuckDB store or a Parquet lake.

A sink's ``write`` returns only once the spans are durable; the writer acknowledges clients
after that. ``DuckDBSink`` is the embedded default: the hot tier, with the dedupe window
(``dedupe.py``) dropping a retried export's spans before they are inserted.
``LakeSink`` is the scale-out mode: each collector process writes its own Parquet segments
(unique names, atomic publish) into one hive-partitioned lake, local or object storage, and
``prefixscope lake compact`` later merges segments and drops duplicate ``(trace_id, span_id)``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import time
import uuid
from typing import Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa

from ..spans.model import SPAN_COLUMN_NAMES
from .dedupe import RecentKeys, key_hashes, repeated_rows
from .fs import is_local, open_fs, publish_parquet
from .store import Store, scalar
from .tables import partition_by_date

log = logging.getLogger(__name__)
#: at most one warning per this many seconds while the window is short of its length
_EVICTION_WARNING_EVERY_S = 600.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _count(value: object) -> int:
    return int(value) if isinstance(value, int) else 0


class SpanSink(Protocol):
    def open(self) -> int:
        """Prepare; return the last batch number already stored (0 when unknown)."""

    def write(self, table: pa.Table, batch_no: int) -> int:
        """Store ``table`` durably; return how many spans were new."""

    def take_written(self) -> pa.Table | None:
        """The spans the last successful ``write`` stored, once (then None), for derived
        counters: a retried span is counted once, like it is stored once."""

    def close(self) -> None: ...


class LogSink(Protocol):
    def write_logs(self, table: pa.Table) -> int:
        """Store rows of ``log_events`` durably, each ``id`` once; return how many were new."""


#: log events: the first copy of an id in the slice, and none already stored (a retry)
_INSERT_LOGS = (
    "INSERT OR IGNORE INTO log_events (id, trace_id, span_id, time, event_name, body, "
    "attributes, resource, scope_name, ingested_at) SELECT DISTINCT ON (id) id, trace_id, "
    "span_id, time, event_name, body, attributes, resource, scope_name, ingested_at FROM {view}"
)


class DuckDBSink:
    """Insert into ``span_rows`` (read as ``spans``). Retried duplicates are dropped by the
    dedupe window (``dedupe.py``): within ``dedupe_window_s`` of the first copy's commit, a
    span is never stored twice.

    ``dedupe_max_keys`` (0: none) bounds the window's memory (``RecentKeys``): above
    ``dedupe_max_keys / dedupe_window_s`` spans/s sustained, the window covers less than its
    length, and a warning says how much (``/metrics``: ``prefixscope_dedupe_window_seconds``).
    """

    def __init__(
        self, store: Store, *, dedupe_window_s: float = 900.0, dedupe_max_keys: int = 0
    ) -> None:
        self._store = store
        self._con: duckdb.DuckDBPyConnection | None = None
        self._generation = 0
        self._window_s = dedupe_window_s
        self._max_keys = dedupe_max_keys
        self.recent = RecentKeys(dedupe_window_s, max_keys=dedupe_max_keys)
        self._warned_at: float | None = None
        self._written: pa.Table | None = None

    def open(self) -> int:
        self._generation = self._store.generation
        self._con = self._store.cursor()
        self._rebuild(self._con)
        # batch numbers never repeat: rows of batches already rolled (and perhaps moved out of
        # span_rows to the cold tier) keep theirs
        return _count(
            scalar(
                self._con,
                "SELECT greatest((SELECT coalesce(max(ingest_batch), 0) FROM span_rows), "
                "(SELECT coalesce(max(last_batch), 0) FROM lake_state WHERE table_name = 'spans'))",
            )
        )

    def _rebuild(self, con: duckdb.DuckDBPyConnection) -> None:
        """The window's keys, from the rows ingested within it (after a restart): the newest
        ``dedupe_max_keys`` of them when there are more."""
        evicted = self.recent.evicted  # a counter: it goes on across rebuilds
        self.recent = RecentKeys(self._window_s, max_keys=self._max_keys)
        self.recent.evicted = evicted
        if self._window_s <= 0:
            return
        since = _utcnow() - dt.timedelta(seconds=self._window_s)
        first = 0
        if self._max_keys > 0:
            per_batch = con.execute(
                "SELECT coalesce(ingest_batch, 0), count(*) FROM span_rows WHERE ingested_at >= $1 "
                "GROUP BY 1 ORDER BY 1 DESC",
                [since],
            ).fetchall()
            held = 0
            for batch_no, n in per_batch:  # newest first, whole batches
                if held + n > self._max_keys:
                    break
                held, first = held + n, batch_no
        reader = con.sql(
            "SELECT trace_id, span_id FROM span_rows WHERE ingested_at >= $1 "
            "AND coalesce(ingest_batch, 0) >= $2",
            params=[since, first],
        ).to_arrow_reader(1 << 20)
        for batch in reader:
            self.recent.add(key_hashes(batch.column(0), batch.column(1)))

    def _remember(self, keys: np.ndarray) -> None:
        """Add committed keys to the window; say so when its memory bound shortens it."""
        before = self.recent.evicted
        self.recent.add(keys)
        if self.recent.evicted == before:
            return
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= _EVICTION_WARNING_EVERY_S:
            self._warned_at = now
            log.warning(
                "dedupe window at its memory bound (%d keys): it covers the last %.0f s, not "
                "%.0f s; a retry older than that is stored again and removed at compaction "
                "(raise --store-memory-mb for a longer window at this rate)",
                self._max_keys,
                self.recent.covered_s(now),
                self._window_s,
            )

    def _new_rows(self, con: duckdb.DuckDBPyConnection, table: pa.Table) -> tuple[pa.Table, Any]:
        """``table`` without the spans already stored within the window or repeated inside
        it (first copy kept), and the hashes of the rows kept."""
        keys = key_hashes(table.column("trace_id"), table.column("span_id"))
        keep = np.ones(len(keys), dtype=bool)
        repeated = repeated_rows(keys)
        if len(repeated):  # rare (a group holding a request and its retry): exact, in Python
            tids = table.column("trace_id").take(repeated).to_pylist()
            sids = table.column("span_id").take(repeated).to_pylist()
            first: set[tuple[str, str]] = set()
            for i, key in zip(repeated.tolist(), zip(tids, sids, strict=True), strict=True):
                if key in first:
                    keep[i] = False
                first.add(key)
        maybe = self.recent.seen(keys) & keep
        if maybe.any():  # a retry (or a 64-bit collision): confirm against the store
            idx = np.flatnonzero(maybe)
            cand = table.select(["trace_id", "span_id"]).take(pa.array(idx))
            cand = cand.append_column("_row", pa.array(idx))
            view = f"_dedupe_candidates_{uuid.uuid4().hex}"  # see _insert
            con.register(view, cand)
            try:
                since = _utcnow() - dt.timedelta(seconds=self._window_s * 2 + 60)
                hits = con.execute(
                    f"SELECT c._row FROM {view} c JOIN span_rows r "
                    "ON r.trace_id = c.trace_id AND r.span_id = c.span_id "
                    "WHERE r.ingested_at >= ?",
                    [since],
                ).fetchall()
            finally:
                with contextlib.suppress(duckdb.Error):
                    con.unregister(view)
            for (row,) in hits:
                keep[row] = False
        if keep.all():
            return table, keys
        return table.filter(pa.array(keep)), keys[keep]

    def write(self, table: pa.Table, batch_no: int) -> int:
        # out of memory (a user's query filled DuckDB's limit): the store stops ad-hoc reads
        # and runs the attempt again
        return self._store.write(lambda: self._attempt(table, batch_no))

    def take_written(self) -> pa.Table | None:
        written, self._written = self._written, None
        return written

    def write_logs(self, table: pa.Table) -> int:
        """GenAI log events, in one statement from Arrow (``INSERT OR IGNORE`` on the key)."""
        return self._store.write(lambda: self._attempt_logs(table))

    def _attempt_logs(self, table: pa.Table) -> int:
        con = self._cursor()
        # a uniquely named view: a failed commit's catalog entry cannot meet the retry's
        view = f"_log_rows_{uuid.uuid4().hex}"
        try:
            con.register(view, table)
            try:
                row = con.execute(_INSERT_LOGS.format(view=view)).fetchone()
            finally:
                with contextlib.suppress(duckdb.Error):
                    con.unregister(view)
        except duckdb.FatalException:
            self.close()
            raise
        except duckdb.Error:
            self.close()
            self._con = self._store.cursor()
            raise
        return int(row[0]) if row else 0

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """The writer's cursor, anew after the store was reopened (another writer's fatal
        error, or an earlier one of ours)."""
        if self._con is not None and self._generation != self._store.generation:
            self.close()  # another writer's fatal error reopened the store
        if self._con is None:  # invalidated by an earlier fatal error: reopen (or fail again)
            self._store.ensure_open()
            self._generation = self._store.generation
            self._con = self._store.cursor()
            # the window's keys again, from the file: they include the failed attempt's rows
            # if its commit reached the WAL before DuckDB gave up, so a retry stores them once
            self._rebuild(self._con)
        return self._con

    def _attempt(self, table: pa.Table, batch_no: int) -> int:
        self._written = None
        con = self._cursor()
        try:
            inserted, keys = self._insert(con, table, batch_no)
        except duckdb.FatalException:
            # DuckDB refuses every later statement on this database instance: drop it so the
            # next attempt reopens the file (once the disk is writable again)
            self.close()
            raise
        except duckdb.Error:
            # a commit that failed can leave this connection's registered batch half-created
            # ("write-write conflict on create" at the next register): start on a new cursor
            self.close()
            self._con = self._store.cursor()
            # DuckDB can report a commit as failed after its WAL record was written: the
            # spans count as maybe stored, so a retry confirms each against the store
            self._remember(key_hashes(table.column("trace_id"), table.column("span_id")))
            raise
        if keys is not None:
            self._remember(keys)
        return inserted

    def _insert(
        self, con: duckdb.DuckDBPyConnection, table: pa.Table, batch_no: int
    ) -> tuple[int, Any]:
        """One attempt. When it raises, DuckDB may still have stored it (see ``_attempt``)."""
        new, keys = self._new_rows(con, table)
        n = new.num_rows
        if n == 0:
            return 0, None
        now = pa.scalar(int(time.time() * 1e6), type=pa.timestamp("us"))
        rows = new.append_column("ingested_at", pa.repeat(now, n)).append_column(
            "ingest_batch", pa.repeat(pa.scalar(batch_no, pa.int64()), n)
        )
        # an anonymous relation, not a registered view: a view's catalog entry outlived a
        # commit that failed (out of memory) and conflicted with the retry's
        con.from_arrow(rows).insert_into("span_rows")
        self._written = new
        return n, keys

    def close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.close()
            self._con = None


class LakeSink:
    """Each group commit becomes one Parquet segment per date partition."""

    def __init__(
        self,
        lake_url: str,
        *,
        row_group_rows: int = 1_000_000,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.lake_url = lake_url
        self._row_group_rows = row_group_rows
        #: every span written (retries are removed later, by ``prefixscope lake compact``)
        self._written: pa.Table | None = None
        self._storage_options = storage_options
        self.collector_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._fs: Any = None
        self._root = ""

    def open(self) -> int:
        self._fs, self._root = open_fs(self.lake_url, self._storage_options)
        if is_local(self._fs):
            os.makedirs(f"{self._root}/spans", exist_ok=True)
        return 0

    def write(self, table: pa.Table, batch_no: int) -> int:
        table = table.select(list(SPAN_COLUMN_NAMES))
        for date, part in partition_by_date(table):
            name = f"part-{self.collector_id}-{batch_no:012d}.parquet"
            publish_parquet(
                self._fs, part, f"{self._root}/spans/date={date}/{name}", self._row_group_rows
            )
        self._written = table
        return table.num_rows

    def take_written(self) -> pa.Table | None:
        written, self._written = self._written, None
        return written

    def close(self) -> None:
        self._fs = None
