"""The test schedule: the modules make test starts first are modules that exist."""

from __future__ import annotations

from pathlib import Path

from tests.support.schedule import LONGEST_FIRST

ROOT = Path(__file__).resolve().parents[2]


def test_the_longest_modules_listed_first_exist() -> None:
    missing = [path for path in LONGEST_FIRST if not (ROOT / path).is_file()]
    assert not missing, f"renamed or removed: update tests/conftest.py LONGEST_FIRST: {missing}"
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
