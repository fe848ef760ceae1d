"""Read-only, sandboxed SQL over the store (``POST /api/v1/sql``).

Layered defences, outermost first (datasette's ``database.py`` is the model):

1. the request is bounded: text length, and a few concurrent queries at most (429 beyond);
2. exactly ONE statement (``duckdb.extract_statements``), of a read type: SELECT (which is
   also how DuckDB reports DESCRIBE/SHOW/SUMMARIZE/FROM-first) or EXPLAIN of one; everything
   else (PRAGMA, SET/RESET, ATTACH, COPY, INSTALL/LOAD, CREATE, INSERT, ...) is refused;
3. the parse tree (``json_serialize_sql``) is walked: data-modifying CTEs
   (``WITH d AS (DELETE ... RETURNING *) SELECT ...``, which DuckDB types as SELECT) and
   side-effecting or SQL-evaluating table functions are refused;
4. the query runs on its own cursor inside a transaction that is always rolled back, so
   nothing it does can be committed;
5. the engine sandbox set on the database at start-up (``enable_external_access=false``,
   ``allowed_directories=[<lake>/]``, ``lock_configuration=true``): file, network and
   extension access fails in the engine and is reported as ``forbidden``;
6. a time limit (``interrupt()`` from a timer → ``QueryTimeout``) and a row cap (fetch
   ``max_rows + 1``, answer ``truncated: true``).

Errors are typed :class:`QueryError` with a ``code`` (``syntax_error`` with ``position``,
``forbidden``, ``multiple_statements``, ``timeout``, ...).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import duckdb
from prefixscope.collector.store import Store

from prefixscope.errors import Overloaded, QueryError, QueryTimeout
from prefixscope.metrics import Metrics

from .jsonsafe import json_safe_row

MAX_SQL_CHARS = 100_000
#: Table functions refused even inside a SELECT: side effects, or SQL hidden in a string.
FORBIDDEN_FUNCTIONS = frozenset({"checkpoint", "force_checkpoint", "query", "query_table"})
_WRITE_NODE = re.compile(r"^(INSERT|UPDATE|DELETE|MERGE)\w*_NODE$")
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s*(\([^)]*\)\s*)?(ANALY[SZ]E\s+)?", re.IGNORECASE)
_READ_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_FS_DENIED = "file system operations are disabled by configuration"


@dataclass(slots=True)
class SqlResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float


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
    ) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.metrics = metrics
        self._slots = threading.BoundedSemaphore(max_concurrent)

    # -- public ------------------------------------------------------------------------------
    def run(self, sql: str) -> SqlResult:
        if not self._slots.acquire(blocking=False):
            self._count("overloaded")
            raise Overloaded("too many concurrent SQL queries; retry shortly", retry_after_s=1)
        try:
            result = self._run(sql)
        except QueryError as err:
            self._count(err.code)
            raise
        finally:
            self._slots.release()
        self._count("truncated" if result.truncated else "ok")
        return result

    # -- checks --------------------------------------------------------------------------------
    def check(self, sql: str, cur: duckdb.DuckDBPyConnection) -> None:
        """Raise QueryError unless ``sql`` is exactly one read-only statement."""
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
        _check_tree(cur, inner)

    # -- execution -----------------------------------------------------------------------------
    def _run(self, sql: str) -> SqlResult:
        cur = self.store.cursor()
        try:
            self.check(sql, cur)
            return self._execute(cur, sql)
        finally:
            cur.close()

    def _execute(self, cur: duckdb.DuckDBPyConnection, sql: str) -> SqlResult:
        fired = threading.Event()

        def _interrupt() -> None:
            fired.set()
            cur.interrupt()

        timer = threading.Timer(self.timeout_s, _interrupt)
        timer.daemon = True
        started = time.perf_counter()
        cur.execute("BEGIN TRANSACTION")
        timer.start()
        try:
            cur.execute(sql)
            description = cur.description or []
            raw = cur.fetchmany(self.max_rows + 1)
        except duckdb.Error as exc:
            if fired.is_set():
                raise QueryTimeout(
                    f"query exceeded the {self.timeout_s:g}s time limit and was interrupted"
                ) from None
            raise _translate(sql, exc, self.store) from None
        finally:
            timer.cancel()
            _rollback(cur)
        truncated = len(raw) > self.max_rows
        rows = [json_safe_row(r) for r in raw[: self.max_rows]]
        return SqlResult(
            columns=[d[0] for d in description],
            types=[str(d[1]) for d in description],
            rows=rows,
            truncated=truncated,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
        )

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.sql_queries.labels(outcome=outcome).inc()


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


def _check_tree(cur: duckdb.DuckDBPyConnection, sql: str) -> None:
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
    for node in nodes:
        if node.get("class") == "FUNCTION" and id(node) not in table_functions:
            _check_materializing(node)
        ntype = node.get("type")
        if isinstance(ntype, str) and _WRITE_NODE.match(ntype):
            verb = ntype.split("_", 1)[0]
            raise QueryError(
                f"data-modifying {verb} inside a query is not allowed", code="forbidden"
            )
        fname = node.get("function_name")
        if isinstance(fname, str) and fname.lower() in FORBIDDEN_FUNCTIONS:
            raise QueryError(f"function {fname}() is not allowed", code="forbidden")


#: Scalar functions that materialise a list or string of a size given by their arguments.
#: The time limit cannot stop one huge allocation, so the size must be a small constant.
MATERIALIZING_FUNCTIONS = frozenset({"range", "generate_series", "repeat", "list_resize"})
MAX_MATERIALIZED = 1_000_000


def _int_literal(arg: Any) -> int | None:
    expr = arg.get("expression") if isinstance(arg, dict) else None
    if not isinstance(expr, dict) or expr.get("class") != "CONSTANT":
        return None
    lit = expr.get("literal") or {}
    if lit.get("kind") != "INTEGER":
        return None
    try:
        return int(lit.get("text", ""))
    except ValueError:
        return None


def _check_materializing(node: dict[str, Any]) -> None:
    name = str(node.get("function_name", "")).lower()
    if name not in MATERIALIZING_FUNCTIONS:
        return
    args = node.get("arguments") or []
    if name in ("repeat", "list_resize"):
        count = _int_literal(args[1]) if len(args) > 1 else None
        size = None if count is None else abs(count)
    else:
        nums = [_int_literal(a) for a in args]
        if not nums or any(n is None for n in nums):
            size = None
        else:
            start, stop, step = (0, nums[0], 1) if len(nums) == 1 else (*nums[:2], 1)
            if len(nums) > 2:
                step = nums[2] or 1
            size = abs(stop - start) // abs(step)  # type: ignore[operator]
    if size is None or size > MAX_MATERIALIZED:
        raise QueryError(
            f"{name}() as a value needs constant arguments and at most "
            f"{MAX_MATERIALIZED:,} elements (use it as a table function in FROM instead)",
            code="forbidden",
        )


def _walk(obj: Any) -> Any:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


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
    if isinstance(exc, duckdb.InterruptException):
        return QueryTimeout("query was interrupted")
    if isinstance(exc, duckdb.ParserException):
        return QueryError(head, code="syntax_error", position=error_position(sql, message))
    binder = isinstance(exc, duckdb.BinderException | duckdb.CatalogException)
    code = "binder_error" if binder else "query_error"
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
