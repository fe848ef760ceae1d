"""The reliability benchmarks' reports, asserted."""

from __future__ import annotations

from bench.reliability.common import Report


def assert_goals(rep: Report) -> None:
    assert rep.ok, rep.table() + "\n" + "\n".join(rep.notes)
