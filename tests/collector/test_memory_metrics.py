"""The store's memory budget: DuckDB's share of --store-memory-mb, and /metrics saying where
the serving process's memory goes (DuckDB's own accounting, the processes' resident sets)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import pytest

from bench.workload import make_request
from prefixscope.collector.storage.store import (
    DUCKDB_MEMORY_MIN_MB,
    DUCKDB_MEMORY_SHARE,
    Store,
    duckdb_memory_mb,
)
from tests.support.serverproc import ServerProcess, metric_values

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _samples(srv: ServerProcess, name: str) -> dict[str, float]:
    """Samples of one metric family, keyed by the value of its single label."""
    out: dict[str, float] = {}
    for (n, labels), v in metric_values(srv).items():
        if n == name:
            assert len(labels) == 1, labels
            out[labels[0][1]] = v
    return out


def _limit_shown(mb: int) -> str:
    """How DuckDB shows a memory limit of ``mb`` MB (its own formatting, e.g. '488.2 MiB')."""
    con = duckdb.connect(config={"memory_limit": f"{mb}MB"})
    try:
        return str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
    finally:
        con.close()


@pytest.mark.parametrize(
    ("budget", "duckdb_mb"), [(1024, 512), (2048, 1024), (100, DUCKDB_MEMORY_MIN_MB)]
)
def test_duckdb_gets_its_share_of_the_store_budget(
    tmp_path: Path, budget: int, duckdb_mb: int
) -> None:
    assert DUCKDB_MEMORY_SHARE == 0.5  # the table above assumes it
    assert duckdb_memory_mb(budget) == duckdb_mb
    with Store(tmp_path, memory_mb=budget) as store:
        cur = store.cursor()
        shown = cur.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        cur.close()
    assert shown == _limit_shown(duckdb_mb)
    assert shown != _limit_shown(budget)


def test_metrics_say_where_the_memory_goes(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server("--workers", "1")
    for seed in range(3):
        r = httpx.post(
            srv.base_url + "/v1/traces",
            content=make_request(512, seed=seed).SerializeToString(),
            headers=PROTOBUF,
        )
        assert r.status_code == 200, r.text
    rss = _samples(srv, "prefixscope_process_resident_bytes")
    assert set(rss) == {"server", "workers"}
    # a Python process with DuckDB, Arrow and FastAPI loaded; one decode worker
    assert rss["server"] > 50 * 2**20
    assert rss["workers"] > 10 * 2**20
    store = _samples(srv, "prefixscope_store_memory_bytes")
    assert "BASE_TABLE" in store and "IN_MEMORY_TABLE" in store, store
    # the 1,536 rows just committed are held by DuckDB, below the process's resident set
    assert 0 < sum(store.values()) < rss["server"]
    spilled = _samples(srv, "prefixscope_store_temporary_bytes")
    assert set(spilled) == set(store)
    # the dedupe window: the 1,536 keys, its full 15 minutes (far below its bound), none dropped
    values = metric_values(srv)
    assert values[("prefixscope_dedupe_window_keys", ())] == 3 * 512
    assert values[("prefixscope_dedupe_window_seconds", ())] == 900.0
    assert values[("prefixscope_dedupe_evicted_keys_total", ())] == 0


def test_metrics_of_a_lake_mode_collector_have_no_store(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = start_server("--store", "lake", "--lake-path", str(tmp_path / "lake"), "--workers", "0")
    rss = _samples(srv, "prefixscope_process_resident_bytes")
    assert rss["server"] > 50 * 2**20 and rss["workers"] == 0
    assert _samples(srv, "prefixscope_store_memory_bytes") == {}
