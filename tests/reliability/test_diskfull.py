"""Disk full and read-only data dir (bench/reliability/diskfull.py).

Regression: after a checkpoint failed on a read-only (or full) disk DuckDB invalidated the
database; every later commit answered 503 forever and SIGTERM ended in a traceback. The sink now
reopens the store once the disk is writable again (collector/storage/sinks.py and store.py).
"""

from __future__ import annotations

import os

import pytest

from bench.reliability import diskfull
from tests.support.reports import assert_goals

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
def test_disk_full_and_read_only_answer_503_then_recover() -> None:
    rep = diskfull.run(size_mb=48, fault_s=5.0, spans=512, recover_timeout=30.0)
    assert_goals(rep)
    figures = {f.name: f.value for f in rep.figures}
    assert figures["read-only: 503 answers while faulted"] != "0"
    assert figures["tracebacks in server log"] == "0"
