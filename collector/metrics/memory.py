"""Where the serving process's memory goes, for ``/metrics`` (read at scrape time).

* ``prefixscope_store_memory_bytes{tag}``: DuckDB's own accounting (``duckdb_memory()``) of
  the embedded store, by what holds it: ``BASE_TABLE`` (table blocks in the buffer pool),
  ``IN_MEMORY_TABLE`` (rows appended since the last checkpoint), ``HASH_TABLE``,
  ``ORDER_BY``, ``PARQUET_READER`` ... DuckDB's memory limit (a share of
  ``--store-memory-mb``, see store.py) bounds their sum.
* ``prefixscope_store_temporary_bytes{tag}``: what queries spilled to disk beyond that limit.
* ``prefixscope_dedupe_window_keys``, ``prefixscope_dedupe_window_seconds`` and
  ``prefixscope_dedupe_evicted_keys_total``: the dedupe window's keys, how far back it reaches
  (``--dedupe-window``, or less at its memory bound) and the keys it dropped early.
* ``prefixscope_process_resident_bytes{process}``: the resident set of the serving process
  (``server``) and of its decode workers together (``workers``), the figure the operator's
  container limit sees.

The difference between the server's resident set and the store's accounting is Python, Arrow
buffers, the dedupe window and the allocators' free lists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..storage.store import Store

if TYPE_CHECKING:
    from ..storage.sinks import DuckDBSink

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes(pid: int) -> int:
    """Resident set of one process (0 if it is gone or /proc is unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * _PAGE


class MemoryCollector:
    """A prometheus_client collector over the store's and the processes' memory."""

    def __init__(self, store: Store | None, worker_pids: Callable[[], list[int]]) -> None:
        self._store = store
        self._worker_pids = worker_pids

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # declared up front (no scrape at registration: the store may not be open yet)
        yield from self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "prefixscope_process_resident_bytes",
                "Resident memory of the serving process (server) and its decode workers "
                "(workers, summed)",
                labels=["process"],
            ),
            GaugeMetricFamily(
                "prefixscope_store_memory_bytes",
                "Memory DuckDB accounts to the embedded store, by tag (duckdb_memory()); "
                "its limit, half of --store-memory-mb, bounds the sum",
                labels=["tag"],
            ),
            GaugeMetricFamily(
                "prefixscope_store_temporary_bytes",
                "Bytes the embedded store spilled to temporary files, by tag",
                labels=["tag"],
            ),
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rss, mem, tmp = self._families()
        rss.add_metric(["server"], resident_bytes(os.getpid()))
        rss.add_metric(["workers"], sum(resident_bytes(p) for p in self._worker_pids()))
        yield rss
        if self._store is None or self._store.closed:
            return
        try:
            con = self._store.cursor()
        except RuntimeError:  # closed meanwhile
            return
        try:
            rows = con.execute(
                "SELECT tag, memory_usage_bytes, temporary_storage_bytes FROM duckdb_memory()"
            ).fetchall()
        except duckdb.Error as exc:  # an invalidated database: /metrics still answers
            log.debug("duckdb_memory() failed: %s", exc)
            return
        finally:
            con.close()
        for tag, used, spilled in rows:
            mem.add_metric([str(tag)], float(used or 0))
            tmp.add_metric([str(tag)], float(spilled or 0))
        yield mem
        yield tmp


class DedupeCollector:
    """The dedupe window of the embedded store's sink, read at scrape time."""

    def __init__(self, sink: DuckDBSink) -> None:
        self._sink = sink

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from self.families()

    @staticmethod
    def families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        """The families, empty (what ``describe`` declares)."""
        return (
            GaugeMetricFamily(
                "prefixscope_dedupe_window_keys",
                "Span keys held by the dedupe window (12-14 bytes each)",
            ),
            GaugeMetricFamily(
                "prefixscope_dedupe_window_seconds",
                "How far back the dedupe window reaches: --dedupe-window, or less while the "
                "spans of that time exceed its memory bound (a quarter of --store-memory-mb)",
            ),
            CounterMetricFamily(
                "prefixscope_dedupe_evicted_keys",
                "Span keys the dedupe window dropped before their time to stay within its "
                "memory bound",
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        keys, seconds, evicted = self.families()
        recent = self._sink.recent  # replaced whole on a rebuild: read it once
        keys.add_metric([], len(recent))
        seconds.add_metric([], recent.covered_s())
        evicted.add_metric([], recent.evicted)
        yield from (keys, seconds, evicted)
