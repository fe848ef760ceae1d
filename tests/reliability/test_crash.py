"""Short crash-safety run (bench/reliability/crash.py): kill -9 under real SDK exporters."""

from __future__ import annotations

import pytest

from bench.reliability import crash
from tests.support.reports import assert_goals

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial


@pytest.mark.slow
def test_kill_9_under_sdk_exporters_loses_no_acknowledged_span() -> None:
    rep = crash.run(trials=2, clients=2, min_s=0.5, max_s=1.0)
    assert_goals(rep)
    figures = {f.name: f.value for f in rep.figures}
    assert figures["acknowledged spans lost (worst trial)"] == "0"
