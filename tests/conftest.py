"""Shared fixtures: the real server on 127.0.0.1, and reading its store back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from .serverproc import ServerProcess


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``start_server("--token", "t")`` starts a fresh server in a temp data dir."""
    started: list[ServerProcess] = []

    def _start(
        *args: str, data_dir: Path | None = None, env: dict[str, str] | None = None, **kw: Any
    ) -> ServerProcess:
        d = data_dir or tmp_path / f"data{len(started)}"
        srv = ServerProcess(d, list(args), env or {}, **kw)
        started.append(srv)
        return srv.start()

    yield _start
    for srv in started:
        try:
            srv.stop()
        except Exception:
            srv.kill()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A running server with default settings on free ports."""
    return start_server()


def query_store(data_dir: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Read the DuckDB file directly (only while no server owns it)."""
    con = duckdb.connect(str(data_dir / "prefixscope.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
