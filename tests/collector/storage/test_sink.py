"""The DuckDB sink: a duplicate anywhere in a group never fails the group or doubles a span."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from prefixscope.collector.storage import sinks
from prefixscope.collector.storage.dedupe import RecentKeys, key_hashes
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store, scalar
from tests.support.otlp import decoded_table as _table


def test_new_duplicate_and_mixed_groups(tmp_path: Path) -> None:
    with Store(tmp_path, checkpoint_wal_mb=64) as store:
        sink = DuckDBSink(store)
        sink.open()
        a, b = _table(1, 10), _table(2, 10)
        assert sink.write(a, 1) == 10  # all new: the fast path
        assert sink.write(a, 2) == 0  # all duplicates
        assert sink.write(pa.concat_tables([b, a.slice(0, 3)]), 3) == 10  # mixed
        assert sink.write(pa.concat_tables([_table(3, 5)] * 2), 4) == 5  # twice in one group
        con = store.cursor()
        assert scalar(con, "SELECT count(*) FROM spans") == 25
        assert scalar(con, "SELECT count(DISTINCT (trace_id, span_id)) FROM spans") == 25
        # the first write of each span is kept (its batch number)
        assert (
            scalar(
                con,
                "SELECT max(ingest_batch) FROM spans WHERE trace_id = ?",
                [a.column("trace_id")[0].as_py()],
            )
            == 1
        )
        sink.close()


def test_dedupe_survives_a_restart_and_a_hash_collision_is_not_a_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _table(1, 10)
    with Store(tmp_path) as store:
        sink = DuckDBSink(store)
        sink.open()
        assert sink.write(a, 1) == 10
        sink.close()
    with Store(tmp_path) as store:
        sink = DuckDBSink(store)
        sink.open()
        assert len(sink.recent) == 10  # rebuilt from the rows ingested within the window
        assert sink.write(a, 2) == 0
        sink.close()
    # every key hashing alike: each is a candidate, and the exact checks keep the new ones
    monkeypatch.setattr(sinks, "key_hashes", lambda t, s: np.zeros(len(t), dtype=np.uint64))
    with Store(tmp_path) as store:
        sink = DuckDBSink(store)
        sink.open()
        assert sink.write(pa.concat_tables([_table(2, 4), a.slice(0, 2)]), 3) == 4
        con = store.cursor()
        assert scalar(con, "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans") == 14
        sink.close()


def test_dedupe_window_is_bounded_in_time(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        sink = DuckDBSink(store, dedupe_window_s=1.0)
        sink.open()
        a = _table(1, 10)
        assert sink.write(a, 1) == 10
        assert sink.write(a, 2) == 0
        time.sleep(2.1)
        assert sink.write(_table(2, 3), 3) == 3  # a later commit expires the old bucket
        assert len(sink.recent) == 3
        # beyond the window a retry is stored again: docs/guides/ingest.md's guarantee stops there
        assert sink.write(a, 4) == 10


def test_key_hashes_parse_hex_ids_and_fall_back_for_others() -> None:
    hexed = key_hashes(pa.array(["0" * 31 + "1", "f" * 32]), pa.array(["0" * 15 + "2"] * 2))
    other = key_hashes(pa.array(["not-hex", "0" * 31 + "1"]), pa.array(["x", "0" * 15 + "2"]))
    assert hexed.dtype == np.uint64 and len(set(hexed.tolist())) == 2
    assert len(set(other.tolist())) == 2
    again = key_hashes(pa.array(["0" * 31 + "1"]), pa.array(["0" * 15 + "2"]))
    assert again[0] == hexed[0]
    keys = RecentKeys(60.0)
    keys.add(hexed[:1], now=0.0)
    assert keys.seen(hexed).tolist() == [True, False]
    keys.add(hexed[1:], now=100.0)  # the first bucket is past the window now
    assert keys.seen(hexed).tolist() == [False, True]


def test_recent_keys_finds_every_key_of_sealed_and_open_buckets() -> None:
    """Buckets answer from sorted arrays behind a bitmap filter (the open one's grows with it):
    no false negatives, and keys never added are not reported (a filter hit is confirmed by the
    arrays)."""
    rng = np.random.default_rng(7)
    keys = RecentKeys(160.0)  # 16 buckets of 10 s
    added = []
    for step in range(12):  # 12 commits, one per 5 s: several sealed buckets and an open one
        batch = rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64)
        keys.add(batch, now=step * 5.0)
        added.append(batch)
    sealed = [b for b in keys._buckets if b.sealed]
    assert len(sealed) >= 4 and not keys._buckets[-1].sealed
    every = np.concatenate(added)
    assert keys.seen(every).all()
    fresh = rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64)
    fresh = fresh[~np.isin(fresh, every)]
    assert not keys.seen(fresh).any()
    mixed = np.concatenate([fresh[:100], every[::1000]])
    assert keys.seen(mixed).tolist() == [False] * 100 + [True] * len(every[::1000])


def test_the_window_filter_is_rebuilt_without_losing_a_key_of_the_window() -> None:
    """The filter over the whole window keeps expired buckets' bits until it is rebuilt from
    the buckets (when it holds twice the keys it was built for). Over many windows of steady
    traffic, with rebuilds and expiries interleaved, every key committed within the window is
    still found, keys never added are not, and expired keys eventually go."""
    rng = np.random.default_rng(11)
    keys = RecentKeys(100.0, buckets=8)
    history: list[tuple[float, np.ndarray]] = []
    rebuilt_at: list[float] = []
    t = 0.0
    for step in range(1500):  # 300 s: three windows
        batch = rng.integers(0, 2**64 - 1, int(rng.integers(1, 3000)), dtype=np.uint64)
        before = keys._filter
        keys.add(batch, now=t)
        history.append((t, batch))
        if keys._filter is not before:
            rebuilt_at.append(t)
        t += 0.2
        if step % 100 == 99:
            window = np.concatenate([b for at, b in history if at > t - 0.2 - 100.0])
            assert keys.seen(window).all(), step
            fresh = rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64)
            assert not keys.seen(fresh[~np.isin(fresh, window)]).any(), step
    # rebuilt as the window filled, and again in steady state (expired bits dropped)
    assert sum(at > 150.0 for at in rebuilt_at) >= 1, rebuilt_at
    expired = np.concatenate([b for at, b in history if at < t - 200.0])
    assert not keys.seen(expired).any()  # their buckets are gone (the filter alone says nothing)


def test_a_memory_bound_drops_the_oldest_buckets_early_and_says_how_far_back_it_reaches() -> None:
    """With ``max_keys`` the window holds at most that many keys (plus the open bucket): the
    oldest buckets go first, every key newer than the last one dropped is still found, and
    ``covered_s`` reports the shorter reach until the dropped keys would have expired anyway."""
    rng = np.random.default_rng(5)
    keys = RecentKeys(160.0, max_keys=50_000)  # 16 buckets of 10 s
    added: list[tuple[float, np.ndarray]] = []
    assert keys.covered_s(now=0.0) == 160.0
    for step in range(12):  # 20k keys every 10 s: 240k keys in 120 s, far beyond the bound
        batch = rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64)
        keys.add(batch, now=step * 10.0)
        added.append((step * 10.0, batch))
        assert len(keys) <= 50_000 or keys.buckets == 1
    assert len(keys) == 40_000  # two buckets of 20k: a third would exceed 50k
    assert keys.evicted == 10 * 20_000
    # the buckets held are those of t=100 and t=110: the newest dropped one ended at 100
    assert keys.covered_s(now=110.0) == pytest.approx(10.0)
    newest = np.concatenate([b for at, b in added if at >= 100.0])
    assert keys.seen(newest).all()
    dropped = np.concatenate([b for at, b in added if at < 100.0])
    assert not keys.seen(dropped).any()
    # without the bound the same traffic is held whole
    unbounded = RecentKeys(160.0)
    for at, batch in added:
        unbounded.add(batch, now=at)
    assert len(unbounded) == 240_000 and unbounded.evicted == 0
    assert unbounded.covered_s(now=110.0) == 160.0
    # once the traffic slows down, the reach grows back to the window's length
    assert keys.covered_s(now=300.0) == 160.0


def test_the_sink_bounds_its_window_and_rebuilds_only_the_newest_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``dedupe_max_keys`` bounds the sink's window at run time (with a warning) and at a
    restart (the newest whole batches that fit); retries of what it still holds are dropped."""
    tables = [_table(i, 10) for i in range(6)]
    with Store(tmp_path) as store:
        sink = DuckDBSink(store, dedupe_window_s=16.0, dedupe_max_keys=25)
        sink.open()
        with caplog.at_level("WARNING", logger=sinks.__name__):
            for i, t in enumerate(tables):
                assert sink.write(t, i + 1) == 10
                time.sleep(1.05)  # a new 1 s bucket per commit
        assert len(sink.recent) <= 25 and sink.recent.evicted >= 30
        assert sink.recent.covered_s() < 16.0
        assert "dedupe window at its memory bound (25 keys)" in caplog.text
        assert sink.write(tables[-1], 7) == 0  # the newest keys are held
        sink.close()
    with Store(tmp_path) as store:
        sink = DuckDBSink(store, dedupe_window_s=600.0, dedupe_max_keys=25)
        sink.open()
        assert len(sink.recent) == 20  # batches 6 and 5: a third batch would exceed 25
        assert sink.write(tables[5], 8) == 0 and sink.write(tables[4], 9) == 0
        sink.close()
    with Store(tmp_path) as store:
        sink = DuckDBSink(store, dedupe_window_s=600.0)
        sink.open()
        assert len(sink.recent) == 60  # no bound: every row of the window
        sink.close()


def test_dedupe_max_keys_follows_the_store_budget() -> None:
    from prefixscope.collector.storage.store import dedupe_max_keys

    assert dedupe_max_keys(None) == 0 and dedupe_max_keys(0) == 0
    assert dedupe_max_keys(1024) == 1024 * 2**20 // 4 // 14
    assert dedupe_max_keys(2048) == 2 * dedupe_max_keys(1024)
