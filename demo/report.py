"""The demo's printed report: scorecard, alerts with evidence, gate, routing, where to look."""

from __future__ import annotations

from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from prefixscope.demo import data as demo_data
from prefixscope.demo.checks import run_checks

EXAMPLE_SQL = (
    "SELECT prefix_id, cohort->>'specialty' AS specialty, count(*) AS n,\n"
    "       round(avg(scores['TaskCompletion']), 3) AS task_completion\n"
    "FROM requests WHERE route <> 'replay' GROUP BY ALL ORDER BY ALL"
)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _metric(row: Any, name: str, delta: bool = False) -> str:
    m = row.metrics.get(name)
    if m is None or m.value is None:
        return "-"
    text = f"{m.value:.2f}"
    if m.ci_low is not None and m.ci_high is not None:
        text += f" [{m.ci_low:.2f},{m.ci_high:.2f}]"
    if delta and m.delta is not None:
        text += f"  Δ{m.delta:+.2f}"
    return text


def print_report(
    console: Console, con: duckdb.DuckDBPyConnection, config: Any, base_url: str, traffic: Any
) -> dict[str, Any]:
    """Print the run's tables and where to look next; return what the story checks found."""
    console.print(
        f"\ntraffic: {traffic.requests} requests ({traffic.misrouted} mis-routed, "
        f"{traffic.fallbacks} fallbacks), {traffic.agent_traces} agent traces, "
        f"{len(traffic.scores)} online scores, {len(traffic.feedback)} feedback events"
    )
    _print_scorecard(console, con)
    alerts = _print_alerts(console, con, config)
    verdicts = _print_gates(console, con, config)
    advice = _print_routing(console, con, config)
    console.print(f"\n[bold]Dashboard:[/] {base_url}/    [bold]API docs:[/] {base_url}/docs")
    console.print("Try some SQL (dashboard SQL box, or):")
    console.print(
        f"  curl -s {base_url}/api/v1/sql -H 'content-type: application/json' "
        f'-d \'{{"sql": "SELECT prefix_id, count(*) FROM requests GROUP BY 1"}}\''
    )
    console.print(EXAMPLE_SQL)

    story = _print_story(console, con, alerts, verdicts, advice)
    return {
        "alert_ids": sorted(a.id for a in alerts),
        "gate": verdicts,
        "routing": [a.to_dict() for a in advice],
        "story": story.to_dict(),
    }


def _print_scorecard(console: Console, con: duckdb.DuckDBPyConnection) -> None:
    from prefixscope.analytics.scorecard import scorecard

    card = scorecard(
        con,
        ["prefix_id", "cohort.specialty"],
        metrics=[
            "TaskCompletion",
            "JSONValidation",
            "thumbs_down_rate",
            "latency_p50",
            "latency_p99",
        ],
    )
    t = Table(title="Scorecard per (prefix, specialty) - all traffic; Δ vs base in the same cohort")
    for col in (
        "prefix",
        "specialty",
        "n",
        "TaskCompletion",
        "JSONValidation",
        "thumbs-down",
        "p50 ms",
        "p99 ms",
    ):
        t.add_column(col, justify="right" if col not in ("prefix", "specialty") else "left")
    for row in card.rows:
        spec = row.group.get("cohort.specialty")
        if spec not in demo_data.SPECIALTIES:
            continue
        t.add_row(
            str(row.group.get("prefix_id")),
            str(spec),
            str(row.n),
            _metric(row, "TaskCompletion", True),
            _metric(row, "JSONValidation"),
            _metric(row, "thumbs_down_rate"),
            _fmt(_val(row, "latency_p50"), 1),
            _fmt(_val(row, "latency_p99"), 1),
        )
    console.print(t)


def _print_alerts(console: Console, con: duckdb.DuckDBPyConnection, config: Any) -> list[Any]:
    """Detect once, then the open alerts' table and their ids on one line."""
    from prefixscope.analytics.alerts import detect_and_alert, list_alerts

    result, _ = detect_and_alert(con, config=config)
    alerts = list_alerts(con, status="open")
    t = Table(
        title=f"Regression alerts (open) - {len(result.comparisons)} comparisons tested, "
        f"Benjamini-Hochberg q ≤ {config.alpha:g}, "
        + (
            "one look, fixed-horizon tests"
            if config.sequential == "fixed"
            else "always-valid mSPRT p-values"
            if config.sequential == "msprt"
            else "windows mode"
        )
    )
    for col in (
        "id",
        "metric",
        "variant",
        "route",
        "cohort",
        "baseline",
        "value vs base",
        "delta [CI]",
        "q",
        "n / n_base",
        "example trace",
    ):
        t.add_column(col)
    for a in alerts:
        t.add_row(
            a.id[:12],
            a.metric,
            f"{a.prefix_id}@{a.prefix_version or '-'}",
            str(a.route),
            ",".join(f"{k}={v}" for k, v in (a.cohort or {}).items()),
            str(a.baseline),
            f"{_fmt(a.value)} vs {_fmt(a.baseline_value)}",
            f"{a.delta:+.3f} [{_fmt(a.ci_low, 3)},{_fmt(a.ci_high, 3)}]",
            f"{a.q_value:.2g}",
            f"{a.n} / {a.n_baseline}",
            (a.example_trace_ids or ["-"])[0][:16],
        )
    console.print(t)
    ids = " ".join(sorted(a.id for a in alerts)) or "(none)"
    console.print(f"alert ids: {ids}", soft_wrap=True)  # one line, for copy and grep

    return alerts


def _print_gates(console: Console, con: duckdb.DuckDBPyConnection, config: Any) -> dict[str, str]:
    """The release gate of every prefix version on its own specialty: name → verdict."""
    from prefixscope.analytics.gate import gate

    t = Table(title="Release gate per prefix, on the cohort it is released for")
    for col in ("variant", "verdict", "tested / untested cells", "failing cells (route / cohort)"):
        t.add_column(col)
    verdicts: dict[str, str] = {}
    versions = dict(
        con.execute(
            "SELECT prefix_id, list(DISTINCT prefix_version ORDER BY prefix_version) "
            "FROM requests_base WHERE prefix_id IS NOT NULL AND prefix_version IS NOT NULL "
            "GROUP BY 1"
        ).fetchall()
    )
    for prefix in demo_data.SPECIALTIES:
        for version in versions.get(prefix) or [None]:
            g = gate(
                con, prefix, prefix_version=version, config=config, cohort={"specialty": prefix}
            )
            name = prefix if version is None else f"{prefix}@{version}"
            verdicts[name] = g.status
            failing = [
                f"{c.route} / {c.cohort}: {'; '.join(c.reasons)}"
                for c in g.cells
                if c.status == "fail"
            ]
            thin = sum(c.status == "untested" for c in g.cells)
            verdict = {
                "pass": "[green]PASS[/]",
                "fail": "[red]FAIL[/]",
                "insufficient_data": "[yellow]INSUFFICIENT DATA[/]",
            }[g.status]
            counts = f"{len(g.cells) - thin} / {thin}"
            t.add_row(name, verdict, counts, "\n".join(failing[:4]) or "-")
    console.print(t)
    console.print(
        "Gate rule: a variant FAILs on any significant regression in its cohort (each prefix "
        "is gated on its own specialty: `prefixscope analytics gate --cohort "
        "specialty=<prefix>`; mis-routed notes show up as alerts instead); it PASSes when at "
        "least one cell was tested and none regressed (thin cells - a handful of guardrail or "
        "agent requests - are listed as untested, not counted against it; `--strict` requires "
        "every cell to be tested)."
    )

    return verdicts


def _print_routing(console: Console, con: duckdb.DuckDBPyConnection, config: Any) -> list[Any]:
    from prefixscope.analytics.gate import routing_advice

    t = Table(title="Routing advice (TaskCompletion; fall back to base when no prefix beats it)")
    for col in ("route", "cohort", "serve", "why"):
        t.add_column(col)
    advice = routing_advice(con, min_n=config.min_n)
    for adv in advice:
        if adv.route in ("replay", "guardrail"):
            continue
        t.add_row(
            str(adv.route),
            ",".join(f"{k}={v}" for k, v in adv.cohort.items()),
            adv.variant,
            adv.reason,
        )
    console.print(t)
    return advice


def _print_story(
    console: Console,
    con: duckdb.DuckDBPyConnection,
    alerts: list[Any],
    verdicts: dict[str, str],
    advice: list[Any],
) -> Any:
    story = run_checks(con, alerts, verdicts, advice)
    t = Table(title="Story checks (computed from this run's numbers)")
    for col in ("check", "result", "numbers"):
        t.add_column(col)
    for c in story.checks:
        t.add_row(c.name, "[green]holds[/]" if c.passed else "[red]DOES NOT HOLD[/]", c.detail)
    console.print(t)
    if not story.passed:
        console.print(
            "[bold red]The trained models of this run do not support the demo's story[/] "
            "(see the checks above): the tables print what the numbers are, not what the "
            "demo guide (docs/guides/demo.md) promises."
        )
    return story


def _val(row: Any, name: str) -> float | None:
    m = row.metrics.get(name)
    return None if m is None else m.value
