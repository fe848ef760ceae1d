"""Detector simulations on seeded synthetic traffic (A/A, repeated looks, injected regressions).

The default suite runs reduced versions (fewer seeded runs); ``-m slow`` runs the full ones.
Each test prints its measured rate (run ``pytest -s`` to see them). mSPRT (the default) and
``sequential="windows"`` (fixed-horizon tests of the latest completed evaluation window) are
both simulated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from scipy import stats as sps

from prefixscope.analytics.alerts import detect_and_alert, list_alerts
from prefixscope.analytics.comparison import DetectionResult
from prefixscope.analytics.detection import evaluation_window, run_detection
from prefixscope.analytics.detection_config import DetectionConfig, DetectionConfigError
from prefixscope.analytics.synthetic import Arm, generate, scratch_store
from prefixscope.cli.analytics import analytics_group
from prefixscope.collector.storage.store import Store

COHORTS = ({"specialty": "cardiology"}, {"specialty": "radiology"})


def _arms(n: int, *, wide: bool = True, **inject: float) -> list[Arm]:
    """Base and prefixes; ``inject`` alters prefix 'card' in cardiology.

    ``wide``: two prefixes x two cohorts (4 cells, ~36 comparisons in the BH family);
    otherwise one prefix vs base in one cohort (~8 comparisons).
    """
    arms = []
    conc = inject.get("conc", 10.0)
    for cohort in COHORTS if wide else COHORTS[:1]:
        arms.append(
            Arm(None, None, "clinical", cohort, n=n, scores={"TaskCompletion": (0.8, conc)})
        )
        for prefix in ("card", "rad") if wide else ("card",):
            hit = prefix == "card" and cohort["specialty"] == "cardiology"
            arms.append(
                Arm(
                    prefix,
                    "1",
                    "clinical",
                    cohort,
                    n=n,
                    scores={"TaskCompletion": (0.8 - (inject.get("tc", 0.0) if hit else 0), conc)},
                    p99_factor=inject.get("p99", 1.0) if hit else 1.0,
                    thumbs_down_rate=inject.get("td", 0.05) if hit else 0.05,
                )
            )
    return arms


def _found(metric: str) -> Callable[[DetectionResult], bool]:
    def check(r: DetectionResult) -> bool:
        return any(
            c.metric == metric and c.prefix_id == "card" and c.cohort == {"specialty": "cardiology"}
            for c in r.regressions
        )

    return check


def _any_alert(r: DetectionResult) -> bool:
    return bool(r.regressions)


def _rate(
    runs: int,
    n: int,
    check: Callable[[DetectionResult], bool],
    *,
    looks: int = 1,
    config: DetectionConfig | None = None,
    seed0: int = 0,
    wide: bool = True,
    **inject: float,
) -> float:
    """Share of seeded runs in which ``check`` holds at any look (data grows by n/looks)."""
    hits = 0
    for run in range(runs):
        con = scratch_store()
        for look in range(looks):
            generate(
                con,
                _arms(n // looks, wide=wide, **inject),
                seed=(seed0 + run) * 1000 + look,
                id_offset=look * 10**8,
            )
            if check(run_detection(con, config=config)):
                hits += 1
                break
        con.close()
    return hits / runs


def _report(name: str, rate: float, runs: int) -> None:
    print(f"\n[detection] {name}: {rate:.3f} over {runs} runs")


def test_aa_single_look() -> None:
    rate = _rate(40, 1000, _any_alert, seed0=100)
    _report("A/A single look, n=1000/arm, 4 cells vs base", rate, 40)
    assert rate <= 0.05


def test_aa_repeated_looks() -> None:
    rate = _rate(12, 2000, _any_alert, looks=20, seed0=200)
    _report("A/A 20 looks on growing data (100 -> 2000/arm)", rate, 12)
    assert rate <= 0.05


def test_task_completion_drop_found() -> None:
    rate = _rate(20, 200, _found("TaskCompletion"), tc=0.15, seed0=300, wide=False)
    _report("TaskCompletion -0.15 at n=200/side (Beta scores, sd~0.12), 1 cell", rate, 20)
    assert rate >= 0.95


def test_p99_regression_found() -> None:
    rate = _rate(20, 2500, _found("latency_p99"), p99=1.5, seed0=400, wide=False)
    _report("latency p99 x1.5 at n=2500/side, 1 cell", rate, 20)
    assert rate >= 0.95


def test_thumbs_down_doubling_found() -> None:
    rate = _rate(20, 2000, _found("thumbs_down_rate"), td=0.10, seed0=500, wide=False)
    _report("thumbs-down 5% -> 10% at n=2000/side, 1 cell", rate, 20)
    assert rate >= 0.95


def test_min_effect_and_min_n_gate_alerts() -> None:
    """A real but tiny TaskCompletion drop (-0.02) is significant at this n, but below the
    0.05 minimum effect: no alert. Too few requests: not even tested."""
    con = scratch_store()
    generate(con, _arms(20000, tc=0.02), seed=7)
    res = run_detection(con, config=DetectionConfig(metrics=["TaskCompletion"]))
    tc = [
        c
        for c in res.comparisons
        if c.prefix_id == "card" and c.cohort == {"specialty": "cardiology"}
    ]
    assert tc and tc[0].q_value < 0.05 and not tc[0].flagged
    lenient = run_detection(
        con, config=DetectionConfig(metrics=["TaskCompletion"], score_min_effect=0.01)
    )
    assert any(c.flagged for c in lenient.comparisons)
    # two cohorts of 45: neither a cohort slice nor the whole route (90) reaches min_n 100
    small = scratch_store()
    generate(small, _arms(45, tc=0.5), seed=8)
    assert run_detection(small).comparisons == []


# --- windows mode: fixed-horizon tests of the latest completed evaluation window -----------

W = timedelta(hours=1)
T0 = datetime(2025, 1, 1)  # a window boundary: windows are aligned to the Unix epoch
WINDOWS = DetectionConfig(sequential="windows", window=W)
Signature = dict[tuple[Any, ...], tuple[float, float, bool]]


def _schedule(windows: int, per_window: int, tail: int) -> list[tuple[datetime, timedelta]]:
    """(start, length) of each batch of traffic; detection runs right after each batch, with
    the batch's end as its clock. ``per_window`` batches fill each of ``windows`` windows,
    then ``tail`` batches arrive in the next window, which does not complete during the run."""
    out = []
    for w in range(windows):
        step = W / per_window
        out += [(T0 + w * W + i * step, step) for i in range(per_window)]
    step = W / (tail + 1)
    out += [(T0 + windows * W + i * step, step) for i in range(tail)]
    return out


def _signature(r: DetectionResult) -> Signature:
    return {
        (c.prefix_id, c.prefix_version, c.route, tuple(sorted(c.cohort.items())), c.metric,
         c.baseline): (c.p_value, c.q_value, c.flagged)
        for c in r.comparisons
    }  # fmt: skip


def _same(a: Signature, b: Signature) -> bool:
    """Same comparisons, same decisions, same p and q (up to floating-point summation order)."""
    return a.keys() == b.keys() and all(
        a[k][2] == b[k][2] and a[k][:2] == pytest.approx(b[k][:2], rel=1e-9, abs=1e-300) for k in a
    )


def _windows_rate(
    runs: int,
    n: int,
    check: Callable[[DetectionResult], bool],
    *,
    windows: int = 1,
    per_window: int = 1,
    tail: int = 1,
    seed0: int = 0,
    wide: bool = True,
    **inject: float,
) -> tuple[float, float]:
    """Windows mode on growing data (``n`` per arm and window, see :func:`_schedule`): the share
    of seeded runs in which ``check`` holds at any look, and the mean number of windows tested
    per run. Every re-test of a window must repeat its first test (asserted)."""
    hits, tested = 0, 0
    batch = n // per_window
    for run in range(runs):
        con = scratch_store()
        first: dict[datetime | None, Signature] = {}
        hit = False
        for look, (start, length) in enumerate(_schedule(windows, per_window, tail)):
            generate(
                con,
                _arms(batch, wide=wide, **inject),
                seed=(seed0 + run) * 1000 + look,
                start=start,
                duration=length,
                id_offset=look * 10**8,
            )
            r = run_detection(con, until=start + length, config=WINDOWS)
            sig = _signature(r)
            if r.window.since in first:
                assert _same(sig, first[r.window.since]), f"re-test of {r.window} differs"
            elif sig:
                first[r.window.since] = sig
            hit = hit or check(r)
        hits += hit
        tested += len(first)
        con.close()
    return hits / runs, tested / runs


def test_evaluation_windows_are_epoch_aligned_utc() -> None:
    day = timedelta(days=1)
    assert evaluation_window(day, "2025-03-04T13:00:00") == evaluation_window(
        day, "2025-03-04T00:00:00Z"
    )
    w = evaluation_window(day, "2025-03-04T00:00:00Z")
    assert (w.since, w.until) == (datetime(2025, 3, 3), datetime(2025, 3, 4))
    # 01:00 at +02:00 is 23:00 UTC on the 3rd: the 3rd is still open
    w = evaluation_window(day, "2025-03-04T01:00:00+02:00")
    assert (w.since, w.until) == (datetime(2025, 3, 2), datetime(2025, 3, 3))
    # the delay holds a closed window back until late data had time to arrive
    w = evaluation_window(day, "2025-03-04T00:30:00", delay=timedelta(hours=1))
    assert (w.since, w.until) == (datetime(2025, 3, 2), datetime(2025, 3, 3))
    with pytest.raises(DetectionConfigError, match="window"):
        DetectionConfig(sequential="windows", window=timedelta(0)).validate()
    with pytest.raises(DetectionConfigError, match="duration"):
        DetectionConfig(sequential="windows", window="a week").validate()  # type: ignore[arg-type]


def test_durations_and_ages_out_of_range_are_query_errors() -> None:
    """Settings, CLI options and queries share one duration parser: a length beyond what a
    timedelta holds, or an age before year 1, is a InvalidArgument saying so (the CLI prints it,
    the API answers 400), never an OverflowError."""
    from prefixscope.analytics.query import InvalidArgument, parse_duration, parse_time

    assert parse_duration("1.5h") == timedelta(hours=1, minutes=30)
    assert parse_duration(" 90 m ") == timedelta(minutes=90)
    with pytest.raises(InvalidArgument, match="out of range"):
        parse_duration("99999999999999999d")
    with pytest.raises(InvalidArgument, match="out of range"):
        parse_time("99999999999999999d")
    with pytest.raises(InvalidArgument, match="time '99999999d' is out of range"):
        parse_time("99999999d")  # a valid timedelta, but before year 1
    with pytest.raises(InvalidArgument, match="must be like"):
        parse_duration("a week")


def test_windows_mode_tests_each_completed_window_once(tmp_path: Path) -> None:
    """A run tests the latest completed window; every run until the next window completes
    re-tests the same data, so it repeats the same p-values and refreshes the same alert."""
    arms = _arms(500, wide=False, td=0.12)  # window 0: thumbs-down 5 % -> 12 %
    with Store(tmp_path) as store:
        con = store.cursor()
        generate(con, arms, seed=1, start=T0, duration=W / 2)
        inside = run_detection(con, until=T0 + W / 2, config=WINDOWS)
        assert (inside.window.since, inside.window.until) == (T0 - W, T0)
        assert inside.comparisons == []  # the open window is never tested
        generate(con, arms, seed=2, start=T0 + W / 2, duration=W / 2, id_offset=10**8)
        res, alerts = detect_and_alert(con, None, T0 + W, WINDOWS)
        assert (res.window.since, res.window.until) == (T0, T0 + W)
        [a] = [x for x in alerts if x.metric == "thumbs_down_rate"]
        assert a.method == "windows:rate:pooled_z" and a.n == 1000
        assert a.details["evaluation_window"] == {
            "since": T0.isoformat(),
            "until": (T0 + W).isoformat(),
            "length_s": 3600.0,
            "delay_s": 0.0,
        }
        first = _signature(res)
        # traffic keeps arriving in the next (open) window; re-runs see the same window
        for look in range(3):
            clock = T0 + W + (look + 1) * W / 4
            generate(
                con,
                _arms(250, wide=False),
                seed=10 + look,
                start=clock - W / 4,
                duration=W / 4,
                id_offset=(2 + look) * 10**8,
            )
            again, refreshed = detect_and_alert(con, None, clock, WINDOWS)
            assert (again.window.since, again.window.until) == (T0, T0 + W)
            assert _same(_signature(again), first)
            assert a.id in {x.id for x in refreshed}
        assert [x.id for x in list_alerts(con) if x.metric == "thumbs_down_rate"] == [a.id]
        # a since inside the window would make the tested data depend on the clock
        with pytest.raises(DetectionConfigError, match="cuts into the evaluation window"):
            run_detection(con, T0 + W / 2, T0 + W + W / 2, WINDOWS)
        ok = run_detection(con, T0, T0 + W + W / 2, WINDOWS)
        assert _same(_signature(ok), first)
        # with a delay, the window is first tested 10 minutes after it closed
        late = DetectionConfig(sequential="windows", window=W, window_delay=timedelta(minutes=10))
        assert (
            run_detection(con, until=T0 + W + timedelta(minutes=5), config=late).comparisons == []
        )
        assert _same(_signature(run_detection(con, until=T0 + W * 1.2, config=late)), first)
        # window 1 completes (no regression in it): its test resolves the alert
        generate(con, _arms(250, wide=False), seed=20, start=T0 + W * 1.75, duration=W / 4,
                 id_offset=9 * 10**8)  # fmt: skip
        nxt, _ = detect_and_alert(con, None, T0 + 2 * W, WINDOWS)
        assert (nxt.window.since, nxt.window.until) == (T0 + W, T0 + 2 * W)
        assert {c.metric for c in nxt.comparisons} >= {"thumbs_down_rate"}
        assert not any(c.metric == "thumbs_down_rate" for c in nxt.regressions)
        [closed] = [x for x in list_alerts(con) if x.id == a.id]
        assert closed.status == "resolved"


def test_windows_mode_cli(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        generate(store.cursor(), _arms(500, wide=False, td=0.12), seed=3, start=T0, duration=W)
    runner = CliRunner()
    base = ["run", "--data-dir", str(tmp_path), "--sequential", "windows", "--window", "1h"]
    clock = (T0 + W * 1.5).isoformat()
    res = runner.invoke(analytics_group, [*base, "--until", clock, "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["sequential"] == "windows"
    assert out["window"] == {"since": T0.isoformat(), "until": (T0 + W).isoformat()}
    assert out["comparisons"] > 0
    res = runner.invoke(analytics_group, [*base, "--until", clock, "--since", clock])
    assert res.exit_code != 0 and "cuts into the evaluation window" in res.output
    res = runner.invoke(analytics_group, [*base[:-1], "soon", "--until", clock])
    assert res.exit_code != 0 and "duration" in res.output


def test_windows_aa_repeated_looks() -> None:
    """A/A, 4 cells, 20 looks on growing data: 10 while the window is open (nothing is
    tested), then 10 while the next window fills (the completed window is re-tested)."""
    rate, tested = _windows_rate(20, 1000, _any_alert, per_window=10, tail=10, seed0=600)
    _report("windows A/A, 20 looks (10 in the open window, 10 re-tests), 4 cells", rate, 20)
    assert tested == 1
    assert rate <= 0.05


@pytest.mark.parametrize(
    ("name", "n", "metric", "inject"),
    [
        ("TaskCompletion -0.15 at n=200/side (Beta scores)", 200, "TaskCompletion", {"tc": 0.15}),
        ("thumbs-down 5% -> 10% at n=1500/side", 1500, "thumbs_down_rate", {"td": 0.10}),
        ("latency p99 x1.5 at n=1500/side", 1500, "latency_p99", {"p99": 1.5}),
    ],
)
def test_windows_regression_found(name: str, n: int, metric: str, inject: dict[str, float]) -> None:
    """Reduced versions (20 runs, comfortable n); the issue's sizes run under ``-m slow``.
    Each run tests the completed window, then re-tests it once while the next one fills."""
    seed0 = 700 + 100 * ["TaskCompletion", "thumbs_down_rate", "latency_p99"].index(metric)
    rate, tested = _windows_rate(20, n, _found(metric), seed0=seed0, wide=False, **inject)
    _report(f"windows {name}, 1 cell", rate, 20)
    assert tested == 1
    assert rate >= 0.95


SLOW = {
    # name: (runs, n, check, kwargs, requirement)
    "A/A single look, 4 cells": (200, 1000, _any_alert, {}, "<="),
    "A/A 20 looks, 4 cells": (60, 2000, _any_alert, {"looks": 20}, "<="),
    "TC -0.15 n=200, Beta scores, 1 cell": (
        200,
        200,
        _found("TaskCompletion"),
        {"tc": 0.15, "wide": False},
        ">=",
    ),
    "p99 x1.5 n=2500, 1 cell": (
        100,
        2500,
        _found("latency_p99"),
        {"p99": 1.5, "wide": False},
        ">=",
    ),
    "thumbs-down x2 n=2000, 1 cell": (
        200,
        2000,
        _found("thumbs_down_rate"),
        {"td": 0.10, "wide": False},
        ">=",
    ),
    # informational (reported, not asserted): the example sizes and harder settings
    "TC -0.15 n=200, pass/fail scores, 1 cell": (
        200,
        200,
        _found("TaskCompletion"),
        {"tc": 0.15, "conc": 0.0, "wide": False},
        "info",
    ),
    "p99 x1.5 n=1000, 1 cell": (
        100,
        1000,
        _found("latency_p99"),
        {"p99": 1.5, "wide": False},
        "info",
    ),
    "thumbs-down x2 n=1500, 1 cell": (
        200,
        1500,
        _found("thumbs_down_rate"),
        {"td": 0.10, "wide": False},
        "info",
    ),
    "thumbs-down x2 n=1000, 1 cell": (
        200,
        1000,
        _found("thumbs_down_rate"),
        {"td": 0.10, "wide": False},
        "info",
    ),
    "thumbs-down x2 n=1000, 1 cell, fixed horizon": (
        200,
        1000,
        _found("thumbs_down_rate"),
        {"td": 0.10, "wide": False, "config": DetectionConfig(sequential="fixed")},
        "info",
    ),
}


@pytest.mark.slow
@pytest.mark.fullsim
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", list(SLOW))
def test_full_simulation(name: str) -> None:
    runs, n, check, kw, want = SLOW[name]
    rate = _rate(runs, n, check, seed0=10_000 + 1000 * list(SLOW).index(name), **kw)
    _report(f"{name} ({'informational' if want == 'info' else want})", rate, runs)
    if want == "<=":
        assert rate <= 0.05
    elif want == ">=":
        assert rate >= 0.95


SLOW_WINDOWS = {
    # name: (runs, n per arm and window, check, kwargs, requirement)
    "A/A, 20 looks (10 in the open window, 10 re-tests), 4 cells": (
        200,
        1000,
        _any_alert,
        {"per_window": 10, "tail": 10},
        "<=",
    ),
    "TC -0.15 n=200, Beta scores, 1 cell": (
        200,
        200,
        _found("TaskCompletion"),
        {"tc": 0.15, "wide": False},
        ">=",
    ),
    # true power ~96 % (exact: 95.8 % at BH's first step), so 1000 runs (SE 0.6 points)
    "thumbs-down x2 n=1000, 1 cell": (
        1000,
        1000,
        _found("thumbs_down_rate"),
        {"td": 0.10, "wide": False},
        ">=",
    ),
    "p99 x1.5 n=1500, 1 cell": (
        200,
        1500,
        _found("latency_p99"),
        {"p99": 1.5, "wide": False},
        ">=",
    ),
    # informational (reported, not asserted): below 95 % at the n=1000
    "p99 x1.5 n=1000, 1 cell": (
        400,
        1000,
        _found("latency_p99"),
        {"p99": 1.5, "wide": False},
        "info",
    ),
    "p99 x1.5 n=1200, 1 cell": (
        400,
        1200,
        _found("latency_p99"),
        {"p99": 1.5, "wide": False},
        "info",
    ),
    "TC -0.15 n=200, pass/fail scores, 1 cell": (
        200,
        200,
        _found("TaskCompletion"),
        {"tc": 0.15, "conc": 0.0, "wide": False},
        "info",
    ),
    # alpha is per window: a run that sees 5 windows complete has 5 chances
    "A/A, 5 windows x 4 looks, 4 cells": (
        100,
        1000,
        _any_alert,
        {"windows": 5, "per_window": 4, "tail": 0},
        "info",
    ),
    "TC -0.15 n=320, pass/fail scores, 1 cell": (
        200,
        320,
        _found("TaskCompletion"),
        {"tc": 0.15, "conc": 0.0, "wide": False},
        "info",
    ),
}


@pytest.mark.slow
@pytest.mark.fullsim
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", list(SLOW_WINDOWS))
def test_full_windows_simulation(name: str) -> None:
    runs, n, check, kw, want = SLOW_WINDOWS[name]
    seed0 = 50_000 + 1000 * list(SLOW_WINDOWS).index(name)
    rate, tested = _windows_rate(runs, n, check, seed0=seed0, **kw)
    label = "informational" if want == "info" else want
    _report(f"windows {name} ({label}; {tested:.2f} windows tested per run)", rate, runs)
    if want == "<=":
        assert rate <= 0.05
    elif want == ">=":
        assert rate >= 0.95


def test_default_api_run_under_the_null_with_daily_looks() -> None:
    """Issue 15: the API's default regression run, repeated after every day of A/A traffic
    (100 requests per arm and day, 45 days), raises a false alert in at most alpha of the
    runs (exact binomial test of "rate <= alpha" at the 1 % level; the bench measured 3.3 %
    +/- 1.5 % over 150 runs x 90 days). It is built from the API's own default request,
    resolved against the simulated clock as the server resolves it against its own; the old
    sliding default (``since="7d"``) is measured by bench/detection_errors.py."""
    from prefixscope.analytics.simulate import daily_looks
    from prefixscope.api.detect import detection_config
    from prefixscope.api.models import RegressionRunRequest

    req = RegressionRunRequest()
    config = detection_config(req)
    assert config.sequential == "msprt" and req.since is None  # a growing window
    rate = daily_looks(50, 45, since=req.since, config=config, seed0=300)
    _report("A/A, default API run after each of 45 days (100/arm/day)", rate.value, rate.runs)
    assert sps.binom.sf(rate.hits - 1, rate.runs, 0.05) >= 0.01, rate


def test_generated_periods_hold_each_arms_n_per_period() -> None:
    """``generate(periods=k)``: k consecutive periods, each with every arm's n requests (the
    daily looks store a run's days in one call)."""
    con = scratch_store()
    scores = {"TaskCompletion": (0.8, 10.0)}
    arms = [Arm(None, None, "r", n=30, scores=scores), Arm("card", "1", "r", n=20, scores=scores)]
    generate(con, arms, seed=1, start=datetime(2025, 1, 1), duration=timedelta(days=1), periods=4)
    per_day = (("base", 30), ("card", 20))
    want = [(datetime(2025, 1, 1 + day), arm, n) for day in range(4) for arm, n in per_day]
    day_arm = "date_trunc('day', r.start_time), coalesce(r.prefix_id, 'base')"
    requests = f"SELECT {day_arm}, count(*) FROM requests r GROUP BY ALL ORDER BY ALL"
    assert con.execute(requests).fetchall() == want
    # every request's score (coverage 1) and every feedback event follow it into its period
    scored = (
        f"SELECT {day_arm}, count(*) FROM scores s JOIN requests r USING (trace_id) "
        "WHERE s.created_at > r.end_time GROUP BY ALL ORDER BY ALL"
    )
    assert con.execute(scored).fetchall() == want
    [(feedback, joined)] = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE f.created_at > r.end_time) "
        "FROM feedback f LEFT JOIN requests r USING (trace_id)"
    ).fetchall()
    assert feedback == joined > 0


def test_a_look_reads_nothing_after_its_end() -> None:
    """A regression run with ``until`` sees only what was there then: a look at each day's
    end over a store that already holds the later days finds exactly the comparisons (n,
    p-values, flags) of the same look over a store grown day by day (what
    ``daily_looks`` relies on)."""
    from prefixscope.analytics.alerts import run_and_diff
    from prefixscope.api.detect import detection_config
    from prefixscope.api.models import RegressionRunRequest

    config = detection_config(RegressionRunRequest())
    cohort = {"specialty": "cardiology"}
    arms = [
        Arm(None, None, "clinical", cohort, n=60, scores={"TaskCompletion": (0.8, 10)}),
        Arm("card", "1", "clinical", cohort, n=60, scores={"TaskCompletion": (0.75, 10)}),
    ]
    t0, day = datetime(2025, 1, 1), timedelta(days=1)
    grown, whole = scratch_store(), scratch_store()
    for d in range(5):
        generate(whole, arms, seed=40 + d, start=t0 + d * day, duration=day, id_offset=d * 10**6)

    def looked(con: Any, end: datetime) -> list[tuple[Any, ...]]:
        diff = run_and_diff(con, None, end, config)
        return sorted(
            (c.metric, c.baseline, c.n, c.n_baseline, c.p_value, c.flagged)
            for c in diff.result.comparisons
        )

    tested = 0
    for d in range(5):
        generate(grown, arms, seed=40 + d, start=t0 + d * day, duration=day, id_offset=d * 10**6)
        end = t0 + (d + 1) * day
        later = whole.execute("SELECT count(*) FROM requests WHERE start_time >= ?", [end])
        assert later.fetchall()[0][0] == (4 - d) * 120  # the whole store holds the later days
        want, got = looked(grown, end), looked(whole, end)
        # the same comparisons; p-values to rounding (sums over rows in another order)
        assert [c[:4] + c[5:] for c in got] == [c[:4] + c[5:] for c in want], d
        assert [c[4] for c in got] == pytest.approx([c[4] for c in want], rel=1e-9), d
        tested += len(want)
    assert want and tested > len(want)  # the looks tested something, more than once


@pytest.mark.parametrize("regressed", [0.0, 0.1])
def test_fdr_with_version_families(regressed: float) -> None:
    """Issue 15: comparisons with the previous version (v2 vs v1, v1 vs base share v1) are
    negatively correlated, outside Benjamini-Hochberg's proof. Simulated with 3 versions per
    prefix (210 cells, 350 comparisons), fixed-horizon tests and no minimum effect (BH
    alone): the false-discovery rate stays at or below alpha (within two standard errors)."""
    from prefixscope.analytics.simulate import versions_fdr

    cfg = DetectionConfig(sequential="fixed", score_min_effect=1e-6)
    res = versions_fdr(600, regressed=regressed, config=cfg, seed=21 + int(regressed * 10))
    _report(f"FDR with version families, {regressed:.0%} regressed", res.fdr.value, 600)
    assert res.comparisons == 350  # 210 vs base + 140 vs the previous version
    assert res.fdr.value <= 0.05 + 2 * res.fdr.stderr
    if regressed:
        assert res.power > 0.9  # the simulation finds what it should
    else:
        assert res.any_false.value > 0  # BH is not vacuously silent at this level


def _null_heavy_tails(runs: int, n: int, seed0: int, shape: str = "call") -> dict[str, int]:
    """Runs (of ``runs``) with any false alert per metric family: A/A in one cohort, latency
    lognormal with sigma 1 (heavy-tailed), every metric tested by the API's default run (the
    request the API receives, resolved into its config: mSPRT, default floors and effects)."""
    from prefixscope.analytics.alerts import run_and_diff
    from prefixscope.analytics.comparison import family as _family
    from prefixscope.api.detect import detection_config
    from prefixscope.api.models import RegressionRunRequest

    config = detection_config(RegressionRunRequest())
    cohort = {"specialty": "cardiology"}
    scores = {"TaskCompletion": (0.8, 10.0)}
    hits = {"quantile": 0, "rate": 0, "score": 0}
    for run in range(runs):
        con = scratch_store()
        arms = [
            Arm(p, v, "clinical", cohort, n=n, latency_sigma=1.0, scores=scores)
            for p, v in ((None, None), ("card", "1"))
        ]
        generate(con, arms, seed=seed0 + run, shape=shape)
        diff = run_and_diff(con, None, None, config)
        for fam in {_family(c.metric) for c in diff.result.regressions}:
            hits[fam] += 1
        con.close()
    return hits


@pytest.mark.parametrize("n", [300, 1000, 2000])
def test_null_with_heavy_tailed_latency_per_family(n: int) -> None:
    """Issue 30: no regression anywhere, latency lognormal with sigma 1, n = 300..2,000 per
    arm, through the API's default run: false alerts in at most alpha of the runs on each
    metric family, latency included (exact binomial test of "rate <= alpha" at the 1 %
    level). Reduced here (25 runs); ``-m fullsim`` runs 300 per size, in the SDK's trace
    shape (4 spans a request)."""
    runs = 25
    hits = _null_heavy_tails(runs, n, seed0=900 + n)
    for fam, k in hits.items():
        _report(f"A/A heavy-tailed latency, n={n}/arm, {fam} family", k / runs, runs)
        assert sps.binom.sf(k - 1, runs, 0.05) >= 0.01, (fam, k, runs)


@pytest.mark.slow
@pytest.mark.fullsim
@pytest.mark.parametrize("n", [300, 1000, 2000])
def test_full_null_with_heavy_tailed_latency_per_family(n: int) -> None:
    runs = 300
    hits = _null_heavy_tails(runs, n, seed0=5000 + n, shape="sdk")
    for fam, k in hits.items():
        _report(f"A/A heavy-tailed latency, n={n}/arm, {fam} family", k / runs, runs)
        assert sps.binom.sf(k - 1, runs, 0.05) >= 0.01, (fam, k, runs)
