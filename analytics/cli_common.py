"""Shared CLI options and helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import duckdb
import orjson
from rich.console import Console

DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("prefixscope-data"),
    show_default=True,
    help="PrefixScope data directory (holds prefixscope.duckdb). Stop `prefixscope serve` "
    "first, or use the HTTP API, since only one process may open the store.",
)
SINCE = click.option("--since", default=None, help="Window start: ISO-8601 time or age (24h, 7d).")
UNTIL = click.option("--until", default=None, help="Window end (exclusive): ISO-8601 or age.")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
console = Console()


@contextmanager
def open_store(data_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    from prefixscope.collector.store import Store

    try:
        store = Store(data_dir)
    except duckdb.IOException as exc:
        raise click.ClickException(f"cannot open the store in {data_dir}: {exc}") from None
    try:
        yield store.cursor()
    finally:
        store.close()


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_json(obj: Any) -> None:
    click.echo(orjson.dumps(obj, default=str, option=orjson.OPT_INDENT_2).decode())
