"""Read-only, sandboxed SQL over the store (``POST /api/v1/sql``).

Layered defences, outermost first (datasette's ``database.py`` is the model):

1. the request is bounded: text length, and a few concurrent queries at most (429 beyond);
2. exactly ONE statement (``duckdb.extract_statements``), of a read type: SELECT (which is
   also how DuckDB reports DESCRIBE/SHOW/SUMMARIZE/FROM-first) or EXPLAIN of one; everything
   else (PRAGMA, SET/RESET, ATTACH, COPY, INSTALL/LOAD, CREATE, INSERT, ...) is refused;
3. the parse tree (``json_serialize_sql``) is walked: data-modifying CTEs
   (``WITH d AS (DELETE ... RETURNING *) SELECT ...``, which DuckDB types as SELECT) and
   side-effecting or SQL-evaluating table functions are refused, and every file the query
   names must be a Parquet file in a table folder of the lake (:mod:`.sql_files`: DuckDB's
   own sandbox still lets a query read the store's file, WAL and spill folder);
4. the query runs on its own cursor inside a transaction that is always rolled back, so
   nothing it does can be committed;
5. the engine sandbox set on the database at start-up (``enable_external_access=false``,
   ``allowed_directories=[<lake>/]``, ``lock_configuration=true``): file, network and
   extension access fails in the engine and is reported as ``forbidden``;
6. memory, bounded in three places that do not depend on each other:
   the engine's ``memory_limit`` (``--store-memory-mb``) for what DuckDB's buffer manager
   sees (aggregates, joins, sorts); a watchdog that interrupts running queries once the
   process's resident set grows by more than ``--sql-memory-mb`` (``memory_limit``); and,
   for the one thing neither can stop (a single vector of 2,048 huge scalar values, built
   in one allocation before any interrupt is checked), a static bound on every function
   that makes a value larger than its inputs (``repeat``, ``lpad``, ``list_resize``,
   ``range`` as a value, format widths, ...), :mod:`.sql_sizes`, and on every other
   expression (concatenation, lists, JSON, encodings, ..., sized from their inputs' bounds),
   :mod:`.sql_bounds`;
7. a time limit (``interrupt()`` from a timer → ``QueryTimeout``), a row cap (fetch
   ``max_rows + 1``, answer ``truncated: true``) and a byte cap on the answer, counted while
   rows stream.

:meth:`SqlSandbox.run` answers JSON-safe Python rows (the JSON answer);
:meth:`SqlSandbox.run_arrow` answers DuckDB's Arrow record batches, read one vector at a
time with their own row and byte caps and no Python row built (the Arrow, Parquet, CSV and
NDJSON answers, :mod:`.sql_formats`). Both go through every defence above.

Errors are typed :class:`QueryError` with a ``code`` that names the defence that stopped
the query (``syntax_error`` with ``position``, ``forbidden``, ``multiple_statements``,
``value_too_large``, ``memory_limit``, ``timeout``, ...).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import duckdb
import pyarrow as pa

from prefixscope.collector.storage.store import Store
from prefixscope.errors import Overloaded, QueryError, QueryTimeout
from prefixscope.metrics import Metrics

from .sql_errors import translate, translate_text
from .sql_policy import QueryPolicy
from .sql_results import ARROW_BATCH_ROWS, ArrowResult, SqlResult, fetch_arrow, fetch_rows
from .sql_watchdog import MemoryWatchdog, Watched

_T = TypeVar("_T")


class SqlSandbox:
    """Runs one user query at a time per call; call :meth:`run` from a worker thread."""

    def __init__(
        self,
        store: Store,
        *,
        timeout_s: float,
        max_rows: int,
        metrics: Metrics | None = None,
        max_concurrent: int = 4,
        memory_budget_bytes: int = 0,
        max_result_bytes: int = 32 * 1024 * 1024,
        attribute_bytes: int = 32 * 1024,
    ) -> None:
        self.store = store
        self.policy = QueryPolicy(store.lake_dir, attribute_bytes)
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.metrics = metrics
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.max_result_bytes = max_result_bytes
        self.watchdog = MemoryWatchdog(memory_budget_bytes) if memory_budget_bytes else None
        self._running_lock = threading.Lock()
        self._running: list[Watched] = []
        store.add_memory_valve(self.preempt)

    def preempt(self) -> int:
        """Interrupt every running user query (the store's memory valve: ingest and other
        writes come before ad-hoc reads when DuckDB's memory is full). Returns how many."""
        with self._running_lock:
            items = [item for item in self._running if not item.stopped]
            for item in items:
                item.stopped = True
                with contextlib.suppress(duckdb.Error):
                    item.cursor.interrupt()
        return len(items)

    @contextlib.contextmanager
    def _preemptible(self, cur: duckdb.DuckDBPyConnection) -> Iterator[Watched]:
        item = Watched(cur)
        with self._running_lock:
            self._running.append(item)
        try:
            yield item
        finally:
            with self._running_lock:
                self._running.remove(item)

    # -- public ------------------------------------------------------------------------------
    def run(self, sql: str) -> SqlResult:
        """The answer as JSON-safe Python rows, at most ``max_rows`` / ``max_result_bytes``."""
        return self._guarded(sql, self._fetch_rows)

    def run_arrow(
        self, sql: str, *, max_rows: int, max_bytes: int, batch_rows: int = ARROW_BATCH_ROWS
    ) -> ArrowResult:
        """The answer as Arrow record batches streamed from DuckDB (``to_arrow_reader``): no
        Python rows are built. At most ``max_rows`` rows and ``max_bytes`` Arrow bytes are
        kept (``truncated`` beyond); the same sandbox, time limit and memory watchdog."""

        def fetch(cur: duckdb.DuckDBPyConnection, query: str) -> ArrowResult:
            return fetch_arrow(cur, query, max_rows, max_bytes, batch_rows)

        return self._guarded(sql, fetch)

    def _guarded(self, sql: str, fetch: Callable[[duckdb.DuckDBPyConnection, str], _T]) -> _T:
        if not self._slots.acquire(blocking=False):
            self._count("overloaded")
            raise Overloaded("too many concurrent SQL queries; retry shortly", retry_after_s=1)
        try:
            result = self._run(sql, fetch)
        except QueryError as err:
            self._count(err.code)
            raise
        finally:
            self._slots.release()
        self._count("truncated" if getattr(result, "truncated", False) else "ok")
        return result

    # -- execution -----------------------------------------------------------------------------
    def _run(self, sql: str, fetch: Callable[[duckdb.DuckDBPyConnection, str], _T]) -> _T:
        cur = self.store.cursor()
        try:
            if self.policy.check(sql, cur):
                # requests are derived from spans in the background: a query of them sees
                # every committed span. A query of the spans alone does not wait for that
                # work (under ingest it would slow the query and, sharing the cores and the
                # database, the ingest beside it)
                self.store.bring_up_to_date()
            return self._execute(cur, sql, fetch)
        finally:
            cur.close()

    def _fetch_rows(self, cur: duckdb.DuckDBPyConnection, sql: str) -> SqlResult:
        return fetch_rows(cur, sql, self.max_rows, self.max_result_bytes)

    def _execute(
        self,
        cur: duckdb.DuckDBPyConnection,
        sql: str,
        fetch: Callable[[duckdb.DuckDBPyConnection, str], _T],
    ) -> _T:
        fired = threading.Event()

        def _interrupt() -> None:
            fired.set()
            cur.interrupt()

        timer = threading.Timer(self.timeout_s, _interrupt)
        timer.daemon = True
        cur.execute("BEGIN TRANSACTION")
        timer.start()
        watch = self.watchdog.watch(cur) if self.watchdog else contextlib.nullcontext(None)
        try:
            with watch as watched, self._preemptible(cur) as running:
                try:
                    return fetch(cur, sql)
                except (duckdb.Error, pa.ArrowException, OSError) as exc:
                    # (errors met while an Arrow reader streams come as pyarrow's OSError
                    # carrying DuckDB's message)
                    if running.stopped:
                        raise QueryError(
                            "query was interrupted so that ingest could commit: DuckDB's "
                            "memory (--store-memory-mb) was full",
                            code="memory_limit",
                        ) from None
                    if watched is not None and watched.stopped:
                        raise QueryError(
                            "query was interrupted: it grew the server's memory by more than "
                            f"{self.watchdog.budget_bytes // 2**20} MB (--sql-memory-mb)",  # type: ignore[union-attr]
                            code="memory_limit",
                        ) from None
                    if fired.is_set():
                        raise QueryTimeout(
                            f"query exceeded the {self.timeout_s:g}s time limit and was interrupted"
                        ) from None
                    if not isinstance(exc, duckdb.Error):
                        raise translate_text(sql, str(exc), self.store.lake_dir) from None
                    raise translate(sql, exc, self.store.lake_dir) from None
        finally:
            timer.cancel()
            _rollback(cur)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.sql_queries.labels(outcome=outcome).inc()


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        cur.abort()
    with contextlib.suppress(duckdb.Error):  # the engine may have aborted it already
        cur.execute("ROLLBACK")
