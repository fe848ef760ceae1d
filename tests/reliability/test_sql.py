"""SQL sandbox escape list (bench/reliability/sql.py) against the real server."""

from __future__ import annotations

import pytest

from bench.reliability import sql
from tests.support.reports import assert_goals

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial


def test_every_sql_escape_attempt_is_refused() -> None:
    # 2 s: "wide rows" (truncated by the byte cap) took 0.06-0.5 s, once over 1 s after the
    # memory-guard interruption before it
    rep = sql.run(timeout_s=2.0, max_rows=100)
    assert_goals(rep)
    escaped = [n for n in rep.notes if n.startswith("ESCAPED")]
    assert not escaped, escaped
    assert sum(1 for n in rep.notes if n.startswith("refused")) >= 60
