"""The reduced demo runs end to end, and the alerts it prints are the ones the store holds."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import query_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_demo_prints_what_the_store_holds(tmp_path: Path) -> None:
    proc, data_dir = _quick_demo(tmp_path, ROOT / ".cache" / "prefixscope-demo-test")
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


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("model_seed", [1, 2, 3, 4, 5])
def test_story_holds_across_model_seeds_and_threads(
    tmp_path: Path, model_seed: int, threads: int
) -> None:
    """Issue 13: the story is the recipe's, not one lucky trajectory. Trained from scratch
    with five model seeds (data seed fixed) and 1 or 2 torch threads, each prefix beats base
    on its own specialty (paired, >= 0.10, CI above 0) and the radiology v2 regression is
    caught, with nothing but v2 and mis-routed notes alerting."""
    # a cold cache per run: every model is trained from scratch
    _, data_dir = _quick_demo(
        tmp_path,
        tmp_path / "cache",
        "--model-seed",
        str(model_seed),
        "--torch-threads",
        str(threads),
    )
    story = json.loads((data_dir / "demo-checks.json").read_text())
    checks = {c["name"]: c for c in story["checks"]}
    assert set(checks) >= {"own_specialty", "v2_alert"}
    assert checks["own_specialty"]["passed"], checks["own_specialty"]["detail"]
    assert checks["v2_alert"]["passed"], checks["v2_alert"]["detail"]
    margins = story["margins"]
    assert set(margins) == {"cardiology", "radiology", "dermatology"}
    for spec, m in margins.items():
        assert m["delta"] >= 0.10 and m["ci_low"] > 0, (spec, m)
    print(
        f"\n[demo] model seed {model_seed}, {threads} thread(s): "
        + ", ".join(
            f"{s} {m['delta']:+.2f} [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}]"
            for s, m in margins.items()
        )
        + f"; {checks['v2_alert']['detail']}"
    )


def _alert(prefix: str, version: str, metric: str, specialty: str, baseline: str) -> dict:
    return {
        "prefix_id": prefix,
        "prefix_version": version,
        "metric": metric,
        "baseline": baseline,
        "cohort": {"specialty": specialty},
        "value": 0.2,
        "baseline_value": 0.9,
        "q_value": 1e-9,
    }


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
