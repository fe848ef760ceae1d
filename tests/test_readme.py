"""Keep the README true: settings, metrics and CLI commands it names must exist, and back."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from prefixscope.config import Settings
from prefixscope.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [f.name for f in dataclasses.fields(Settings) if f"`{f.name}`" not in README]
    assert not missing, f"settings missing from README: {missing}"


def _metric_names() -> set[str]:
    """Every family the server exports: the server's own, the per-variant series and the
    memory gauges read at scrape time."""
    from prefixscope.collector.storage.memory import DedupeCollector, MemoryCollector
    from prefixscope.collector.variant_metrics import VariantMetrics

    return (
        {m.name for m in Metrics().registry.collect()}
        | {m.name for m in VariantMetrics().collect()}
        | {m.name for m in MemoryCollector(None, list).describe()}
        | {m.name for m in DedupeCollector.families()}
    )


def test_every_metric_is_documented() -> None:
    names = _metric_names()
    missing = sorted(n for n in names if n not in README)
    assert not missing, f"metrics missing from README: {missing}"


def test_readme_names_no_unknown_metric() -> None:
    names = _metric_names()
    mentioned = set(re.findall(r"`(prefixscope_[a-z_]+?)(?:_total)?(?:\{[^}]*\})?`", README))
    unknown = sorted(n for n in mentioned if n not in names)
    assert not unknown, f"README mentions metrics that do not exist: {unknown}"


def test_readme_prefixscope_subcommands_exist() -> None:
    commands = set(re.findall(r"prefixscope ([a-z][a-z-]+)(?: ([a-z][a-z-]+))?", README))
    assert commands
    for cmd, sub in sorted(commands):
        args = [cmd, sub] if sub and sub not in {"demo", "serve"} else [cmd]
        proc = subprocess.run(
            [sys.executable, "-m", "prefixscope.cli", *args, "--help"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 and len(args) == 2:  # "prefixscope serve data" etc.
            proc = subprocess.run(
                [sys.executable, "-m", "prefixscope.cli", cmd, "--help"],
                capture_output=True,
                text=True,
            )
        assert proc.returncode == 0, f"`prefixscope {' '.join(args)}` in README: {proc.stderr}"


def test_readme_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"^make ([a-z-]+)", README, re.M)):
        assert re.search(rf"^{target}:", makefile, re.M), f"make {target} is not a target"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
