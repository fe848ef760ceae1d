"""The embedded server's lake roll streams bounded batches into one file per date partition,
and the lake holds exactly the committed rows (no loss, no duplicate), across batches and
partitions; a roll that fails midway leaves no partial file and is redone whole."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefixscope.collector.decoding import PROTOBUF, decode_body
from prefixscope.collector.spans.model import SPAN_COLUMN_NAMES
from prefixscope.collector.storage import lake as lake_mod
from prefixscope.collector.storage.lake import LakeRoller
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store
from prefixscope.metrics import Metrics
from tests.support.otlp import make_body

DAY_NS = 86_400 * 10**9


def _tables(n: int) -> list[pa.Table]:
    out = []
    for i in range(n):
        d = decode_body(make_body(i, 300)[0], PROTOBUF, None, 1 << 30, 32768)
        assert d.table is not None
        # every other request a day later: two date partitions
        if i % 2:
            shifted = pa.compute.add(d.table.column("start_time").cast(pa.int64()), DAY_NS // 1000)
            d.table = d.table.set_column(
                SPAN_COLUMN_NAMES.index("start_time"),
                "start_time",
                shifted.cast(pa.timestamp("us")),
            )
        out.append(d.table)
    return out


def _lake_rows(lake: Path) -> list[tuple[str, str]]:
    files = sorted(p for p in lake.rglob("*.parquet") if not p.name.startswith("."))
    rows = []
    for f in files:
        t = pq.read_table(f, columns=["trace_id", "span_id"])
        rows += list(zip(t.column("trace_id").to_pylist(), t.column("span_id").to_pylist()))
    return sorted(rows)


def test_roll_streams_batches_into_one_file_per_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lake_mod, "ROLL_BATCH_ROWS", 128)  # many batches per roll
    with Store(tmp_path) as store:
        sink = DuckDBSink(store)
        sink.open()
        for i, t in enumerate(_tables(6)):
            sink.write(t, i + 1)
        # 256-row groups: each date's 900 rows are written in several pieces, so the
        # failure below lands midway through the roll (it must not depend on the default)
        metrics = Metrics()
        roller = LakeRoller(store, metrics, interval_s=0, row_group_rows=256)

        # a roll that fails midway publishes nothing and records no progress
        real = pq.ParquetWriter.write_table
        calls = {"n": 0}

        def failing(
            self: pq.ParquetWriter, table: pa.Table, row_group_size: int | None = None
        ) -> None:
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError("disk gone")
            real(self, table, row_group_size=row_group_size)

        monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
        with pytest.raises(OSError):
            roller.roll()
        assert calls["n"] == 5  # the failure happened, after earlier pieces were written
        lake_files = [p for p in (tmp_path / "lake").rglob("*") if p.is_file()]
        # only the tiers' empty schema files (spans, scores, feedback, requests)
        assert [p.name for p in lake_files] == [".schema.parquet"] * 4
        monkeypatch.setattr(pq.ParquetWriter, "write_table", real)

        assert roller.roll() == 1800
        assert roller.roll() == 0  # nothing new
        sink.write(_tables(7)[6], 7)
        assert roller.roll() == 300
        # every pass is timed, the failed one too
        count = metrics.registry.get_sample_value(
            "prefixscope_lake_pass_seconds_count", {"step": "roll"}
        )
        assert count == 4
        cur = store.cursor()
        stored = sorted(cur.execute("SELECT trace_id, span_id FROM span_rows").fetchall())
        sink.close()
    files = sorted((tmp_path / "lake" / "spans").glob("date=*/part-*.parquet"))
    assert len({f.parent.name for f in files}) == 2
    assert len(files) == 3  # roll 1: one file per partition; roll 2: one partition
    assert _lake_rows(tmp_path / "lake") == stored and len(stored) == 2100
    assert pq.read_schema(files[0]).names == list(SPAN_COLUMN_NAMES)


def test_roll_starts_once_roll_rows_are_committed_not_only_on_the_interval(
    tmp_path: Path,
) -> None:
    """With an hour's interval, the roll still runs as soon as ``roll_rows`` spans were
    committed, and a roll resets the count; below it, nothing rolls before the interval."""
    import time

    from prefixscope.collector.storage.lake import rolled_batch

    tables = _tables(4)
    with Store(tmp_path) as store:
        sink = DuckDBSink(store)
        sink.open()
        roller = LakeRoller(store, Metrics(), interval_s=3600, row_group_rows=256, roll_rows=500)
        roller.start()
        try:

            def watermark() -> int:
                cur = store.cursor()
                try:
                    return rolled_batch(cur)
                finally:
                    cur.close()

            def commit(i: int) -> None:
                sink.write(tables[i], i + 1)
                roller.committed(tables[i])

            commit(0)  # 300 spans: below roll_rows
            time.sleep(1.0)
            assert watermark() == 0
            commit(1)  # 600 spans waiting: a roll starts without waiting for the interval
            deadline = time.monotonic() + 20
            while watermark() != 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert watermark() == 2
            commit(2)  # the count started again at the roll: 300 spans wait
            time.sleep(1.0)
            assert watermark() == 2
            commit(3)
            deadline = time.monotonic() + 20
            while watermark() != 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert watermark() == 4
            t0 = time.monotonic()
        finally:
            roller.stop()
        assert time.monotonic() - t0 < 5  # stop() wakes the loop; it does not wait an hour
        sink.close()
    assert len(_lake_rows(tmp_path / "lake")) == 1200


def test_lake_roll_rows_must_not_be_negative() -> None:
    from prefixscope.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="lake_roll_rows"):
        Settings(lake_roll_rows=-1).validate()
