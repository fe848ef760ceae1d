"""Auth on every route (bench/reliability/auth.py): no token, wrong token, read on write."""

from __future__ import annotations

import pytest

from bench.reliability import auth
from tests.support.reports import assert_goals

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial


def test_every_route_refuses_missing_wrong_and_underscoped_tokens() -> None:
    rep = auth.run()
    assert_goals(rep)
    figures = {f.name: f.value for f in rep.figures}
    assert int(figures["route x case checks"].replace(",", "")) >= 60
