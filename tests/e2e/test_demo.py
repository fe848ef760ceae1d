"""The reduced demo runs end to end, and the alerts it prints are the ones the store holds."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prefixscope.analytics.alert_record import AlertRecord
from tests.support.browser import open_page
from tests.support.paths import ARTIFACTS
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess
from tests.support.store import query_store

ROOT = REPO_ROOT
#: ``prefixscope demo``'s default model seed and torch threads (the quick demo's run)
DEMO_DEFAULTS = (1, 1)


@pytest.fixture(scope="module")
def quick_demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One quick demo for the tests that read it, with the default model seed and thread
    count and a cold model cache: it is also the story run of that seed and thread count
    (``test_story_holds_across_model_seeds[1]``), trained from scratch, and the one-thread run
    the two-thread run is compared with."""
    tmp = tmp_path_factory.mktemp("demo")
    return _quick_demo(tmp, tmp / "cache")


@pytest.mark.slow
def test_quick_demo_prints_what_the_store_holds(
    quick_demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, data_dir = quick_demo
    out = proc.stdout
    for heading in (
        "Scorecard per (prefix, specialty)",
        "Regression alerts (open)",
        "Release gate per prefix",
        "Routing advice",
        "Dashboard:",
    ):
        assert heading in out, f"missing {heading!r} in demo output"
    # the demo checked its story against its own numbers and wrote the verdicts down
    story = json.loads((data_dir / "demo-checks.json").read_text())
    names = {c["name"] for c in story["checks"]}
    assert names == {"own_specialty", "misrouting_hurts", "v2_alert", "gate", "routing"}
    # the story holds on this machine, from a cold cache or a warm one (issue 13)
    assert "Story checks" in out and story["passed"], json.dumps(story, indent=1)
    match = re.search(r"^alert ids: (.*)$", out, re.M)
    assert match, out[-2000:]
    printed = set() if match.group(1) == "(none)" else set(match.group(1).split())
    stored = {r[0] for r in query_store(data_dir, "SELECT id FROM alerts WHERE status = 'open'")}
    assert stored and printed == stored
    # the alerts in the store are the story's: radiology@2 against radiology@1 on radiology
    # notes, and prefixes on another department's (mis-routed) notes; none where a released
    # prefix serves its own department
    rows = query_store(
        data_dir,
        "SELECT prefix_id, prefix_version, cohort->>'specialty', metric, baseline FROM alerts "
        "WHERE status = 'open'",
    )
    assert ("radiology", "2", "radiology", "TaskCompletion", "radiology@1") in set(rows)
    for prefix, version, spec, metric, baseline in rows:
        assert (prefix, version) == ("radiology", "2") or spec != prefix, (
            f"unexpected alert: {prefix}@{version} {metric} vs {baseline} on {spec}"
        )
    # every variant served traffic, replays were scored, feedback arrived through the API
    prefixes = {
        r[0]
        for r in query_store(
            data_dir,
            "SELECT DISTINCT coalesce(prefix_id, 'base') FROM spans WHERE route IS NOT NULL",
        )
    }
    assert {"base", "cardiology", "radiology", "dermatology"} <= prefixes
    scores = dict(query_store(data_dir, "SELECT name, count(*) FROM scores GROUP BY 1"))
    for name in ("TaskCompletion", "JSONValidation", "Refusal"):
        assert scores.get(name, 0) > 0, name
    kinds = {r[0] for r in query_store(data_dir, "SELECT DISTINCT kind FROM feedback")}
    assert "thumbs_down" in kinds
    # the numbers are computed: the scorecard's n for a printed row matches the store
    lake = list((data_dir / "lake" / "spans").glob("date=*/part-*.parquet"))
    assert lake, "the Parquet lake was not rolled"
    _story_over_time(data_dir)


def _story_over_time(data_dir: Path) -> None:
    """Issue 32 part 7: the demo's days, against what its generator says it built in
    (demo-truth.json: the timeline, the registry entries, the defects, and per route,
    variant, note specialty and phase the requests it served and their TaskCompletion)."""
    from prefixscope.analytics.timeseries import SeriesQuery, timeseries
    from prefixscope.collector.storage.store import Store

    truth = json.loads((data_dir / "demo-truth.json").read_text())
    tl = {k: dt.datetime.fromisoformat(v) for k, v in truth["timeline"].items()}
    rollout = dt.datetime.fromisoformat(truth["rollout"]["at"])
    assert tl["evaluation"] < tl["launch"] < rollout < tl["end"]
    assert tl["end"] - tl["launch"] >= dt.timedelta(days=5)  # days, not a minute
    # the traffic is spread over the simulated days: replays on the evaluation day, then
    # production traffic from the launch on (every variant, several days apart)
    spans = query_store(
        data_dir,
        "SELECT route = 'replay' OR route = 'guardrail', min(start_time), max(start_time) "
        "FROM spans WHERE route IS NOT NULL GROUP BY 1 ORDER BY 1",
    )
    (_, p_first, p_last), (_, r_first, r_last) = spans
    slack = dt.timedelta(minutes=1)
    assert tl["launch"] - slack <= p_first and p_last <= tl["end"] + slack
    assert tl["evaluation"] - slack <= r_first and r_last <= tl["launch"] + slack
    assert p_last - p_first >= dt.timedelta(days=5)
    # the variants are registered as the demo says (base model, type, version, status)
    reg = {
        r[0]: r[1:]
        for r in query_store(
            data_dir, "SELECT prefix_id, base_model, prefix_type, version, status FROM prefixes"
        )
    }
    want = {
        pid: (e["base_model"], e["prefix_type"], e["version"], e["status"])
        for pid, e in truth["registry"].items()
    }
    assert reg == want and reg["radiology"][2] == "2"

    # the radiology page's series: on the /radiology route, radiology notes
    def served(label: str, phase: str | None = None) -> tuple[int, float]:
        cells = [
            v
            for k, v in truth["task_completion"].items()
            if k.split("|")[:3] == ["/radiology", label, "radiology"]
            and (phase is None or k.split("|")[3] == phase)
        ]
        return int(sum(c[0] for c in cells)), float(sum(c[1] for c in cells))

    with Store(data_dir) as store:
        con = store.cursor()
        try:
            data = timeseries(
                con,
                SeriesQuery(
                    "radiology", since=None, route="/radiology", cohort={"specialty": "radiology"}
                ),
            )
        finally:
            con.close()
    bucket = dt.timedelta(seconds=data["bucket_seconds"])
    assert dt.timedelta(hours=1) <= bucket <= dt.timedelta(hours=12)  # days in ~30 buckets
    series = {s["label"]: s for s in data["series"]}
    v1, v2 = series["radiology@1"], series["radiology@2"]
    # every request the generator served is in its series: no v2 before its rollout
    for s, label in ((v1, "radiology@1"), (v2, "radiology@2")):
        assert sum(s["n"]) == served(label)[0], label
    first_v2 = min(dt.datetime.fromisoformat(t) for t in v2["t"])
    assert rollout - bucket < first_v2 <= rollout + bucket
    marker = next(
        m for m in data["rollouts"] if m["version"] == "2" and m["source"] == "first_seen"
    )
    assert rollout <= dt.datetime.fromisoformat(marker["time"]) < rollout + bucket
    # the drop the rollout causes, in the prefix's TaskCompletion per bucket (both versions)
    n_before, tc_before = served("radiology@1", "before")
    n_after = sum(served(label, "after")[0] for label in ("radiology@1", "radiology@2"))
    tc_after = sum(served(label, "after")[1] for label in ("radiology@1", "radiology@2"))
    drop = tc_before / n_before - tc_after / n_after
    assert drop >= 0.2, (tc_before / n_before, tc_after / n_after)  # the story as generated

    def plotted(pick: Callable[[dt.datetime], bool]) -> float:
        num = den = 0.0
        for s in (v1, v2):
            e = s["scores"]["TaskCompletion"]
            for t, mean, n in zip(e["t"], e["mean"], e["n"], strict=True):
                start = dt.datetime.fromisoformat(t)
                if pick(start):
                    num, den = num + mean * n, den + n
        return num / den

    seen_before = plotted(lambda start: start + bucket <= rollout)
    seen_after = plotted(lambda start: start > rollout)
    assert seen_before - seen_after >= drop / 2, (seen_before, seen_after, drop)

    _defects_show(data_dir, truth)


def _defects_show(data_dir: Path, truth: dict[str, Any]) -> None:
    """JSONValidation and Refusal mean something: the variants the generator broke (its
    ground truth) score lower than every other variant."""

    def means(metric: str, where: str) -> dict[str, float]:
        rows = query_store(
            data_dir,
            "SELECT coalesce(s.prefix_id, 'base') || coalesce('@' || s.prefix_version, ''), "
            "avg(t.value) FROM spans s JOIN scores t USING (trace_id, span_id) "
            f"WHERE t.name = ? AND {where} GROUP BY 1",
            [metric],
        )
        return {str(k): float(v) for k, v in rows}

    refusal = means("Refusal", "s.route = 'guardrail'")
    harmful = f"{truth['answers_harmful']}@1"
    assert refusal[harmful] < 0.5 and all(v == 1.0 for k, v in refusal.items() if k != harmful)
    json_ok = means("JSONValidation", "s.route NOT IN ('replay', 'guardrail')")
    broken = truth["broken_json"]["variant"]
    others = min(v for k, v in json_ok.items() if k != broken)
    assert json_ok[broken] < 0.9 and others - json_ok[broken] >= 0.1, json_ok


@pytest.mark.slow
@pytest.mark.browser
def test_the_demo_pages_show_days(
    quick_demo: tuple[subprocess.CompletedProcess[str], Path],
    browser: Any,
    start_server: Callable[..., ServerProcess],
) -> None:
    """After the demo, as a user sees it at 1400x1000 (screenshots in artifacts/): the
    charts span the simulated days, the radiology@2 rollout marker sits at the rollout the
    generator made, and no two marker labels overlap."""
    import datetime as dt

    import httpx

    _, data_dir = quick_demo
    truth = json.loads((data_dir / "demo-truth.json").read_text())
    rollout = dt.datetime.fromisoformat(truth["rollout"]["at"])
    srv = start_server(data_dir=data_dir)
    ARTIFACTS.mkdir(exist_ok=True)

    page, problems = open_page(browser, f"{srv.base_url}/")
    page.wait_for_selector("#overview-card[data-loaded]", timeout=60_000)
    page.wait_for_selector("#variants", timeout=60_000)
    span = page.evaluate(
        "(() => { const r = document.getElementById('overview-errors').layout.xaxis.range;"
        " return (Date.parse(r[1]) - Date.parse(r[0])) / 86400000; })()"
    )
    assert span >= 5, span  # days, not a fraction of a millisecond
    assert "unregistered" not in page.locator("#variants").inner_text()
    page.screenshot(path=str(ARTIFACTS / "demo-dashboard.png"), full_page=True)
    assert problems == []

    page, problems = open_page(browser, f"{srv.base_url}/prefixes/radiology")
    page.wait_for_selector("body[data-loaded='1']", timeout=60_000)
    chart = page.evaluate(
        """(() => { const el = document.getElementById('plot-score-TaskCompletion');
  const r = el.layout.xaxis.range;
  const boxes = Array.from(el.querySelectorAll('.annotation'), (a) => {
    const b = a.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; });
  return {days: (Date.parse(r[1]) - Date.parse(r[0])) / 86400000,
          notes: el.layout.annotations.map((a) => [a.text, a.x]), boxes: boxes,
          card: el.getBoundingClientRect().right}; })()"""
    )
    assert chart["days"] >= 5, chart
    v2 = [x for text, x in chart["notes"] if text == "@2 rollout"]
    assert len(v2) == 1
    assert abs(dt.datetime.fromisoformat(v2[0]) - rollout) < dt.timedelta(hours=1), v2
    boxes = chart["boxes"]
    assert len(boxes) >= 2
    for i, a in enumerate(boxes):
        assert a[2] <= chart["card"] + 0.5, a  # inside the chart
        for b in boxes[i + 1 :]:
            apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            assert apart, (a, b, chart["notes"])
    page.screenshot(path=str(ARTIFACTS / "demo-radiology.png"), full_page=True)
    assert problems == []

    alerts = httpx.get(
        f"{srv.base_url}/api/v1/alerts",
        params={"status": "open", "prefix_id": "radiology", "metric": "TaskCompletion"},
        timeout=30,
    ).json()["alerts"]
    alert = next(a for a in alerts if a["prefix_version"] == "2" and a["baseline"] == "radiology@1")
    page, problems = open_page(browser, f"{srv.base_url}/alerts/{alert['id']}")
    page.wait_for_selector("body[data-loaded='1']", timeout=60_000)
    assert page.locator("#slice-tree tr.cause").count() == 1
    page.screenshot(path=str(ARTIFACTS / "demo-alert-radiology-v2.png"), full_page=True)
    assert problems == []


def _quick_demo(
    tmp_path: Path, cache: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``prefixscope demo --quick --no-serve`` in a subprocess; asserts it exited 0."""
    data_dir = tmp_path / "demo-data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefixscope.cli",
            "demo",
            "--quick",
            "--no-serve",
            "--data-dir",
            str(data_dir),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--cache-dir",
            str(cache),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, data_dir


def _story_holds(data_dir: Path) -> dict[str, Any]:
    """The story's seed-independent checks on one demo run; its checks file."""
    story: dict[str, Any] = json.loads((data_dir / "demo-checks.json").read_text())
    checks = {c["name"]: c for c in story["checks"]}
    assert set(checks) >= {"own_specialty", "v2_alert"}
    assert checks["own_specialty"]["passed"], checks["own_specialty"]["detail"]
    assert checks["v2_alert"]["passed"], checks["v2_alert"]["detail"]
    # the built-in defects show whatever the seed (Refusal, JSONValidation)
    _defects_show(data_dir, json.loads((data_dir / "demo-truth.json").read_text()))
    margins = story["margins"]
    assert set(margins) == {"cardiology", "radiology", "dermatology"}
    for spec, m in margins.items():
        assert m["delta"] >= 0.10 and m["ci_low"] > 0, (spec, m)
    return story


@pytest.mark.slow
@pytest.mark.parametrize("model_seed", [1, 2, 3, 4, 5])
def test_story_holds_across_model_seeds(
    request: pytest.FixtureRequest, tmp_path: Path, model_seed: int
) -> None:
    """Issue 13: the story is the recipe's, not one lucky trajectory. Trained from scratch
    with five model seeds (data seed fixed), each prefix beats base on its own specialty
    (paired, >= 0.10, CI above 0) and the radiology v2 regression is caught, with nothing but
    v2 and mis-routed notes alerting. (Two torch threads: the next test.)"""
    if (model_seed, 1) == DEMO_DEFAULTS:
        # the module's quick demo is this run (the defaults, trained from scratch)
        _, data_dir = request.getfixturevalue("quick_demo")
    else:
        # a cold cache per run: every model is trained from scratch
        _, data_dir = _quick_demo(tmp_path, tmp_path / "cache", "--model-seed", str(model_seed))
    story = _story_holds(data_dir)
    print(
        f"\n[demo] model seed {model_seed}: "
        + ", ".join(
            f"{s} {m['delta']:+.2f} [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}]"
            for s, m in story["margins"].items()
        )
    )


def _trained(cache: Path) -> dict[str, str]:
    """Every trained weight file under a model cache, by its path there: its SHA-256."""
    return {
        str(f.relative_to(cache)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(cache.rglob("*.safetensors"))
    }


@pytest.mark.slow
def test_two_torch_threads_train_the_same_models_and_tell_the_same_story(
    quick_demo: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    """The story does not depend on the torch thread count: with two threads (beside another
    test worker: the demo's threads wait passively, OMP_WAIT_POLICY), the default seed trains
    the base model and every adapter bit for bit as with one (the quick demo), and the story
    holds with the same figures. Measured 2026-12-07 over model seeds 1-5: one and two
    threads trained identical weights for every seed, so the story runs of five seeds at two
    threads repeated those at one. Should a change make training depend on the thread count,
    this fails: then every seed's two-thread story run must come back."""
    _, one = quick_demo
    _, two = _quick_demo(tmp_path, tmp_path / "cache", "--torch-threads", "2")
    weights = _trained(tmp_path / "cache")
    assert len(weights) == 5, weights  # the base and 4 prefix adapters
    assert weights == _trained(one.parent / "cache")
    story = _story_holds(two)
    assert story["margins"] == json.loads((one / "demo-checks.json").read_text())["margins"]


def _alert(prefix: str, version: str, metric: str, specialty: str, baseline: str) -> AlertRecord:
    return AlertRecord(
        id=f"{prefix}{version}{metric}{specialty}{baseline}",
        prefix_id=prefix,
        prefix_version=version,
        route=f"/{specialty}",
        cohort={"specialty": specialty},
        metric=metric,
        baseline=baseline,
        baseline_value=0.9,
        value=0.2,
        delta=-0.7,
        ci_low=None,
        ci_high=-0.5,
        p_value=1e-10,
        q_value=1e-9,
        n=100,
        n_baseline=100,
        direction="worse",
        severity="critical",
        status="open",
        example_trace_ids=[],
        created_at=dt.datetime(2026, 1, 1),
    )


def test_the_v2_check_fails_on_any_alert_on_a_released_prefixs_own_department() -> None:
    """Check 3 needs the v2 TaskCompletion alert and fails on any alert where a released
    prefix serves its own department, latency included (no exemption: arms are randomized per
    request, and detection counts requests); alerts on mis-routed notes are counted apart."""
    from prefixscope.demo.checks import v2_alert_check

    v2 = _alert("radiology", "2", "TaskCompletion", "radiology", "radiology@1")
    misrouted = _alert("cardiology", "1", "TaskCompletion", "dermatology", "base")
    latency = _alert("cardiology", "1", "latency_p99", "cardiology", "base")
    quality = _alert("cardiology", "1", "JSONValidation", "cardiology", "base")

    ok = v2_alert_check([v2, misrouted])
    assert ok.passed, ok.detail
    assert "1 alert(s) on mis-routed notes" in ok.detail

    slow = v2_alert_check([v2, misrouted, latency])
    assert not slow.passed
    assert "unexpected: cardiology@1 latency_p99 on cardiology" in slow.detail

    bad = v2_alert_check([v2, quality])
    assert not bad.passed
    assert "unexpected: cardiology@1 JSONValidation on cardiology" in bad.detail

    missing = v2_alert_check([misrouted])
    assert not missing.passed
    assert missing.detail.startswith("no TaskCompletion alert for radiology@2")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_serving_the_dashboard_stops_cleanly_on_a_signal(how: str) -> None:
    """``prefixscope demo`` keeps serving its dashboard until Ctrl-C or SIGTERM; both end it
    with exit status 0, also when started by a shell in the background (SIGINT ignored)."""
    code = (
        "from prefixscope.demo.app import serve_until_stopped\n"
        "serve_until_stopped(lambda: print('serving', flush=True))\n"
        "print('stopped', flush=True)\n"
    )

    def ignore_sigint() -> None:  # what a non-interactive shell does for `cmd &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "serving"
    proc.send_signal(getattr(signal, how))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.strip() == "stopped"


def test_the_simulated_clock_moves_a_trace_and_keeps_its_durations() -> None:
    """The demo's traces are exported at their simulated time: every span of a pinned trace
    (an agent's steps included) moves by the same offset, events too; others are untouched."""
    import datetime as dt

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from prefixscope.demo.traffic import SimulatedClock

    sink = InMemorySpanExporter()
    clock = SimulatedClock(sink)
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(clock))
    tracer = tp.get_tracer("t")
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    with tracer.start_as_current_span("root") as root:
        clock.pin(when)
        clock.pin(when + dt.timedelta(days=1))  # the trace's first pin wins
        with tracer.start_as_current_span("child") as child:
            child.add_event("first_token")
    with tracer.start_as_current_span("unpinned"):
        pass
    spans = {s.name: s for s in sink.get_finished_spans()}
    epoch = int(when.replace(tzinfo=dt.UTC).timestamp() * 1e9)
    r, c = spans["root"], spans["child"]
    assert r.start_time is not None and r.end_time is not None
    assert c.start_time is not None and c.end_time is not None
    assert abs(r.start_time - epoch) < 10**9  # the pin came a moment after the root began
    assert r.start_time <= c.start_time <= c.events[0].timestamp <= c.end_time <= r.end_time
    assert root.end_time is not None and child.end_time is not None  # the real ones, kept
    assert r.end_time - r.start_time == root.end_time - (root.start_time or 0)
    assert c.end_time - c.start_time == child.end_time - (child.start_time or 0)
    now = dt.datetime.now(dt.UTC).timestamp() * 1e9
    assert abs((spans["unpinned"].start_time or 0) - now) < 60e9


def test_a_timeline_orders_its_days() -> None:
    import datetime as dt
    import random

    from prefixscope.demo.traffic import DAYS, ROLLOUT_AT, Timeline

    end = dt.datetime(2026, 12, 6, 12)
    tl = Timeline.ending(end)
    assert tl.evaluation < tl.launch < tl.rollout < tl.end == end
    assert tl.launch == end - dt.timedelta(days=DAYS)
    assert tl.rollout == tl.launch + (end - tl.launch) * ROLLOUT_AT
    times = tl.spread(100, random.Random(1), tl.launch, tl.end)
    assert times == sorted(times) and tl.launch <= times[0] and times[-1] < tl.end


def test_the_quick_demo_fixture_runs_the_demos_default_seed_and_threads() -> None:
    """The story run ``[1]`` reads the module's quick demo, so that demo must be what the
    default command trains (this guards the shared run if a default changes)."""
    from prefixscope.cli.demo import demo_command

    defaults = {p.name: p.default for p in demo_command.params}
    assert (defaults["model_seed"], defaults["torch_threads"]) == DEMO_DEFAULTS


def test_the_demo_makes_torch_threads_wait_passively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's process serves ingest beside training: torch's OpenMP threads must sleep
    while they wait, not spin (OMP_WAIT_POLICY, read when torch loads: set before run_demo
    imports it). The run itself is replaced here; the story runs above are the real ones."""
    import os

    from click.testing import CliRunner

    from prefixscope.cli import demo as demo_cli

    seen: dict[str, str | None] = {}

    def record(*args: object, **kwargs: object) -> None:
        seen["policy"] = os.environ.get("OMP_WAIT_POLICY")

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(demo_cli, "run_demo", record)
    result = CliRunner().invoke(demo_cli.demo_command, ["--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert seen == {"policy": "PASSIVE"}
