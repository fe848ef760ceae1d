"""``prefixscope evaluate``: online evaluation of stored traffic (see :mod:`.online`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from prefixscope.analytics.query import InvalidArgument
from prefixscope.cli.common import (
    DATA_DIR,
    JSON,
    SINCE,
    UNTIL,
    console,
    engine_options,
    open_engine,
    open_store,
    print_json,
)


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    t = Table(title=f"online evaluation: {report['scored']} scored, {report['skipped']} skipped")
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("requests selected", str(report["requests"]))
    t.add_row("sampled out", str(report["sampled_out"]))
    t.add_row("already scored (span, evaluator)", str(report["already_scored"]))
    for name, n in report["scored_by_evaluator"].items():
        t.add_row(f"scored: {name}", str(n))
    for reason, n in report["skipped_by_reason"].items():
        t.add_row(f"skipped: {reason}", str(n))
    console.print(t)


@click.command("evaluate")
@DATA_DIR
@SINCE
@UNTIL
@click.option(
    "--evaluators",
    required=True,
    help="Comma-separated evaluators: JSONValidation, Refusal, AnswerRelevancy, ... or "
    "module:factory.",
)
@click.option("--route", default=None, help="Only spans of this route.")
@click.option("--prefix", "prefix_id", default=None, help="Only spans of this variant (or base).")
@click.option("--service", default=None, help="Only spans of this service.name.")
@click.option(
    "--sample",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Fraction of spans to score (by a hash of the span id: re-runs agree).",
)
@click.option(
    "--server",
    default=None,
    help="Ask a running server (its base URL, e.g. http://127.0.0.1:4318) instead of opening "
    "the store, which a running server owns. Token: PREFIXSCOPE_API_TOKEN.",
)
@engine_options
@JSON
def evaluate_command(
    data_dir: Path,
    since: str | None,
    until: str | None,
    evaluators: str,
    route: str | None,
    prefix_id: str | None,
    service: str | None,
    sample: float,
    server: str | None,
    engine: str,
    lake_path: str | None,
    master: str,
    spark_conf: tuple[str, ...],
    served_models: tuple[str, ...],
    as_json: bool,
) -> None:
    """Score stored requests with evaluators (source "online"); each (request, evaluator)
    once. Requests without usable text are counted as skipped, with the reason, never scored 0.

    With --lake-path the requests are the lake's (--engine duckdb or spark) and the scores are
    published to its scores table (the same ids: re-runs add nothing once deduplicated)."""
    names = [n.strip() for n in evaluators.split(",") if n.strip()]
    flt = {"route": route, "prefix_id": prefix_id, "service_name": service}
    if server:
        import httpx

        token = os.environ.get("PREFIXSCOPE_API_TOKEN")
        resp = httpx.post(
            server.rstrip("/") + "/api/v1/evaluations/run",
            json={
                "since": since,
                "until": until,
                "evaluators": names,
                "filter": flt,
                "sample": sample,
            },
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=600,
        )
        if resp.status_code != 200:
            raise click.ClickException(f"{resp.status_code}: {resp.text}")
        _print(resp.json(), as_json)
        return
    from prefixscope.analytics.online import SpanFilter, lake_writer, resolve_evaluators, run_online

    try:
        evs = resolve_evaluators(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--evaluators") from None
    if lake_path is not None or engine != "duckdb":
        from prefixscope.collector.storage.fs import s3_options_from_env

        source = open_engine(engine, lake_path, master, spark_conf, served_models)
        assert lake_path is not None  # open_engine requires it
        try:
            report = run_online(
                source,
                evs,
                since=since,
                until=until,
                span_filter=SpanFilter(**flt),
                sample=sample,
                write=lake_writer(lake_path, storage_options=s3_options_from_env()),
            )
        except (InvalidArgument, ValueError) as exc:
            raise click.UsageError(str(exc)) from None
        _print(report.to_dict(), as_json)
        return
    with open_store(data_dir, served_models) as con:
        try:
            report = run_online(
                con, evs, since=since, until=until, span_filter=SpanFilter(**flt), sample=sample
            )
        except (InvalidArgument, ValueError) as exc:
            raise click.UsageError(str(exc)) from None
    _print(report.to_dict(), as_json)
