"""Meta-tests keeping the documented surface honest: every setting is a documented CLI flag."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing

import pytest

from prefixscope.cli.serve import _FLAG_NAMES
from prefixscope.config import ENV_PREFIX, Settings

FIELDS = [f.name for f in dataclasses.fields(Settings)]


@pytest.fixture(scope="module")
def serve_help() -> str:
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run(
        [sys.executable, "-m", "prefixscope.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _squash(text: str) -> str:
    """Help output without whitespace: click wraps lines (also after hyphens)."""
    return "".join(text.split())


def flag_candidates(name: str) -> set[str]:
    """``--data-dir`` for ``data_dir``; list settings may use the singular (``--token``)."""
    if name in _FLAG_NAMES:  # a flag named apart from its setting (e.g. --sample)
        return {"--" + _FLAG_NAMES[name]}
    dashed = "--" + name.replace("_", "-")
    hint = typing.get_type_hints(Settings)[name]
    return {dashed, dashed.removesuffix("s")} if hint == list[str] else {dashed}


@pytest.mark.parametrize("name", FIELDS)
def test_setting_is_a_documented_serve_flag(name: str, serve_help: str) -> None:
    flags = set(serve_help.replace(",", " ").split())
    assert flags & flag_candidates(name), f"setting {name!r} has no flag in `serve --help`"
    squashed = _squash(serve_help)
    assert _squash(Settings.help_for(name)) in squashed, f"help text of {name!r} missing"
    assert ENV_PREFIX + name.upper() in squashed, f"environment variable of {name!r} missing"
