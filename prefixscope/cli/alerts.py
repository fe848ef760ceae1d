"""``prefixscope alerts [list|ack]``: a running server's regression alerts
(:class:`prefixscope.client.Client`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from prefixscope.client import ClientError

from .remote import click_error, make_client, server_options


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
    client = make_client(ctx, server, token, timeout)
    try:
        found = client.alerts(
            None if status == "all" else status, prefix_id=prefix_id, metric=metric
        )
    except ClientError as err:
        raise click_error(err) from None
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
    client = make_client(ctx, server, token, timeout)
    try:
        alert = client.ack(alert_id)
    except ClientError as err:
        raise click_error(err) from None
    click.echo(f"{alert['id']}: {alert['status']} ({alert['prefix_id']} {alert['metric']})")
