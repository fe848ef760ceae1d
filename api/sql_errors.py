"""DuckDB's errors as the sandbox's typed :class:`~prefixscope.errors.QueryError`, whose
``code`` names what stopped the query (``forbidden``, ``memory_limit``, ``syntax_error`` with
the error's ``position`` in the query, ...)."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from prefixscope.errors import QueryError, QueryTimeout

_FS_DENIED = "file system operations are disabled by configuration"


def translate(sql: str, exc: duckdb.Error, lake_dir: Path) -> QueryError:
    """The QueryError for a DuckDB error the query met."""
    message = str(exc)
    head = first_line(message)
    if isinstance(exc, duckdb.PermissionException) or _FS_DENIED in message:
        if "extension" in message.lower():
            return QueryError("loading or installing extensions is not allowed", code="forbidden")
        return QueryError(
            "file and network access is not allowed; only Parquet files under the data "
            f"lake ({lake_dir}/) can be read. Engine said: {head}",
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


def translate_text(sql: str, message: str, lake_dir: Path) -> QueryError:
    """A QueryError for an error that reached us as text (DuckDB's message inside pyarrow's
    exception, when the query failed while its Arrow stream was read)."""
    head = first_line(message)
    kind = head.split(":", 1)[0]
    if kind == "INTERRUPT Error":
        return QueryTimeout("query was interrupted")
    if kind == "Permission Error" or _FS_DENIED in message:
        return QueryError(
            "file and network access is not allowed; only Parquet files under the data "
            f"lake ({lake_dir}/) can be read. Engine said: {head}",
            code="forbidden",
        )
    code = _TEXT_CODES.get(kind, "query_error")
    if code == "memory_limit":
        return QueryError(
            f"query needs more memory than the store allows (--store-memory-mb): {head}",
            code=code,
        )
    return QueryError(head, code=code, position=error_position(sql, message))


def first_line(message: str) -> str:
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
