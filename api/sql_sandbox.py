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
   ``range`` as a value, format widths, ...) and on concatenation (``||``, ``concat``,
   ``string_agg``, ..., sized from their inputs' bounds), :mod:`.sql_sizes`;
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
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from prefixscope.collector.storage.store import Store
from prefixscope.errors import Overloaded, QueryError, QueryTimeout
from prefixscope.metrics import Metrics

from .jsonsafe import json_safe_row
from .sql_files import check_files, file_functions
from .sql_sizes import _walk, check_amplification, check_concatenation

MAX_SQL_CHARS = 100_000
#: Table functions refused even inside a SELECT: side effects, or SQL hidden in a string.
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "checkpoint",
        "force_checkpoint",
        "query",
        "query_table",
        # runs a serialized statement: none of the checks below would see it
        "json_execute_serialized_sql",
        # side effects on the engine (files, logging, profiling state)
        "enable_logging",
        "disable_logging",
        "enable_profiling",
        "disable_profiling",
        "truncate_duckdb_logs",
    }
)
_WRITE_NODE = re.compile(r"^(INSERT|UPDATE|DELETE|MERGE)\w*_NODE$")
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s*(\([^)]*\)\s*)?(ANALY[SZ]E\s+)?", re.IGNORECASE)
_READ_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_FS_DENIED = "file system operations are disabled by configuration"


#: the relations derived from spans by the request resolver (``collector/spans/requests.py``): a
#: query reading one brings them up to date first
REQUEST_RELATIONS = frozenset({"requests", "requests_base", "request_rows"})


@dataclass(slots=True)
class SqlResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float


@dataclass(slots=True)
class ArrowResult:
    """A query's answer as Arrow record batches, straight from DuckDB (no Python rows)."""

    schema: pa.Schema
    batches: list[pa.RecordBatch]
    #: DuckDB's type of each column (``TIMESTAMP WITH TIME ZONE``, ``JSON``, ...)
    types: list[str]
    truncated: bool
    #: which cap cut the answer: ``"rows"`` or ``"bytes"`` (None when complete)
    truncated_by: str | None
    num_rows: int
    nbytes: int
    elapsed_ms: float


#: rows per record batch read from DuckDB: one vector, so the byte cap is checked at least
#: every 2,048 rows (one vector's values are bounded: see MAX_AMPLIFIED_BYTES)
ARROW_BATCH_ROWS = 2_048
#: ... and coalesced into batches of up to this many rows / bytes for the writers
COALESCE_ROWS = 65_536
COALESCE_BYTES = 16 * 2**20
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
        #: the ingest's bound on one attribute value: what a column of one attribute holds
        self.attribute_bytes = attribute_bytes
        self._readers: frozenset[str] | None = None
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.metrics = metrics
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.max_result_bytes = max_result_bytes
        self.watchdog = MemoryWatchdog(memory_budget_bytes) if memory_budget_bytes else None
        self._canonical: dict[str, str] | None = None
        self._running_lock = threading.Lock()
        self._running: list[_Watched] = []
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
    def _preemptible(self, cur: duckdb.DuckDBPyConnection) -> Iterator[_Watched]:
        item = _Watched(cur)
        with self._running_lock:
            self._running.append(item)
        try:
            yield item
        finally:
            with self._running_lock:
                self._running.remove(item)

    def _canonical_names(self, cur: duckdb.DuckDBPyConnection) -> dict[str, str]:
        """Every function name (lower case) → the function it is an alias of."""
        if self._canonical is None:
            rows = cur.execute(
                "SELECT DISTINCT lower(function_name), lower(coalesce(alias_of, function_name)) "
                "FROM duckdb_functions()"
            ).fetchall()
            self._canonical = {str(a): str(b) for a, b in rows}
        return self._canonical

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
            return _fetch_arrow(cur, query, max_rows, max_bytes, batch_rows)

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

    # -- checks --------------------------------------------------------------------------------
    def check(self, sql: str, cur: duckdb.DuckDBPyConnection) -> bool:
        """Raise QueryError unless ``sql`` is exactly one read-only statement; return whether
        it reads the derived request relations (:data:`REQUEST_RELATIONS`)."""
        if len(sql) > MAX_SQL_CHARS:
            raise QueryError(f"query is longer than {MAX_SQL_CHARS} characters", code="too_long")
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise _syntax_error(cur, sql, exc) from None
        if not statements:
            raise QueryError("no SQL statement given", code="empty")
        if len(statements) > 1:
            raise QueryError(
                f"exactly one statement is allowed, got {len(statements)}",
                code="multiple_statements",
            )
        stype = statements[0].type
        if stype not in _READ_TYPES:
            raise QueryError(
                f"{_verb(statements[0].query, stype.name)} statements are not allowed: "
                "only read-only queries "
                "(SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE)",
                code="forbidden",
            )
        inner = sql
        if stype == duckdb.StatementType.EXPLAIN:
            match = _EXPLAIN.match(sql)
            inner = sql[match.end() :] if match else sql
        if self._readers is None:
            self._readers = file_functions(cur)
        nodes = _check_tree(cur, inner, self._canonical_names(cur), self.attribute_bytes)
        check_files(nodes, self._readers, self.store.lake_dir)
        tables = {
            str(n.get("table_name", "")).lower() for n in nodes if n.get("type") == "BASE_TABLE"
        }
        return bool(tables & REQUEST_RELATIONS)

    # -- execution -----------------------------------------------------------------------------
    def _run(self, sql: str, fetch: Callable[[duckdb.DuckDBPyConnection, str], _T]) -> _T:
        cur = self.store.cursor()
        try:
            if self.check(sql, cur):
                # requests are derived from spans in the background: a query of them sees
                # every committed span. A query of the spans alone does not wait for that
                # work (under ingest it would slow the query and, sharing the cores and the
                # database, the ingest beside it)
                self.store.bring_up_to_date()
            return self._execute(cur, sql, fetch)
        finally:
            cur.close()

    def _fetch_rows(self, cur: duckdb.DuckDBPyConnection, sql: str) -> SqlResult:
        started = time.perf_counter()
        cur.execute(sql)
        description = cur.description or []
        rows, truncated = self._fetch(cur)
        return SqlResult(
            columns=[d[0] for d in description],
            types=[str(d[1]) for d in description],
            rows=rows,
            truncated=truncated,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
        )

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
                        raise _translate_text(sql, str(exc), self.store) from None
                    raise _translate(sql, exc, self.store) from None
        finally:
            timer.cancel()
            _rollback(cur)

    def _fetch(self, cur: duckdb.DuckDBPyConnection) -> tuple[list[list[Any]], bool]:
        """Rows up to ``max_rows`` and ``max_result_bytes``, counted while they stream."""
        rows: list[list[Any]] = []
        size = 0
        while True:
            chunk = cur.fetchmany(min(1024, self.max_rows + 1 - len(rows)))
            if not chunk:
                return rows, False
            for raw in chunk:
                if len(rows) >= self.max_rows:
                    return rows, True
                row = json_safe_row(raw)
                size += _approx_bytes(row)
                if size > self.max_result_bytes:
                    return rows, True
                rows.append(row)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.sql_queries.labels(outcome=outcome).inc()


def _fetch_arrow(
    cur: duckdb.DuckDBPyConnection, sql: str, max_rows: int, max_bytes: int, batch_rows: int
) -> ArrowResult:
    """Record batches from DuckDB's Arrow stream until ``max_rows`` rows or ``max_bytes``
    Arrow bytes (the batch that crosses the byte cap is cut to the rows that fit)."""
    started = time.perf_counter()
    rel = cur.sql(sql)
    types = [str(t) for t in rel.types]
    reader = rel.to_arrow_reader(batch_rows)
    out = _Coalescer(reader.schema)
    rows = size = 0
    truncated_by: str | None = None
    for batch in reader:
        if batch.num_rows == 0:
            continue
        if rows >= max_rows:
            truncated_by = "rows"
            break
        part = batch.slice(0, max_rows - rows) if rows + batch.num_rows > max_rows else batch
        if size + part.nbytes > max_bytes:
            part = part.slice(0, _rows_within(part, max_bytes - size))
            truncated_by = "bytes"
        if part.num_rows:
            out.add(part)
            rows += part.num_rows
            size += part.nbytes
        if truncated_by is None and part.num_rows < batch.num_rows:
            truncated_by = "rows"
        if truncated_by is not None:
            break
    return ArrowResult(
        schema=reader.schema,
        batches=out.finish(),
        types=types,
        truncated=truncated_by is not None,
        truncated_by=truncated_by,
        num_rows=rows,
        nbytes=size,
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
    )


class _Coalescer:
    """Joins DuckDB's small batches into batches of up to COALESCE_ROWS / COALESCE_BYTES
    (fewer, larger batches make the writers' per-batch work negligible)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.done: list[pa.RecordBatch] = []
        self.pending: list[pa.RecordBatch] = []
        self.rows = self.bytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self.rows >= COALESCE_ROWS or self.bytes >= COALESCE_BYTES:
            self._flush()

    def _flush(self) -> None:
        if len(self.pending) == 1:
            self.done.append(self.pending[0])
        elif self.pending:
            table = pa.Table.from_batches(self.pending, self.schema).combine_chunks()
            self.done.extend(table.to_batches())
        self.pending, self.rows, self.bytes = [], 0, 0

    def finish(self) -> list[pa.RecordBatch]:
        self._flush()
        return self.done


def _rows_within(batch: pa.RecordBatch, budget: int) -> int:
    """The most leading rows of ``batch`` whose Arrow bytes fit in ``budget``."""
    lo, hi = 0, batch.num_rows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if batch.slice(0, mid).nbytes <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _approx_bytes(value: Any) -> int:
    if isinstance(value, str | bytes):
        return len(value) + 8
    if isinstance(value, list | tuple):
        return 8 + sum(_approx_bytes(v) for v in value)
    if isinstance(value, dict):
        return 8 + sum(_approx_bytes(k) + _approx_bytes(v) for k, v in value.items())
    return 8


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * _PAGE


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(slots=True)
class _Watched:
    cursor: duckdb.DuckDBPyConnection
    stopped: bool = False


class MemoryWatchdog:
    """Interrupts running user queries once the process's resident set has grown by more
    than ``budget_bytes`` since the first of them started (polled every 10 ms)."""

    def __init__(self, budget_bytes: int, interval_s: float = 0.01) -> None:
        self.budget_bytes = budget_bytes
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._running: list[_Watched] = []
        self._baseline = 0
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, cur: duckdb.DuckDBPyConnection) -> Iterator[_Watched]:
        item = _Watched(cur)
        with self._lock:
            if not self._running:
                self._baseline = _rss_bytes()
            self._running.append(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sql-watchdog", daemon=True)
                self._thread.start()
        try:
            yield item
        finally:
            with self._lock:
                self._running.remove(item)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    self._thread = None
                    return
                over = _rss_bytes() - self._baseline > self.budget_bytes
                if over:
                    for item in self._running:
                        if not item.stopped:
                            item.stopped = True
                            with contextlib.suppress(duckdb.Error):
                                item.cursor.interrupt()
            time.sleep(self.interval_s)


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        cur.abort()
    with contextlib.suppress(duckdb.Error):  # the engine may have aborted it already
        cur.execute("ROLLBACK")


def _serialize(cur: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    row = cur.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    return json.loads(row[0]) if row else {"error": True, "error_message": "cannot parse"}


def _syntax_error(cur: duckdb.DuckDBPyConnection, sql: str, exc: Exception) -> QueryError:
    tree = _serialize(cur, sql)
    if tree.get("error") and tree.get("error_type") == "parser":
        position = tree.get("position")
        pos = int(position) if position is not None and str(position).isdigit() else None
        return QueryError(
            f"syntax error: {tree.get('error_message')}", code="syntax_error", position=pos
        )
    return QueryError(f"syntax error: {_first_line(str(exc))}", code="syntax_error")


def _check_tree(
    cur: duckdb.DuckDBPyConnection, sql: str, canonical: dict[str, str], attribute_bytes: int
) -> list[dict[str, Any]]:
    """Refuse writes, forbidden functions and values too large to build; return the tree's
    nodes (every dict in it) for the file check."""
    tree = _serialize(cur, sql)
    if tree.get("error"):
        if tree.get("error_type") == "parser":
            raise _syntax_error(cur, sql, ValueError(tree.get("error_message", "")))
        raise QueryError(
            f"statement is not a plain read-only query: {tree.get('error_message')}",
            code="forbidden",
        )
    nodes = list(_walk(tree.get("statements", [])))
    table_functions = {
        id(n["function"])
        for n in nodes
        if n.get("type") == "TABLE_FUNCTION" and isinstance(n.get("function"), dict)
    }
    scalar_nodes = [n for n in nodes if id(n) not in table_functions]
    check_amplification(scalar_nodes, canonical)
    check_concatenation(scalar_nodes, canonical, attribute_bytes)
    for node in nodes:
        ntype = node.get("type")
        if isinstance(ntype, str) and _WRITE_NODE.match(ntype):
            verb = ntype.split("_", 1)[0]
            raise QueryError(
                f"data-modifying {verb} inside a query is not allowed", code="forbidden"
            )
        fname = node.get("function_name")
        if isinstance(fname, str) and fname.lower() in FORBIDDEN_FUNCTIONS:
            raise QueryError(f"function {fname}() is not allowed", code="forbidden")
    return nodes


def _translate(sql: str, exc: duckdb.Error, store: Store) -> QueryError:
    message = str(exc)
    head = _first_line(message)
    if isinstance(exc, duckdb.PermissionException) or _FS_DENIED in message:
        if "extension" in message.lower():
            return QueryError("loading or installing extensions is not allowed", code="forbidden")
        return QueryError(
            "file and network access is not allowed; only Parquet files under the data "
            f"lake ({store.lake_dir}/) can be read. Engine said: {head}",
            code="forbidden",
        )
    if isinstance(exc, duckdb.OutOfMemoryException):
        return QueryError(
            f"query needs more memory than the store allows (--store-memory-mb): {head}",
            code="memory_limit",
        )
    if isinstance(exc, duckdb.InterruptException):
        return QueryTimeout("query was interrupted")
    if isinstance(exc, duckdb.ParserException):
        return QueryError(head, code="syntax_error", position=error_position(sql, message))
    binder = isinstance(exc, duckdb.BinderException | duckdb.CatalogException)
    code = "binder_error" if binder else "query_error"
    return QueryError(head, code=code, position=error_position(sql, message))


#: DuckDB's error-type prefix ("Conversion Error: ...") → the sandbox's error code
_TEXT_CODES = {
    "Out of Memory Error": "memory_limit",
    "Parser Error": "syntax_error",
    "Binder Error": "binder_error",
    "Catalog Error": "binder_error",
}


def _translate_text(sql: str, message: str, store: Store) -> QueryError:
    """A QueryError for an error that reached us as text (DuckDB's message inside pyarrow's
    exception, when the query failed while its Arrow stream was read)."""
    head = _first_line(message)
    kind = head.split(":", 1)[0]
    if kind == "INTERRUPT Error":
        return QueryTimeout("query was interrupted")
    if kind == "Permission Error" or _FS_DENIED in message:
        return QueryError(
            "file and network access is not allowed; only Parquet files under the data "
            f"lake ({store.lake_dir}/) can be read. Engine said: {head}",
            code="forbidden",
        )
    code = _TEXT_CODES.get(kind, "query_error")
    if code == "memory_limit":
        return QueryError(
            f"query needs more memory than the store allows (--store-memory-mb): {head}",
            code=code,
        )
    return QueryError(head, code=code, position=error_position(sql, message))


def _verb(text: str, fallback: str) -> str:
    """The statement's leading keyword (INSTALL and LOAD share one statement type)."""
    match = re.match(r"\s*([A-Za-z]+)", text)
    return match.group(1).upper() if match else fallback


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "query failed"


_LINE = re.compile(r"^LINE (\d+): (.*)$")


def error_position(sql: str, message: str) -> int | None:
    """0-based character offset of the error in ``sql``, from DuckDB's ``LINE n:`` caret."""
    lines = message.splitlines()
    for i, text in enumerate(lines[:-1]):
        match = _LINE.match(text)
        if not match:
            continue
        caret = lines[i + 1].find("^")
        if caret < 0:
            return None
        lineno = int(match.group(1))
        context = match.group(2)
        col = caret - (len(text) - len(context))
        if context.startswith("..."):
            context, col = context[3:], col - 3
        context = context.removesuffix("...")
        sql_lines = sql.split("\n")
        if not 1 <= lineno <= len(sql_lines) or col < 0:
            return None
        start = sql_lines[lineno - 1].find(context[: max(1, min(len(context), 40))])
        if start < 0:
            return None
        offset = sum(len(s) + 1 for s in sql_lines[: lineno - 1])
        return offset + start + col
    return None
