"""``prefixscope sql`` and ``prefixscope alerts``: a running server, through
:class:`prefixscope.client.Client` (registered by :mod:`prefixscope.cli`)."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
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


def _client(
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


def _fail(err: ClientError, query: str | None = None) -> click.ClickException:
    text = str(err)
    if isinstance(err, BadQuery) and query is not None and err.position is not None:
        line_start = query.rfind("\n", 0, err.position) + 1
        line_end = query.find("\n", err.position)
        line = query[line_start : line_end if line_end >= 0 else len(query)]
        text += f"\n  {line}\n  {' ' * (err.position - line_start)}^"
    return click.ClickException(text)


def _warn_truncated(answer: Answer, export: bool) -> None:
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


@click.command("sql")
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="table (a terminal's default), csv (default when piped), json (the API's JSON "
    "answer), ndjson, parquet or arrow (both need -o). Default from -o's suffix.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the answer to this file (written whole or not at all).",
)
@server_options
def sql_command(
    query: str,
    fmt: str | None,
    output: Path | None,
    server: str | None,
    token: str | None,
    timeout: float | None,
) -> None:
    """Run one read-only SQL query on a running server (QUERY, or - to read it from stdin).

    Tables: spans, requests, scores, feedback, alerts, prefixes (docs/DESIGN.md). The table
    and json formats hold at most --sql-max-rows rows; csv, ndjson, parquet and arrow at most
    --sql-export-max-rows (server settings); a cut answer is said on stderr."""
    if query == "-":
        query = sys.stdin.read()
    if fmt is None:
        if output is not None:
            fmt = SUFFIX_FORMATS.get(output.suffix.lower(), "csv")
        else:
            fmt = "table" if sys.stdout.isatty() else "csv"
    if fmt in BINARY and output is None:
        raise click.UsageError(f"--format {fmt} writes a binary file: give it with -o FILE")
    client = _client(click.get_current_context(), server, token, timeout)
    try:
        if fmt == "table":
            buf = io.BytesIO()
            answer = client.download(query, buf, format="json")
            body = json.loads(buf.getvalue())
            if output is not None:
                with open(output, "w") as fh:
                    _print_rows(body, file=fh)
            else:
                _print_rows(body)
            _warn_truncated(answer, export=False)
            return
        dest: Any = output if output is not None else sys.stdout.buffer
        answer = client.download(query, dest, format=fmt)
        if output is None:
            sys.stdout.buffer.flush()
    except ClientError as err:
        raise _fail(err, query) from None
    _warn_truncated(answer, export=fmt != "json")
    if output is not None:
        rows = "" if answer.rows is None else f"{answer.rows} rows, "
        click.echo(f"wrote {output} ({rows}{answer.bytes} bytes, {fmt})", err=True)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _print_rows(body: dict[str, Any], file: Any = None) -> None:
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


@click.group("alerts", invoke_without_command=True)
@server_options
@click.pass_context
def alerts_group(
    ctx: click.Context, server: str | None, token: str | None, timeout: float | None
) -> None:
    """List regression alerts, or acknowledge one (on a running server).

    Without a subcommand: the open alerts, as `alerts list`."""
    ctx.obj = {"server": server, "token": token, "timeout": timeout}
    if ctx.invoked_subcommand is None:
        ctx.invoke(alerts_list)


@alerts_group.command("list")
@click.option(
    "--status",
    type=click.Choice(["open", "acked", "resolved", "all"]),
    default="open",
    show_default=True,
    help="Which alerts.",
)
@click.option("--prefix", "prefix_id", default=None, help="Only alerts of this variant.")
@click.option("--metric", default=None, help="Only alerts on this metric.")
@click.option("--json", "as_json", is_flag=True, help="The alert objects as JSON.")
@server_options
@click.pass_context
def alerts_list(
    ctx: click.Context,
    status: str = "open",
    prefix_id: str | None = None,
    metric: str | None = None,
    as_json: bool = False,
    server: str | None = None,
    token: str | None = None,
    timeout: float | None = None,
) -> None:
    """Alerts, most severe and most significant first."""
    client = _client(ctx, server, token, timeout)
    try:
        found = client.alerts(
            None if status == "all" else status, prefix_id=prefix_id, metric=metric
        )
    except ClientError as err:
        raise _fail(err) from None
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    _print_alerts(found, status)


def _num(value: Any, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec)


def _print_alerts(found: list[dict[str, Any]], status: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not found:
        console.print(f"no {'' if status == 'all' else status + ' '}alerts")
        return
    table = Table(show_header=True, header_style="bold")
    for name in ("id", "status", "variant", "route", "cohort", "metric", "value", "delta",
                 "95% CI", "q", "n", "severity", "created"):  # fmt: skip
        table.add_column(name, overflow="fold")
    for a in found:
        variant = (
            f"{a['prefix_id']}@{a['prefix_version']}" if a.get("prefix_version") else a["prefix_id"]
        )
        cohort = ", ".join(f"{k}={v}" for k, v in (a.get("cohort") or {}).items()) or "all"
        value = f"{_num(a.get('value'))} vs {_num(a.get('baseline_value'))} ({a.get('baseline')})"
        ci = f"[{_num(a.get('ci_low'))}, {_num(a.get('ci_high'))}]"
        created = a.get("created_at") or ""
        if created:
            created = dt.datetime.fromisoformat(created.replace("Z", "+00:00")).strftime(
                "%Y-%m-%d %H:%M"
            )
        table.add_row(
            a["id"], a["status"], str(variant), str(a.get("route") or ""), cohort, a["metric"],
            value, _num(a.get("delta"), "+.3g"), ci, _num(a.get("q_value"), ".2g"),
            f"{_num(a.get('n'), 'd')} / {_num(a.get('n_baseline'), 'd')}",
            str(a.get("severity") or ""), created,
        )  # fmt: skip
    console.print(table)
    console.print(f"{len(found)} alert{'s' if len(found) != 1 else ''}")


@alerts_group.command("ack")
@click.argument("alert_id")
@server_options
@click.pass_context
def alerts_ack(
    ctx: click.Context,
    alert_id: str,
    server: str | None,
    token: str | None,
    timeout: float | None,
) -> None:
    """Acknowledge alert ALERT_ID (idempotent; needs a write token when tokens are set)."""
    client = _client(ctx, server, token, timeout)
    try:
        alert = client.ack(alert_id)
    except ClientError as err:
        raise _fail(err) from None
    click.echo(f"{alert['id']}: {alert['status']} ({alert['prefix_id']} {alert['metric']})")
