"""SQL sandbox escape list (bench/reliability/sql.py) against the real server."""

from __future__ import annotations

from bench.reliability import sql

from .test_reliability_crash import assert_goals


def test_every_sql_escape_attempt_is_refused() -> None:
    rep = sql.run(timeout_s=1.0, max_rows=100)
    assert_goals(rep)
    escaped = [n for n in rep.notes if n.startswith("ESCAPED")]
    assert not escaped, escaped
    assert sum(1 for n in rep.notes if n.startswith("refused")) >= 60
