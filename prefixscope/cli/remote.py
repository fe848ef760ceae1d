"""What the commands that talk to a running server share (``sql``, ``alerts``): the server
options, the client made from them, errors as click errors, rows as a table."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from prefixscope.client import TOKEN_ENV, URL_ENV, Answer, BadQuery, Client, ClientError

#: output file suffix → format, when --format is not given
SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".arrow": "arrow",
    ".arrows": "arrow",
}
FORMATS = ["table", "csv", "json", "ndjson", "parquet", "arrow"]
BINARY = {"parquet", "arrow"}


def server_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Seconds to wait for the server's answer (default 60).",
    )(func)
    func = click.option(
        "--token",
        envvar=TOKEN_ENV,
        show_envvar=True,
        default=None,
        help="API token (read scope; write scope for ack).",
    )(func)
    return click.option(
        "--server",
        envvar=URL_ENV,
        show_envvar=True,
        default=None,
        help="The server's base URL [default: http://127.0.0.1:4318].",
    )(func)


def make_client(
    ctx: click.Context, server: str | None, token: str | None, timeout: float | None
) -> Client:
    """Options of the subcommand first, then those given to the group."""
    parent = ctx.obj if isinstance(ctx.obj, dict) else {}
    try:
        return Client(
            server or parent.get("server"),
            token=token or parent.get("token"),
            timeout=timeout or parent.get("timeout") or 60.0,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from None


def click_error(err: ClientError, query: str | None = None) -> click.ClickException:
    text = str(err)
    if isinstance(err, BadQuery) and query is not None and err.position is not None:
        line_start = query.rfind("\n", 0, err.position) + 1
        line_end = query.find("\n", err.position)
        line = query[line_start : line_end if line_end >= 0 else len(query)]
        text += f"\n  {line}\n  {' ' * (err.position - line_start)}^"
    return click.ClickException(text)


def warn_truncated(answer: Answer, export: bool) -> None:
    """Say on stderr that a server limit cut the answer, and which one."""
    if not answer.truncated:
        return
    flags = {
        "rows": "--sql-export-max-rows" if export else "--sql-max-rows",
        "bytes": "--sql-export-max-mb" if export else "--sql-max-result-mb",
    }
    by = answer.truncated_by or "rows"
    click.echo(
        f"prefixscope: warning: the answer was cut at {answer.rows} rows by the server's "
        f"{'row' if by == 'rows' else 'size'} limit ({flags.get(by, by)}); aggregate in SQL, "
        "add a WHERE or LIMIT, or raise the limit",
        err=True,
    )


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def print_rows(body: dict[str, Any], file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", show_lines=False)
    for name, typ in zip(body["columns"], body.get("types") or [""] * len(body["columns"])):
        numeric = any(t in typ for t in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL"))
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in body["rows"]:
        table.add_row(*[_cell(v) for v in row])
    console = Console(file=file) if file is not None else Console()
    console.print(table)
    n = len(body["rows"])
    console.print(f"{n} row{'s' if n != 1 else ''}" + (" (truncated)" if body["truncated"] else ""))
