"""Analytics on a real store (DuckDB file via Store): scorecard, alerts (dedup, resolve), gate,
routing, views, datasets, replay with a user function, the evaluator runner and the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from opentelemetry.trace import NoOpTracerProvider

from prefixscope.analytics import (
    DetectionConfig,
    TaskCompletion,
    ack_alert,
    detect_and_alert,
    gate,
    list_alerts,
    routing_advice,
    run_detection,
    scorecard,
)
from prefixscope.analytics.datasets import load_dataset, read_items, save_dataset
from prefixscope.analytics.replay import replay
from prefixscope.analytics.runner import evaluate_spans
from prefixscope.analytics.synthetic import Arm, generate
from prefixscope.analytics.views import combinations, compliance, flicker, switch_latency
from prefixscope.cli.analytics import analytics_group
from prefixscope.cli.datasets import datasets_group, replay_command
from prefixscope.collector.storage.request_store import rebuild
from prefixscope.collector.storage.store import Store

T0 = datetime(2025, 3, 1)
COHORT = {"specialty": "cardiology"}


def _traffic(store: Store, *, bad: bool, start: datetime, offset: int) -> None:
    arms = [
        Arm(None, None, "triage", COHORT, n=1500, scores={"TaskCompletion": (0.8, 10)}),
        Arm(
            "cardio",
            "2",
            "triage",
            COHORT,
            n=1500,
            scores={"TaskCompletion": (0.6 if bad else 0.8, 10)},
            thumbs_down_rate=0.15 if bad else 0.05,
        ),
    ]
    generate(store.cursor(), arms, seed=offset, start=start, id_offset=offset)


def test_alerts_dedup_and_resolve(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        con = store.cursor()
        _traffic(store, bad=True, start=T0, offset=0)
        w1 = (T0, T0 + timedelta(hours=1))
        _, alerts = detect_and_alert(con, *w1)
        metrics = {a.metric for a in alerts}
        assert {"TaskCompletion", "thumbs_down_rate"} <= metrics
        a = next(x for x in alerts if x.metric == "TaskCompletion")
        assert a.prefix_id == "cardio" and a.prefix_version == "2"
        assert a.route == "triage" and a.cohort == COHORT and a.baseline == "base"
        assert a.direction == "worse" and a.status == "open"
        assert a.delta == pytest.approx(-0.2, abs=0.03)
        # the interval of the one-sided test that raised it: a bound on the worse side only
        assert a.ci_low is None and a.delta < a.ci_high < 0
        assert a.q_value <= 0.05 and a.n >= 1400 and a.n_baseline >= 1400
        assert len(a.example_trace_ids) == 5
        assert a.severity == ("critical" if -a.delta >= 0.2 else "major")
        # same window again: updated, not repeated
        _, again = detect_and_alert(con, *w1)
        assert {x.id for x in again} == {x.id for x in alerts}
        assert len(list_alerts(con)) == len(alerts)
        assert ack_alert(con, a.id).status == "acked"
        # the regression is gone in the next window: alerts resolve
        _traffic(store, bad=False, start=T0 + timedelta(hours=1), offset=10**7)
        _, after = detect_and_alert(con, T0 + timedelta(hours=1), T0 + timedelta(hours=2))
        assert after == []
        closed = list_alerts(con, status="resolved")
        assert {x.id for x in closed} == {x.id for x in alerts}
        assert all(x.resolved_at for x in closed)
        assert list_alerts(con, status="open") == []

        # scorecard on the first window: deltas vs base on the same cohort
        card = scorecard(con, ["prefix_id", "route", "cohort.specialty"], *w1)
        row = next(r for r in card.rows if r.group["prefix_id"] == "cardio")
        tc = row.metrics["TaskCompletion"]
        assert tc.base_value == pytest.approx(0.8, abs=0.02)
        assert tc.delta_ci_low < tc.delta < tc.delta_ci_high < 0
        assert row.metrics["latency_p99"].ci_low <= row.metrics["latency_p99"].value
        assert json.dumps(card.to_dict())  # JSON-ready

        g = gate(con, "cardio", since=w1[0], until=w1[1])
        assert not g.passed and g.status == "fail" and g.cells[0].status == "fail"
        assert any(r.startswith("TaskCompletion worse than base") for r in g.cells[0].reasons)
        g2 = gate(con, "cardio", since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=2))
        assert g2.passed and g2.status == "pass"
        # too little data is its own verdict: not a pass, not a regression
        thin = gate(
            con,
            "cardio",
            since=T0 + timedelta(hours=1),
            until=T0 + timedelta(hours=2),
            config=DetectionConfig(min_n=5000),
        )
        assert not thin.passed and thin.status == "insufficient_data"
        assert thin.cells[0].reasons == ["insufficient data: n=1500 < min_n=5000"]
        assert thin.to_dict()["cells"][0]["status"] == "untested"
        none = gate(con, "nobody", since=w1[0], until=w1[1])
        assert none.status == "insufficient_data" and none.cells == []
        adv = routing_advice(con, threshold=0.7, since=w1[0], until=w1[1])
        assert adv[0].variant == "base" and adv[0].reason.startswith("fall back to base")
        adv2 = routing_advice(con, threshold=0.7, since=T0 + timedelta(hours=1))
        assert adv2[0].variant == "base"  # equal quality: a prefix must beat base


def test_previous_version_baseline(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        con = store.cursor()
        generate(
            con,
            [Arm("cardio", "1", "triage", COHORT, n=1500, scores={"TaskCompletion": (0.85, 10)})],
            seed=1,
            start=T0,
        )
        generate(
            con,
            [Arm("cardio", "2", "triage", COHORT, n=1500, scores={"TaskCompletion": (0.7, 10)})],
            seed=2,
            start=T0 + timedelta(hours=1),
            id_offset=10**7,
        )
        res = run_detection(con, config=DetectionConfig(metrics=["TaskCompletion"]))
        [c] = res.regressions
        assert c.baseline == "cardio@1" and c.prefix_version == "2"


def test_views(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        con = store.cursor()
        generate(
            con,
            [
                Arm(None, None, "r", n=400, deployment_count=2),
                Arm("a", "1", "r", n=400, deployment_count=2, latency_median_ms=800),
            ],
            seed=3,
            start=T0,
        )
        sw = switch_latency(con)
        assert sw["switched"]["n"] > 100 and sw["same"]["n"] > 100
        # agent traces: planner (base) then response (cardio), one session flickers
        con.execute(
            """INSERT INTO span_rows (trace_id, span_id, name, start_time, end_time,
          duration_ms, status_code, base_model, prefix_id, route, session_id, operation,
          attributes, ingest_batch)
          VALUES ('t1','s1','plan', ?, ?, 10, 'OK', 'm', NULL, 'agent', 'sess1', 'chat',
                  '{"agent.step":"planner"}', 0),
                 ('t1','s2','answer', ?, ?, 20, 'OK', 'm', 'cardio', 'agent', 'sess1', 'chat',
                  '{"agent.step":"response"}', 0)""",
            [T0, T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)],
        )
        rebuild(con, "trace_id = 't1'")
        con.execute(
            "INSERT INTO score_rows VALUES ('x','t1',NULL,'TaskCompletion',1.0,NULL,NULL,NULL, ?)",
            [T0],
        )
        [combo] = combinations(con)
        assert combo["combination"] == "planner:base > response:cardio"
        assert combo["traces"] == 1 and combo["scores"] == {"TaskCompletion": 1.0}
        [fl] = flicker(con)
        assert fl["route"] == "agent" and fl["flicker_rate"] == 1.0


def echo_generator(prompt: str, variant: str) -> str:
    return "refuse: I cannot help with that." if variant == "base" else f"J18.9 for {prompt}"


def test_datasets_replay_runner_and_cli(tmp_path: Path) -> None:
    src = tmp_path / "golden.jsonl"
    src.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": f"i{i}",
                    "input": f"case {i}",
                    "expected": "J18.9",
                    "specialty": "cardiology",
                    "context": ["J18.9 pneumonia"],
                }
            )
            for i in range(3)
        )
    )
    items = read_items(src, cohort_fields=["specialty"])
    assert items[0].cohort == COHORT and items[0].context == ["J18.9 pneumonia"]
    data = tmp_path / "data"
    with Store(data) as store:
        con = store.cursor()
        save_dataset(con, "icd", items, metadata={"kind": "guardrail"})
        assert len(load_dataset(con, "icd").items) == 3
        rep = replay(
            con,
            "icd",
            ["base", "cardio"],
            echo_generator,
            evaluators=[TaskCompletion("codes")],
            run_id="r1",
            progress=False,
            tracer_provider=NoOpTracerProvider(),
        )
        assert (rep.done, rep.skipped) == (6, 0)
        again = replay(
            con,
            "icd",
            ["base", "cardio"],
            echo_generator,
            evaluators=[TaskCompletion("codes")],
            run_id="r1",
            progress=False,
            tracer_provider=NoOpTracerProvider(),
        )
        assert (again.done, again.skipped) == (0, 6)  # resumed
        card = scorecard(con, ["prefix_id"], dataset="icd")
        tc = next(r for r in card.rows if r.group["prefix_id"] == "cardio").metrics
        assert tc["TaskCompletion"].value == 1.0 and tc["TaskCompletion"].paired
        assert tc["TaskCompletion"].delta == pytest.approx(1.0)
        rows = compliance(con, evaluator="TaskCompletion")
        assert {r["prefix_id"]: r["pass_rate"] for r in rows} == {"base": 0.0, "cardio": 1.0}
        # runner: score stored spans by id, text from the dataset item + a resolver
        span_ids = [
            r[0]
            for r in con.execute("SELECT span_id FROM spans WHERE prefix_id = 'cardio'").fetchall()
        ]
        out = evaluate_spans(
            con,
            [TaskCompletion("contains", name="Mentions")],
            span_ids=span_ids,
            resolve=lambda s: {"output": "J18.9", "expected": s["expected"]},
        )
        assert len(out) == 3 and all(r.value == 1.0 for r in out)
    runner = CliRunner()
    res = runner.invoke(analytics_group, ["scorecard", "--data-dir", str(data), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["group_by"] == ["prefix_id"]
    res = runner.invoke(datasets_group, ["list", "--data-dir", str(data)])
    assert res.exit_code == 0 and "icd" in res.output
    res = runner.invoke(
        replay_command,
        [
            "--data-dir",
            str(data),
            "--dataset",
            "icd2",
            "--from",
            str(src),
            "--variants",
            "base,cardio",
            "--generator",
            f"{__name__}:echo_generator",
            "--evaluators",
            "TaskCompletion",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "4 done" not in res.output and "6 done" in res.output
    res = runner.invoke(analytics_group, ["run", "--data-dir", str(data), "--min-n", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(analytics_group, ["run", "--data-dir", str(data), "--alpha", "2"])
    assert res.exit_code != 0 and "alpha" in res.output


def test_growing_window_reports_the_running_minimum_p_value(tmp_path: Path) -> None:
    """Issue 15: on a growing window (fixed `since`) each look continues the sequence: the
    p-value is the running minimum and the bound the running maximum, so a regression found
    at one look stays found when diluted data follows (it resolves only once its estimate
    falls below the minimum effect). A look back in time (an earlier `until`) starts from
    scratch and does not rewrite the sequence."""
    cfg = DetectionConfig(metrics=["TaskCompletion"])
    with Store(tmp_path) as store:
        con = store.cursor()
        _traffic(store, bad=True, start=T0, offset=0)
        first, alerts = detect_and_alert(con, T0, T0 + timedelta(hours=1), cfg)
        tc1 = next(c for c in first.comparisons if c.baseline == "base")
        assert tc1.flagged and alerts and tc1.p_value <= 0.05
        # the regression is fixed: equal traffic halves the pooled estimate (0.2 -> 0.1)
        _traffic(store, bad=False, start=T0 + timedelta(hours=1), offset=10**7)
        until = T0 + timedelta(hours=2)
        fresh = run_detection(con, T0, until, cfg)  # this look alone, no sequence
        raw = next(c for c in fresh.comparisons if c.baseline == "base")
        assert raw.p_value > tc1.p_value and raw.worse_bound < tc1.worse_bound
        later, still = detect_and_alert(con, T0, until, cfg)
        tc2 = next(c for c in later.comparisons if c.baseline == "base")
        assert tc2.p_value == pytest.approx(tc1.p_value)
        assert tc2.worse_bound == pytest.approx(tc1.worse_bound) and tc2.ci_high is not None
        assert tc2.ci_high == pytest.approx(-tc1.worse_bound)
        assert [a.id for a in still] == [a.id for a in alerts]  # no flicker
        # a look back in time: its own p-value, and the sequence is left as it was
        back, _ = detect_and_alert(con, T0, T0 + timedelta(minutes=90), cfg)
        assert next(c for c in back.comparisons if c.baseline == "base").p_value > tc1.p_value
        rows = con.execute("SELECT min(min_p), max(last_until) FROM sequential_state").fetchall()
        assert rows[0][0] == pytest.approx(tc1.p_value) and rows[0][1] == until
        # another anchor is another sequence: the fixed hour alone shows no regression
        other, none = detect_and_alert(con, T0 + timedelta(hours=1), until, cfg)
        assert other.comparisons and not any(c.flagged for c in other.comparisons)
        assert none == []


def test_repeated_scores_count_once_per_span_and_evaluator(tmp_path: Path) -> None:
    """Issue 15: a span scored twice (online and offline, or a client's retry under a new id)
    is one scored request. Posting every score again leaves the scorecard and detection
    exactly as they were; a newer value for the same (span, evaluator) replaces the old one."""
    with Store(tmp_path) as store:
        con = store.cursor()
        _traffic(store, bad=True, start=T0, offset=0)
        window = (T0, T0 + timedelta(hours=1))
        n_scores = con.execute("SELECT count(*) FROM scores").fetchall()[0][0]
        assert n_scores > 0

        def snapshot() -> tuple[object, object]:
            card = scorecard(con, ["prefix_id"], *window, metrics=["TaskCompletion"])
            cells = sorted(
                (
                    str(r.group),
                    r.metrics["TaskCompletion"].n,
                    round(r.metrics["TaskCompletion"].value, 12),
                )
                for r in card.rows
            )
            result = run_detection(con, *window)
            tested = sorted(
                (c.metric, c.n, c.n_baseline, round(c.value, 12), round(c.p_value, 12))
                for c in result.comparisons
            )
            assert tested, "detection tested nothing: the comparison would be vacuous"
            return cells, tested

        before = snapshot()
        # every score again, under new ids and a later timestamp (same values)
        con.execute(
            "INSERT INTO score_rows SELECT id || '-again', trace_id, span_id, name, value, label, "
            "reason, 'offline', created_at + INTERVAL 1 MINUTE FROM scores"
        ).fetchall()
        assert con.execute("SELECT count(*) FROM scores").fetchall()[0][0] == 2 * n_scores
        assert snapshot() == before
        # a newer value wins: the re-scored spans now count their new value, once
        con.execute(
            "INSERT INTO score_rows SELECT id || '-new', trace_id, span_id, name, 0.0, label, "
            "reason, 'offline', created_at + INTERVAL 2 MINUTE FROM scores WHERE id LIKE '%-again'"
        ).fetchall()
        cells, _ = snapshot()
        assert {value for _, _, value in cells} == {0.0}
        assert [n for _, n, _ in cells] == [n for _, n, _ in before[0]]


def test_latest_score_ties_break_by_id_and_unreadable_ids_match_nothing(tmp_path: Path) -> None:
    """The cube joins scores to requests on ids read as numbers: the latest score still wins
    exactly (a tie in ``created_at`` goes to the higher id, for span- and trace-level scores),
    and a score whose ids are not hex counts for no request, as with a string join."""
    from prefixscope.analytics.cube import build_cube

    with Store(tmp_path) as store:
        con = store.cursor()
        generate(con, [Arm("cardio", "2", "triage", COHORT, n=10)], seed=3, start=T0)
        (a, b, c) = con.execute(
            "SELECT trace_id, span_id FROM spans WHERE prefix_id = 'cardio' ORDER BY span_id "
            "LIMIT 3"
        ).fetchall()
        at = T0 + timedelta(minutes=5)
        rows = [
            ("m", a[0], a[1], 0.25, at),  # span a: a tie at `at`, 'z' > 'm' wins
            ("z", a[0], a[1], 0.75, at),
            ("a", a[0], a[1], 0.5, at - timedelta(seconds=1)),
            ("only", b[0], b[1], 0.125, at),  # span b: one score
            ("t1", c[0], None, 0.375, at),  # trace c: a trace-level tie, 't2' wins
            ("t2", c[0], None, 0.625, at),
            ("bad", "not-hex-" + a[0][8:], a[1], 1.0, at),  # unreadable ids: no request
            ("bad2", a[0], "zz" + a[1][2:], 1.0, at),
        ]
        con.executemany(
            "INSERT INTO score_rows (id, trace_id, span_id, name, value, source, created_at) "
            "VALUES (?, ?, ?, 'Tie', ?, 'test', ?)",
            rows,
        )
        cube = build_cube(con, ["prefix_id"])
        # span- and trace-level moments are separate entries of the same cell
        tie = [i for i, name in enumerate(cube.s_name) if name == "Tie"]
        assert tie, cube.s_name
        assert {cube.keys[int(cube.s_cell[i])] for i in tie} == {("cardio",)}
        assert sum(cube.s_n[i] for i in tie) == 3  # span a, span b, trace c's request
        assert sum(cube.s_sum[i] for i in tie) == pytest.approx(0.75 + 0.125 + 0.625)
        assert sum(cube.s_sumsq[i] for i in tie) == pytest.approx(0.75**2 + 0.125**2 + 0.625**2)


def test_run_and_diff_reports_new_updated_and_resolved(tmp_path: Path) -> None:
    """The alert lifecycle of a run, owned by analytics (the API only renders it)."""
    from prefixscope.analytics.alerts import RESOLVED, run_and_diff

    with Store(tmp_path) as store:
        con = store.cursor()
        _traffic(store, bad=True, start=T0, offset=0)
        w1 = (T0, T0 + timedelta(hours=1))
        first = run_and_diff(con, *w1)
        assert first.new, "the injected regression must open alerts"
        assert first.updated == [] and first.resolved == []
        again = run_and_diff(con, *w1)
        assert again.new == []
        assert sorted(a.id for a in again.updated) == sorted(a.id for a in first.new)
        _traffic(store, bad=False, start=T0 + timedelta(hours=1), offset=10**6)
        cleared = run_and_diff(con, T0 + timedelta(hours=1), T0 + timedelta(hours=2))
        assert cleared.new == [] and cleared.updated == []
        assert {a.id for a in cleared.resolved} == {a.id for a in first.new}
        assert {a.status for a in cleared.resolved} == {RESOLVED}


def test_thin_cells_are_untested_not_blocking_and_strict_requires_them(tmp_path: Path) -> None:
    """Issue 13: a handful of guardrail or agent requests must not turn every verdict into
    insufficient data; a strict gate still requires every cell to be tested."""
    with Store(tmp_path) as store:
        con = store.cursor()
        _traffic(store, bad=False, start=T0, offset=0)
        thin_arms = [
            Arm(None, None, "guardrail", COHORT, n=6, scores={"TaskCompletion": (0.8, 10)}),
            Arm("cardio", "2", "guardrail", COHORT, n=6, scores={"TaskCompletion": (0.8, 10)}),
        ]
        generate(con, thin_arms, seed=5, start=T0, id_offset=10**7)
        window = {"since": T0, "until": T0 + timedelta(hours=1)}
        g = gate(con, "cardio", **window)
        statuses = {c.route: c.status for c in g.cells}
        assert statuses == {"triage": "pass", "guardrail": "untested"}
        assert g.status == "pass" and g.passed
        assert "1 thin cell(s) untested" in g.reason
        strict = gate(con, "cardio", strict=True, **window)
        assert strict.status == "insufficient_data" and not strict.passed
        assert {c.route: c.status for c in strict.cells} == statuses
