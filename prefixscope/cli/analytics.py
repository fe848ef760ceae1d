"""``prefixscope analytics run|scorecard|gate|routing``: detection, scorecards, the release
gate and routing advice over a data directory or a lake."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
from click.core import ParameterSource
from rich.table import Table

from prefixscope.analytics.detection_config import DetectionConfigError
from prefixscope.analytics.query import (
    InvalidArgument,
    parse_time,
)
from prefixscope.cli.advice import gate_command, routing_command
from prefixscope.cli.common import (
    DATA_DIR,
    JSON,
    SINCE,
    UNTIL,
    console,
    detection_options,
    engine_options,
    fmt,
    open_engine,
    open_store,
    options_config,
    print_json,
)


@click.group("analytics")
def analytics_group() -> None:
    """Scorecards, regression detection, release gates and routing advice."""


@analytics_group.command("run")
@DATA_DIR
@SINCE
@UNTIL
@detection_options
@engine_options
@click.option("--dry-run", is_flag=True, help="Detect and print, but do not write alerts.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the run (comparisons count and alert objects) to this JSON file.",
)
@JSON
@click.pass_context
def run_command(
    ctx: click.Context,
    data_dir: Path,
    since: str | None,
    until: str | None,
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
    engine: str,
    lake_path: str | None,
    master: str,
    spark_conf: tuple[str, ...],
    served_models: tuple[str, ...],
    dry_run: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Run regression detection over the window and write/resolve alerts.

    Data comes from the store in --data-dir, or with --lake-path from a Parquet lake
    (--engine duckdb or spark). Alerts go to the store's alerts table when a store is used
    (with --lake-path: only when --data-dir is given too); otherwise they are printed and,
    with --out, written as JSON alert objects (id = fingerprint).
    """
    from prefixscope.analytics.alerts import alert_objects, save_alerts
    from prefixscope.analytics.detection import check_anchor, detection_window, run_detection
    from prefixscope.analytics.sequence import SequenceLook

    cfg = options_config()
    try:
        check_anchor(since, cfg)
        # one clock for the whole run: relative bounds and the windows-mode clock
        now = datetime.now(UTC)
        since_t, until_t = parse_time(since, now), parse_time(until, now)
        if cfg.sequential == "windows" and until_t is None:
            until_t = now.replace(tzinfo=None)
        tested = detection_window(since_t, until_t, cfg)
    except (DetectionConfigError, InvalidArgument) as exc:
        raise click.UsageError(str(exc)) from None
    explicit_store = ctx.get_parameter_source("data_dir") is not ParameterSource.DEFAULT
    if lake_path is None and engine == "duckdb":
        with open_store(data_dir, served_models) as con:
            look = SequenceLook.open(con, tested, cfg)
            result = run_detection(con, since_t, until_t, cfg, prior=look.prior(con))
            if not dry_run:
                look.save(con, result)
            alerts = [] if dry_run else save_alerts(con, result)
    else:
        source = open_engine(engine, lake_path, master, spark_conf, served_models)
        look, prior = None, {}
        if explicit_store:  # the sequence state lives in the store; the engine runs alone
            with open_store(data_dir) as con:
                look = SequenceLook.open(con, tested, cfg)
                prior = look.prior(con)
        result = run_detection(source, since_t, until_t, cfg, prior=prior)
        if look is not None and not dry_run:
            with open_store(data_dir) as con:
                look.save(con, result)
                alerts = save_alerts(con, result, source=source)
        else:
            alerts = alert_objects(source, result)
    report = {
        "engine": engine,
        "sequential": cfg.sequential,
        "window": tested.to_dict(),
        "comparisons": len(result.comparisons),
        "alerts": [a.to_dict() for a in alerts],
    }
    if out is not None:
        out.write_bytes(orjson.dumps(report, default=str, option=orjson.OPT_INDENT_2))
    if as_json:
        print_json(report)
        return
    span = (
        f", window [{tested.since.isoformat()}, {tested.until.isoformat()})"
        if cfg.sequential == "windows" and tested.since and tested.until
        else ""
    )
    t = Table(
        title=f"{len(result.regressions)} regressions in {len(result.comparisons)} "
        f"comparisons (FDR {alpha}, {cfg.sequential}{span})"
    )
    for col in (
        "prefix",
        "route",
        "cohort",
        "metric",
        "baseline",
        "value",
        "baseline value",
        "delta",
        "q",
        "n / n base",
        "severity",
    ):
        t.add_column(col)
    for c in result.regressions:
        t.add_row(
            f"{c.prefix_id}@{c.prefix_version}",
            fmt(c.route),
            orjson.dumps(c.cohort).decode(),
            c.metric,
            c.baseline,
            fmt(c.value),
            fmt(c.baseline_value),
            fmt(c.delta),
            fmt(c.q_value),
            f"{c.n} / {c.n_baseline}",
            c.severity,
        )
    console.print(t)


@analytics_group.command("scorecard")
@DATA_DIR
@SINCE
@UNTIL
@click.option(
    "--group-by",
    default="prefix_id",
    show_default=True,
    help="Comma-separated keys: prefix_id, prefix_version, route, cohort.<key>, ...",
)
@click.option("--metrics", default=None, help="Comma-separated metrics to show (default all).")
@click.option(
    "--dataset", default=None, help="Only replays of this golden dataset (paired deltas)."
)
@engine_options
@JSON
def scorecard_command(
    data_dir: Path,
    since: str | None,
    until: str | None,
    group_by: str,
    metrics: str | None,
    dataset: str | None,
    engine: str,
    lake_path: str | None,
    master: str,
    spark_conf: tuple[str, ...],
    served_models: tuple[str, ...],
    as_json: bool,
) -> None:
    """Per-group metrics with confidence intervals and deltas vs the base model
    (from the store in --data-dir, or a Parquet lake with --lake-path)."""
    from prefixscope.analytics.query import InvalidArgument
    from prefixscope.analytics.scorecard import scorecard

    keys = [k.strip() for k in group_by.split(",") if k.strip()]
    wanted = metrics.split(",") if metrics else None
    if lake_path is None and engine == "duckdb":
        with open_store(data_dir, served_models) as con:
            card = scorecard(con, keys, since, until, wanted, dataset=dataset)
    else:
        source = open_engine(engine, lake_path, master, spark_conf, served_models)
        try:
            card = scorecard(source, keys, since, until, wanted, dataset=dataset)
        except InvalidArgument as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(card.to_dict())
        return
    t = Table(title="scorecard (value [CI] Δ vs base)")
    for k in keys:
        t.add_column(k)
    shown = [m for m in card.metrics if m != "n"]
    t.add_column("n")
    for m in shown:
        t.add_column(m)
    for row in card.rows:
        cells = []
        for m in shown:
            mv = row.metrics.get(m)
            if mv is None:
                cells.append("-")
                continue
            s = fmt(mv.value)
            if mv.ci_low is not None:
                s += f" [{fmt(mv.ci_low)}, {fmt(mv.ci_high)}]"
            if mv.delta is not None:
                s += f" Δ{mv.delta:+.3g}"
            cells.append(s)
        t.add_row(*[fmt(row.group.get(k)) for k in keys], str(row.n), *cells)
    console.print(t)


analytics_group.add_command(gate_command)
analytics_group.add_command(routing_command)
