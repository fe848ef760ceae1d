"""The repository stands alone: nothing outside it is needed to run a documented command.

A copy of the tracked files, with no sibling folder (no design or bench folder of the
steering checkout) beside it, must collect the whole test suite and import every bench
script. This caught the benchmarks importing the reference workload from outside the
repository, which a user who clones it lacks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT as REPO_ROOT
from tests.support.repo import copy_tracked as _copy_tracked

ROOT = REPO_ROOT


@pytest.fixture(scope="module")
def lone_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # an empty parent: no sibling folder of any kind
    dest = tmp_path_factory.mktemp("alone") / "prefixscope"
    dest.mkdir()
    _copy_tracked(dest)
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]
    return dest


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CI"] = ""  # collecting only: nothing is skipped or run
    return env


def test_the_whole_suite_collects_without_anything_beside_it(lone_copy: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=lone_copy,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " collected" in proc.stdout or "tests collected" in proc.stdout, proc.stdout[-500:]


def test_every_bench_script_imports_without_anything_beside_it(lone_copy: Path) -> None:
    scripts = sorted(
        p.relative_to(lone_copy).with_suffix("").as_posix().replace("/", ".")
        for p in (lone_copy / "bench").rglob("*.py")
        if p.name != "__init__.py"
    )
    assert "bench.workload" in scripts and "bench.reliability.fuzz" in scripts
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code, *scripts],
        cwd=lone_copy,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_workload_has_the_reference_shape() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.workload import make_request

    req = make_request(512, seed=3)
    spans = req.resource_spans[0].scope_spans[0].spans
    assert len(spans) == 512
    assert {len(s.attributes) for s in spans} == {15}
    per_span = len(req.SerializeToString()) / 512
    assert 520 <= per_span <= 560, per_span  # ~536 B per span on the wire
    again = make_request(512, seed=3).SerializeToString()
    assert again == req.SerializeToString()
    other = {s.span_id for s in make_request(512, seed=4).resource_spans[0].scope_spans[0].spans}
    assert not other & {s.span_id for s in spans}
