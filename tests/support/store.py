"""Reading a server's store back once it has stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def query_store(data_dir: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Read the DuckDB file directly (only while no server owns it)."""
    con = duckdb.connect(str(data_dir / "prefixscope.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
