"""Short log flood (bench/reliability/logflood.py): a flood of big OTLP log exports beside a
one-span trace probe. The probe keeps its latency, the log senders are shed with 429 and
Retry-After once the logs' budget is spent, SIGTERM during the flood drains and exits in
time, and nothing acknowledged is lost."""

from __future__ import annotations

import pytest

from bench.reliability import logflood
from tests.support.reports import assert_goals

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial


def test_log_flood_does_not_stall_traces_and_sigterm_exits() -> None:
    # slack: a loaded CI machine; the unbounded path made the probe wait for tens of seconds
    rep = logflood.run(
        seconds=8.0, clients=4, records=10_000, baseline_s=4.0, bodies=6, p99_slack_ms=1000.0
    )
    assert_goals(rep)
