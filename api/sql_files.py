"""Which files the SQL sandbox may read: Parquet files under the lake's table folders only.

DuckDB's own sandbox (``enable_external_access=false`` with ``allowed_directories`` set to the
lake) still lets a query read the files of the attached database: the store's
``prefixscope.duckdb``, its WAL and its spill folder. So every file a query names is checked
before it runs, from the parse tree: the path arguments of file-reading table functions
(every table function whose first parameter is a path, a list of paths or a glob pattern:
``read_parquet``, ``read_blob``, ``read_text``, ``read_csv``, ``glob``, ``parquet_metadata``,
``read_duckdb``, ... resolved through ``duckdb_functions()``) and ``FROM 'file'`` scans. A
path must be a constant; after resolving ``..`` and links it must lie in a table folder of
the lake (``<lake>/<table>/``) and name ``.parquet`` files, and every file a glob matches
now must resolve there too (a link inside the lake cannot point out of it).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import duckdb

from prefixscope.errors import QueryError

#: A table function reads files when its first parameter is one of these.
PATH_PARAMETERS = frozenset({"path", "paths", "pattern", "file", "files"})
_GLOB_CHARS = frozenset("*?[")


def file_functions(cur: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """Every table function (lower case, aliases included) that takes a path first."""
    rows = cur.execute(
        "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
        "WHERE function_type = 'table' AND len(parameters) > 0 "
        "AND lower(parameters[1]) IN ('path', 'paths', 'pattern', 'file', 'files')"
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def _refuse(path: str, lake: Path, why: str) -> QueryError:
    return QueryError(
        f"file and network access is not allowed: {path!r} ({why}); only Parquet files under "
        f"the data lake's table folders ({lake}/<table>/) can be read",
        code="forbidden",
    )


def _constant_paths(expr: dict[str, Any] | None) -> list[str] | None:
    """The string constants of a path argument (one, or a list of them); None otherwise."""
    if not isinstance(expr, dict):
        return None
    if expr.get("class") == "CONSTANT":
        lit = expr.get("literal") or {}
        return [str(lit.get("text", ""))] if lit.get("kind") == "STRING" else None
    if expr.get("class") == "FUNCTION" and str(expr.get("function_name")).lower() == "list_value":
        out: list[str] = []
        for arg in expr.get("arguments") or expr.get("children") or []:
            inner = _constant_paths(arg.get("expression") if "expression" in arg else arg)
            if inner is None:
                return None
            out.extend(inner)
        return out
    return None


def check_path(path: str, lake: Path) -> None:
    """Raise ``forbidden`` unless ``path`` (a file or a glob) names Parquet files in a table
    folder of ``lake`` (resolved: ``..`` and links followed)."""
    if "://" in path or path.startswith("~") or "{" in path:
        raise _refuse(path, lake, "a URL, a home folder or a brace pattern")
    lake = Path(os.path.realpath(lake))
    full = Path(os.path.abspath(path))  # relative to the server's working folder, as DuckDB
    parts = full.parts
    cut = next((i for i, p in enumerate(parts) if _GLOB_CHARS & set(p)), len(parts))
    if any(p == ".." for p in parts[cut:]):
        raise _refuse(path, lake, "'..' inside a pattern")
    base = Path(os.path.realpath(Path(*parts[:cut]))) if cut else Path("/")
    target = base.joinpath(*parts[cut:])
    try:
        rel = target.relative_to(lake)
    except ValueError:
        raise _refuse(path, lake, "outside the lake") from None
    if len(rel.parts) < 2 or rel.parts[0].startswith((".", "_")) or _GLOB_CHARS & set(rel.parts[0]):
        raise _refuse(path, lake, "not inside one table folder of the lake")
    if not rel.parts[-1].endswith(".parquet"):
        raise _refuse(path, lake, "not .parquet files")
    table = lake / rel.parts[0]
    for match in glob.glob(str(target), recursive=True) if cut < len(parts) else [str(target)]:
        real = Path(os.path.realpath(match))
        if not real.is_relative_to(table) or not real.name.endswith(".parquet"):
            raise _refuse(path, lake, f"{match} resolves outside its table folder")


def check_files(nodes: list[dict[str, Any]], readers: frozenset[str], lake: Path) -> None:
    """Check every file a parse tree names (``nodes``: all of its dicts)."""
    for node in nodes:
        ntype = node.get("type")
        if ntype == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if "/" in name or "." in name or _GLOB_CHARS & set(name):
                check_path(name, lake)  # FROM 'file': a replacement scan reads it
            continue
        if ntype != "TABLE_FUNCTION" or not isinstance(node.get("function"), dict):
            continue
        fn = node["function"]
        name = str(fn.get("function_name", "")).lower()
        if name not in readers:
            continue
        args = fn.get("arguments") or fn.get("children") or []
        first = args[0] if args else None
        if isinstance(first, dict) and "expression" in first:
            first = first["expression"]
        paths = _constant_paths(first)
        if not paths:
            raise QueryError(
                f"{name}() needs constant file paths here (a computed path could be any file)",
                code="forbidden",
            )
        for path in paths:
            check_path(path, lake)
