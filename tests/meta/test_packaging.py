"""The wheel holds every module, template and static file, and builds without warnings about
package data (a new user's ``make demo`` printed screens of "Package would be ignored")."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.paths import ROOT as REPO_ROOT
from tests.support.repo import copy_tracked as _copy_tracked

ROOT = REPO_ROOT


def test_wheel_contents_and_quiet_build(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    _copy_tracked(src)
    out = tmp_path / "wheel"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "would be ignored" not in output and "absent from the `packages`" not in output
    assert "is deprecated" not in output, output[-2000:]
    (wheel,) = out.glob("prefixscope-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"prefixscope/py.typed", "prefixscope/demo/tinymodels.py"}
    # every module of every folder, subpackages included: a sub-package missing from
    # pyproject's package list would be left out of the wheel
    for folder, package in (("prefixscope", "prefixscope"), ("api", "prefixscope/api"),
                            ("collector", "prefixscope/collector"),
                            ("analytics", "prefixscope/analytics"), ("demo", "prefixscope/demo"),
                            ("instrumentation", "prefixscope/instrumentation")):  # fmt: skip
        expected |= {
            f"{package}/{p.relative_to(ROOT / folder).as_posix()}"
            for p in (ROOT / folder).rglob("*.py")
            if "__pycache__" not in p.parts
        }
    assert "prefixscope/collector/receivers/http.py" in expected
    assert "prefixscope/cli/serve.py" in expected
    for sub in ("static", "templates"):
        expected |= {f"prefixscope/api/{sub}/{p.name}" for p in (ROOT / "api" / sub).iterdir()}
    missing = sorted(expected - names)
    assert not missing, missing
