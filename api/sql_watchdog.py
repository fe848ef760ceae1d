"""The SQL sandbox's memory watchdog: running user queries are interrupted once the process's
resident set has grown by more than ``--sql-memory-mb`` since the first of them started. It
bounds what DuckDB's own ``memory_limit`` cannot see (Python and Arrow buffers, one huge
vector built before an interrupt is checked is bounded apart, by :mod:`.sql_sizes`)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * _PAGE


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(slots=True)
class Watched:
    """A running query's cursor, and whether something interrupted it."""

    cursor: duckdb.DuckDBPyConnection
    stopped: bool = False


class MemoryWatchdog:
    """Interrupts running user queries once the process's resident set has grown by more
    than ``budget_bytes`` since the first of them started (polled every 10 ms)."""

    def __init__(self, budget_bytes: int, interval_s: float = 0.01) -> None:
        self.budget_bytes = budget_bytes
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._running: list[Watched] = []
        self._baseline = 0
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, cur: duckdb.DuckDBPyConnection) -> Iterator[Watched]:
        item = Watched(cur)
        with self._lock:
            if not self._running:
                self._baseline = _rss_bytes()
            self._running.append(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sql-watchdog", daemon=True)
                self._thread.start()
        try:
            yield item
        finally:
            with self._lock:
                self._running.remove(item)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    self._thread = None
                    return
                over = _rss_bytes() - self._baseline > self.budget_bytes
                if over:
                    for item in self._running:
                        if not item.stopped:
                            item.stopped = True
                            with contextlib.suppress(duckdb.Error):
                                item.cursor.interrupt()
            time.sleep(self.interval_s)
