"""The reduced demo runs end to end, and the alerts it prints are the ones the store holds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import query_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_demo_prints_what_the_store_holds(tmp_path: Path) -> None:
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
            str(ROOT / ".cache" / "prefixscope-demo-test"),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    assert ("Story checks" in out) and (story["passed"] or "do not support" in out)
    match = re.search(r"^alert ids: (.*)$", out, re.M)
    assert match, out[-2000:]
    printed = set() if match.group(1) == "(none)" else set(match.group(1).split())
    stored = {r[0] for r in query_store(data_dir, "SELECT id FROM alerts WHERE status = 'open'")}
    assert printed == stored
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
    lake = list((data_dir / "lake" / "spans").glob("date=*/*.parquet"))
    assert lake, "the Parquet lake was not rolled"
