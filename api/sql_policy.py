"""What a user's query may be (``POST /api/v1/sql``): exactly one statement, of a read type;
no data-modifying CTE, no side-effecting or SQL-evaluating function, no value too large to
build (:mod:`.sql_sizes`) and no file outside the lake's table folders (:mod:`.sql_files`),
all read from DuckDB's own parse tree (``json_serialize_sql``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb

from prefixscope.errors import QueryError

from . import sql_tree as parse_tree
from .sql_bounds import check_bounds
from .sql_errors import first_line
from .sql_files import check_files, file_functions
from .sql_sizes import FIXED_WIDTH_TYPES, check_amplification

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


#: the relations derived from spans by the request resolver (``collector/spans/requests.py``): a
#: query reading one brings them up to date first
REQUEST_RELATIONS = frozenset({"requests", "requests_base", "request_rows"})


class QueryPolicy:
    """Checks queries for one store: its lake folder and the ingest's bound on one attribute
    value (what a column of one attribute can hold). Caches what it learns from the engine
    (function aliases, the functions that read files)."""

    def __init__(self, lake_dir: Path, attribute_bytes: int) -> None:
        self.lake_dir = lake_dir
        self.attribute_bytes = attribute_bytes
        self._readers: frozenset[str] | None = None
        self._canonical: dict[str, str] | None = None
        self._fixed_results: frozenset[str] | None = None

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
        nodes = _check_tree(
            cur, inner, self._canonical_names(cur), self.attribute_bytes, self._fixed(cur)
        )
        check_files(nodes, self._readers, self.lake_dir)
        tables = {
            str(n.get("table_name", "")).lower() for n in nodes if n.get("type") == "BASE_TABLE"
        }
        return bool(tables & REQUEST_RELATIONS)

    def _canonical_names(self, cur: duckdb.DuckDBPyConnection) -> dict[str, str]:
        """Every function name (lower case) → the function it is an alias of."""
        if self._canonical is None:
            rows = cur.execute(
                "SELECT DISTINCT lower(function_name), lower(coalesce(alias_of, function_name)) "
                "FROM duckdb_functions()"
            ).fetchall()
            self._canonical = {str(a): str(b) for a, b in rows}
        return self._canonical

    def _fixed(self, cur: duckdb.DuckDBPyConnection) -> frozenset[str]:
        """The functions (canonical names) every overload of which returns a number, time,
        boolean or id: their result is a few bytes whatever their arguments."""
        if self._fixed_results is None:
            rows = cur.execute(
                "SELECT lower(coalesce(alias_of, function_name)), list(DISTINCT return_type) "
                "FROM duckdb_functions() WHERE function_type IN ('scalar', 'aggregate') "
                "GROUP BY ALL"
            ).fetchall()
            self._fixed_results = frozenset(
                str(name) for name, types in rows if types and all(_fixed_type(t) for t in types)
            )
        return self._fixed_results


def _fixed_type(name: object) -> bool:
    text = str(name or "").upper()
    return text.split("(", 1)[0] in FIXED_WIDTH_TYPES or text in (
        "TIME_NS",
        "TIMESTAMP_NS",
        "TIMESTAMPTZ_NS",
    )


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
    return QueryError(f"syntax error: {first_line(str(exc))}", code="syntax_error")


def _check_tree(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    canonical: dict[str, str],
    attribute_bytes: int,
    fixed_results: frozenset[str],
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
    nodes = list(parse_tree.walk(tree.get("statements", [])))
    table_functions = {
        id(n["function"])
        for n in nodes
        if n.get("type") == "TABLE_FUNCTION" and isinstance(n.get("function"), dict)
    }
    scalar_nodes = [n for n in nodes if id(n) not in table_functions]
    check_amplification(scalar_nodes, canonical)
    check_bounds(scalar_nodes, canonical, attribute_bytes, fixed_results)
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


def _verb(text: str, fallback: str) -> str:
    """The statement's leading keyword (INSTALL and LOAD share one statement type)."""
    match = re.match(r"\s*([A-Za-z]+)", text)
    return match.group(1).upper() if match else fallback
