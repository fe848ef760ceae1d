"""Short retries run (bench/reliability/retries.py): SDK retry on 429 and raw resends."""

from __future__ import annotations

import pytest

from bench.reliability import retries
from tests.support.reports import assert_goals

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial


def test_retries_and_resends_never_duplicate_and_lose_nothing() -> None:
    rep = retries.run(sdk_s=3.0, sdk_clients=2, bodies=10, copies=3, spans=64)
    assert_goals(rep)
    figures = {f.name: f.value for f in rep.figures}
    assert figures["duplicates in spans"] == "0"
    assert figures["acknowledged spans missing"] == "0"
