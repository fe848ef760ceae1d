"""Short overload run (bench/reliability/overload.py): shed with Retry-After, stay responsive."""

from __future__ import annotations

import pytest

from bench.reliability import overload
from tests.support.reports import assert_goals

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial


def test_overload_sheds_stays_responsive_and_keeps_acknowledged() -> None:
    rep = overload.run(seconds=6.0, clients=24, rss_bound_mb=1024, healthz_bound_ms=2000)
    assert_goals(rep)
