"""``prefixscope analytics gate|routing``: the release gate and routing advice over a data
directory (commands of the ``analytics`` group, :mod:`.analytics`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson
from rich.table import Table

from prefixscope.analytics.detection_config import DetectionConfigError
from prefixscope.analytics.query import InvalidArgument, parse_cohort_filter
from prefixscope.cli.common import (
    DATA_DIR,
    JSON,
    SINCE,
    UNTIL,
    console,
    detection_options,
    fmt,
    open_store,
    options_config,
    print_json,
)


@click.command("gate")
@DATA_DIR
@SINCE
@UNTIL
@click.option("--prefix", "prefix_id", required=True, help="Prefix id to gate.")
@click.option("--version", "prefix_version", default=None, help="Only this prefix version.")
@click.option(
    "--strict",
    is_flag=True,
    help="Every cell must be tested: an untested (thin) cell makes the verdict insufficient data.",
)
@click.option(
    "--cohort",
    "cohort",
    multiple=True,
    metavar="KEY=VALUE",
    help="Gate only the cells of this cohort (e.g. specialty=cardiology). Repeatable.",
)
@detection_options
@JSON
def gate_command(
    data_dir: Path,
    since: str | None,
    until: str | None,
    prefix_id: str,
    prefix_version: str | None,
    alpha: float,
    min_n: int,
    min_effect: tuple[str, ...],
    score_min_effect: float,
    sequential: str,
    window: str,
    window_delay: str,
    slice_depth: int,
    max_slices: int,
    full_slices: bool,
    as_json: bool,
    strict: bool = False,
    cohort: tuple[str, ...] = (),
) -> None:
    """Release gate per route and cohort slice: pass, fail (a regression) or insufficient
    data; exits 1 unless the gate passes (--json tells fail from insufficient data)."""
    from prefixscope.analytics.gate import gate

    cfg = options_config()
    try:
        wanted = parse_cohort_filter(cohort)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="--cohort") from None
    with open_store(data_dir) as con:
        try:
            res = gate(
                con,
                prefix_id,
                prefix_version=prefix_version,
                since=since,
                until=until,
                config=cfg,
                strict=strict,
                cohort=wanted or None,
            )
        except (DetectionConfigError, InvalidArgument) as exc:
            raise click.UsageError(str(exc)) from None
    label = {
        "pass": "pass",
        "fail": "FAIL",
        "insufficient_data": "insufficient data",
        "untested": "untested",
    }
    if as_json:
        print_json(res.to_dict())
    else:
        t = Table(title=f"gate {prefix_id}: {label[res.status].upper()} ({res.reason})")
        for col in ("version", "route", "cohort", "n", "result", "reasons"):
            t.add_column(col)
        for c in res.cells:
            t.add_row(
                c.prefix_version,
                fmt(c.route),
                orjson.dumps(c.cohort).decode(),
                str(c.n),
                label[c.status],
                "; ".join(c.reasons),
            )
        console.print(t)
    if not res.passed:
        sys.exit(1)


@click.command("routing")
@DATA_DIR
@SINCE
@UNTIL
@click.option(
    "--metric",
    default="TaskCompletion",
    show_default=True,
    help="Evaluator to route on (higher is better).",
)
@click.option(
    "--threshold",
    type=float,
    default=0.0,
    show_default=True,
    help="Minimum score (lower confidence bound) a prefix needs.",
)
@click.option(
    "--min-n",
    type=int,
    default=100,
    show_default=True,
    help="Minimum scored requests for a prefix to qualify.",
)
@JSON
def routing_command(
    data_dir: Path,
    since: str | None,
    until: str | None,
    metric: str,
    threshold: float,
    min_n: int,
    as_json: bool,
) -> None:
    """Best variant per route and cohort, or fall back to base."""
    from prefixscope.analytics.gate import routing_advice

    with open_store(data_dir) as con:
        advice = routing_advice(
            con, metric, threshold=threshold, min_n=min_n, since=since, until=until
        )
    if as_json:
        print_json([a.to_dict() for a in advice])
        return
    t = Table(title=f"routing advice on {metric}")
    for col in ("route", "cohort", "variant", "reason"):
        t.add_column(col)
    for a in advice:
        t.add_row(fmt(a.route), orjson.dumps(a.cohort).decode(), a.variant, a.reason)
    console.print(t)
