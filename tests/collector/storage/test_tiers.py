"""Hot and cold tiers (collector/storage/tiers.py): one ``spans`` view over DuckDB and the lake,
no gap and no duplicate at the boundary, nothing lost by kill -9 at any step of a roll or a move."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import generate_latest

from prefixscope.collector.spans.model import SPAN_ARROW_SCHEMA, SPAN_COLUMN_NAMES
from prefixscope.collector.storage import annotation_views, attribution, tiers, views
from prefixscope.collector.storage.lake import LakeRoller, rolled_batch
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store
from prefixscope.metrics import Metrics
from tests.support.api_fixtures import otlp_request, otlp_span, sql_rows
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess
from tests.support.store import query_store

NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)
COLS = ", ".join(SPAN_COLUMN_NAMES)


def _spans(first: int, n: int, age: dt.timedelta | None, model: str = "m") -> pa.Table:
    cols: dict[str, pa.Array] = {f.name: pa.nulls(n, f.type) for f in SPAN_ARROW_SCHEMA}
    ids = range(first, first + n)
    cols["trace_id"] = pa.array([f"{i:032x}" for i in ids])
    cols["span_id"] = pa.array([f"{i:016x}" for i in ids])
    start = None if age is None else NOW - age
    cols["start_time"] = pa.array([start] * n, pa.timestamp("us"))
    cols["duration_ms"] = pa.array([float(i % 97) for i in ids])
    cols["request_model"] = pa.array([model] * n)
    cols["route"] = pa.array([f"r{i % 3}" for i in ids])
    cols["cohort"] = pa.array([f'{{"tier": "t{i % 2}"}}' for i in ids])
    cols["attributes"] = pa.array([f'{{"k": {i}}}' for i in ids])
    return pa.table(cols, schema=SPAN_ARROW_SCHEMA)


def _snapshot(store: Store) -> pa.Table:
    con = store.cursor()
    try:
        return con.sql(f"SELECT {COLS} FROM spans ORDER BY trace_id").to_arrow_table()
    finally:
        con.close()


def _count(store: Store, sql: str) -> int:
    con = store.cursor()
    try:
        return int(con.execute(sql).fetchall()[0][0])
    finally:
        con.close()


def test_moves_keep_one_identical_table_across_tiers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    sink = DuckDBSink(store)
    assert sink.open() == 0
    roller = LakeRoller(
        store, Metrics(), interval_s=1, row_group_rows=1000, hot_retention=dt.timedelta(days=2)
    )
    sink.write(_spans(0, 600, dt.timedelta(days=5)), 1)
    sink.write(_spans(600, 400, dt.timedelta(hours=1), model="served-a"), 2)
    sink.write(_spans(1000, 50, None), 3)  # no start time: stays hot
    sink.write(_spans(1050, 300, dt.timedelta(days=3), model="served-a"), 4)
    before = _snapshot(store)
    assert before.num_rows == 1350

    assert roller.move() == 0  # nothing is in the lake yet: nothing may leave DuckDB
    assert roller.roll() == 1350
    assert roller.move() == 900
    assert _count(store, "SELECT count(*) FROM span_rows") == 450
    assert _snapshot(store).equals(before)

    # a late span (old start time, new batch) is hot until a move after its roll, never twice
    sink.write(_spans(5000, 20, dt.timedelta(days=9)), 5)
    after_late = _snapshot(store)
    assert after_late.num_rows == 1370
    assert roller.roll() == 20
    assert _snapshot(store).equals(after_late)  # in the lake and still hot: read once
    assert roller.move() == 20
    assert _snapshot(store).equals(after_late)
    assert _count(store, "SELECT count(*) FROM span_rows") == 450

    # the served-model mapping applies to both tiers
    con = store.cursor()
    con.execute("BEGIN TRANSACTION")
    attribution.declare(con, "cardio", {"served-a": "3"}, base_model="b", prefix_type="prefix",
                        source="test", now=NOW - dt.timedelta(days=30))  # fmt: skip
    attribution.refresh_view(con)
    con.execute("COMMIT")
    con.close()
    assert _count(store, "SELECT count(*) FROM spans WHERE prefix_id = 'cardio'") == 700
    assert _count(store, "SELECT count(*) FROM span_rows WHERE request_model = 'served-a'") == 400

    # everything old has moved: a restart must not reuse batch numbers the lake holds
    sink.close()
    store.close()
    store = Store(tmp_path)
    sink = DuckDBSink(store)
    assert sink.open() == 5
    sink.write(_spans(9000, 10, dt.timedelta(days=4)), 6)
    roller = LakeRoller(
        store, Metrics(), interval_s=1, row_group_rows=1000, hot_retention=dt.timedelta(days=2)
    )
    assert roller.roll() == 10 and roller.move() == 10
    assert _count(store, "SELECT count(DISTINCT span_id) FROM spans") == 1380
    assert _count(store, "SELECT count(*) FROM spans") == 1380
    sink.close()
    store.close()


def test_dedupe_window_keeps_rows_hot_so_retries_are_dropped(tmp_path: Path) -> None:
    store = Store(tmp_path)
    sink = DuckDBSink(store)
    sink.open()
    hour = dt.timedelta(hours=1)
    roller = LakeRoller(store, Metrics(), interval_s=1, row_group_rows=1000,
                        hot_retention=hour, dedupe_window=dt.timedelta(minutes=15))  # fmt: skip
    old = _spans(0, 100, dt.timedelta(days=3))
    assert sink.write(old, 1) == 100
    assert roller.roll() == 100
    assert roller.move() == 0, "arrived just now: stays hot for the dedupe window"
    assert sink.write(old, 2) == 0  # a retry inside the window: dropped by the primary key
    assert roller.roll() == 0  # the retry added no row
    assert roller.move(now=dt.datetime.now(dt.UTC).replace(tzinfo=None) + hour) == 100
    assert _count(store, "SELECT count(*) FROM span_rows") == 0
    assert _count(store, "SELECT count(*), count(DISTINCT span_id) FROM spans") == 100
    # Beyond the window the first copy may be cold, and a retry is stored again (the
    # docs/guides/ingest.md's guarantee stops at the window).
    assert sink.write(old, 3) == 100
    assert _count(store, "SELECT count(*) FROM spans") == 200
    sink.close()
    store.close()


def test_a_dedupe_cutoff_inside_a_roll_moves_whole_rolls_only(tmp_path: Path) -> None:
    """The cold half selects whole roll files by name, so a move stops at a roll's end: the
    dedupe cutoff falling between two batches of one roll must not half-move it (the short
    soak read 16,384 spans twice when it did)."""
    store = Store(tmp_path)
    sink = DuckDBSink(store, dedupe_window_s=0)
    sink.open()
    roller = LakeRoller(store, Metrics(), interval_s=1, row_group_rows=1000,
                        hot_retention=dt.timedelta(hours=1))  # fmt: skip
    old = dt.timedelta(days=3)
    sink.write(_spans(0, 100, old), 1)
    assert roller.roll() == 100  # a roll ending at batch 1
    sink.write(_spans(100, 100, old), 2)
    time.sleep(0.01)
    sink.write(_spans(200, 100, old), 3)
    assert roller.roll() == 200  # one roll file with batches 2..3
    con = store.cursor()
    try:
        third = con.execute("SELECT min(ingested_at) FROM span_rows WHERE ingest_batch = 3")
        cutoff = third.fetchall()[0][0]  # batch 2 arrived before it, batch 3 did not
        moved, st = tiers.move(
            con, NOW - dt.timedelta(hours=1), rolled_batch(con), views.refresh_view, cutoff
        )
    finally:
        con.close()
    assert (moved, st.moved_batch) == (100, 1), "stops at the end of the roll before the cutoff"
    assert _count(store, "SELECT count(*) FROM span_rows") == 200
    assert _count(store, "SELECT count(*) FROM spans") == 300
    assert _count(store, "SELECT count(DISTINCT span_id) FROM spans") == 300
    assert roller.move() == 200  # no cutoff: the whole second roll moves
    assert _count(store, "SELECT count(*), count(DISTINCT span_id) FROM spans") == 300
    assert _count(store, "SELECT count(*) FROM span_rows") == 0
    sink.close()
    store.close()


def test_lake_compact_refuses_an_embedded_lake(tmp_path: Path) -> None:
    from prefixscope.collector.storage.compact import EmbeddedLakeError, compact

    Store(tmp_path).close()
    with pytest.raises(EmbeddedLakeError, match="cold tier"):
        compact(str(tmp_path / "lake"))


CRASH_POINTS = ("roll.written", "roll.published", "roll.committed", "move.deleted",
                "move.committed", "move.written", "move.scores.published",
                "move.feedback.published")  # fmt: skip


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_9_at_every_step_of_a_move_loses_and_duplicates_nothing(
    start_server: Callable[..., ServerProcess], tmp_path: Path, point: str
) -> None:
    data = tmp_path / "data"
    args = ("--hot-retention", "1h", "--dedupe-window", "1s")
    # the first roll-and-move pass comes 3 s after the start: everything is posted by then
    srv = start_server(*args, "--lake-roll-interval-s", "3", data_dir=data,
                       env={"PREFIXSCOPE_CRASH_AT": point})  # fmt: skip
    spans = [
        otlp_span(f"{i + 1:032x}", f"{i + 1:016x}", "chat",
                  start=NOW - dt.timedelta(days=2 if i < 200 else 0), attrs={"base_model": "m"})
        for i in range(300)
    ]  # fmt: skip
    old = (NOW - dt.timedelta(days=3)).isoformat() + "Z"
    scores = [{"id": f"s{i}", "trace_id": f"{i + 1:032x}", "name": "q", "value": 0.5,
               "created_at": old if i < 40 else None} for i in range(50)]  # fmt: skip
    feedback = [{"id": f"f{i}", "trace_id": f"{i + 1:032x}", "kind": "thumbs_down",
                 "created_at": old} for i in range(20)]  # fmt: skip
    for path, body in (("api/v1/scores", scores), ("api/v1/feedback", feedback)):
        resp = httpx.post(f"{srv.base_url}/{path}", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(spans), timeout=30)
    assert resp.status_code == 200
    assert srv.proc is not None
    assert srv.proc.wait(60) == -9, f"the server did not stop at {point}:\n{srv.log()}"

    time.sleep(1)  # past the dedupe window: the first move after the restart moves them all
    srv = start_server(*args, "--lake-roll-interval-s", "0.3", data_dir=data)  # no crash now
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{srv.base_url}/metrics").text
        if "prefixscope_tier_boundary_timestamp_seconds 0.0" not in metrics:
            break  # a move has run since the restart
        time.sleep(0.2)
    else:
        pytest.fail(f"no move after the restart:\n{srv.log()}")
    rows = sql_rows(srv, "SELECT count(*), count(DISTINCT span_id) FROM spans")
    assert rows == [[300, 300]]
    assert sql_rows(srv, "SELECT count(*), count(DISTINCT id) FROM scores") == [[50, 50]]
    assert sql_rows(srv, "SELECT count(*), count(DISTINCT id) FROM feedback") == [[20, 20]]
    assert srv.stop() == 0
    hot = query_store(data, "SELECT count(*) FROM span_rows")
    assert hot == [(100,)], "the old spans moved to the lake"
    assert query_store(data, "SELECT count(*) FROM score_rows") == [(10,)]
    assert query_store(data, "SELECT count(*) FROM feedback_rows") == [(0,)]
    assert query_store(data, "SELECT count(*), count(DISTINCT span_id) FROM spans") == [(300, 300)]


def _narrowed_as_the_view(store: Store) -> None:
    """``annotation_views.annotations_of_traces`` gives the view's rows of those traces (hot, moved,
    shadowed and re-sent versions alike), for a few traces and for all of them."""
    con = store.cursor()
    try:
        for picked in ([3, 5, 31], [7], range(41)):
            values = ", ".join(f"('{i:032x}')" for i in picked)
            traces = f"SELECT * FROM (VALUES {values}) v(trace_id)"
            for view in ("scores", "feedback"):
                want = con.sql(
                    f"SELECT * FROM {view} WHERE trace_id IN ({traces}) ORDER BY id"
                ).to_arrow_table()
                of_traces = annotation_views.annotations_of_traces(con, view, traces)
                got = con.sql(f"SELECT * FROM {of_traces} ORDER BY id").to_arrow_table()
                assert got.equals(want), view
    finally:
        con.close()


def test_scores_and_feedback_move_by_age_and_read_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    con = store.cursor()
    old, new = NOW - dt.timedelta(days=3), NOW - dt.timedelta(hours=1)
    for i in range(40):
        con.execute(
            "INSERT INTO score_rows VALUES (?, ?, NULL, 'quality', ?, NULL, NULL, 'test', ?)",
            [f"s{i}", f"{i:032x}", i / 40, old if i < 30 else new],
        )
        con.execute(
            "INSERT INTO feedback_rows VALUES (?, ?, NULL, 'thumbs_down', 1, NULL, ?)",
            [f"f{i}", f"{i:032x}", old if i % 2 else new],
        )
    scores = con.sql("SELECT * FROM scores ORDER BY id").to_arrow_table()
    feedback = con.sql("SELECT * FROM feedback ORDER BY id").to_arrow_table()
    metrics = Metrics()
    roller = LakeRoller(store, metrics, interval_s=1, row_group_rows=1000,
                        hot_retention=dt.timedelta(days=2))  # fmt: skip
    roller.move()
    assert _count(store, "SELECT count(*) FROM score_rows") == 10
    assert _count(store, "SELECT count(*) FROM feedback_rows") == 20
    assert con.sql("SELECT * FROM scores ORDER BY id").to_arrow_table().equals(scores)
    assert con.sql("SELECT * FROM feedback ORDER BY id").to_arrow_table().equals(feedback)
    text = generate_latest(metrics.registry).decode()
    assert 'prefixscope_tier_moved_rows_total{table="scores"} 30.0' in text
    assert 'prefixscope_tier_moved_rows_total{table="feedback"} 20.0' in text
    files = sorted(p.name for p in (tmp_path / "lake" / "scores").glob("date=*/part-*.parquet"))
    assert files == ["part-000000000001.parquet"]
    _narrowed_as_the_view(store)
    # an id re-sent on another trace: the view shows it there only
    con.execute(
        "INSERT OR REPLACE INTO score_rows VALUES ('s5', ?, NULL, 'quality', 0.5, NULL, NULL, "
        "'test', ?)",
        [f"{7:032x}", NOW],
    )
    _narrowed_as_the_view(store)
    # a re-evaluated score whose first copy went cold replaces it: read once, the new value
    con.execute(
        "INSERT OR REPLACE INTO score_rows VALUES ('s3', ?, NULL, 'quality', 0.99, NULL, NULL, "
        "'test', ?)",
        [f"{3:032x}", NOW],
    )
    assert con.execute("SELECT value FROM scores WHERE id = 's3'").fetchall() == [(0.99,)]
    assert _count(store, "SELECT count(*) FROM scores") == 40
    _narrowed_as_the_view(store)
    # a second move adds a second file; a crashed third one (files, no commit) is not read
    con.execute(
        "INSERT INTO score_rows VALUES ('late', 'x', NULL, 'quality', 1, NULL, NULL, 't', ?)",
        [old],
    )
    roller.move()
    assert _count(store, "SELECT count(*) FROM scores") == 41
    stray = tmp_path / "lake" / "scores" / f"date={old:%Y-%m-%d}" / "part-000000000003.parquet"
    pq.write_table(con.sql("SELECT * FROM scores").to_arrow_table(), stray)
    store.close()
    store = Store(tmp_path)
    assert _count(store, "SELECT count(*) FROM scores") == 41
    assert _count(store, "SELECT count(DISTINCT id) FROM scores") == 41
    # the re-evaluated score moves too: two cold copies of s3, the newer move's is read
    roller = LakeRoller(store, Metrics(), interval_s=1, row_group_rows=1000,
                        hot_retention=dt.timedelta(days=2))  # fmt: skip
    roller.move(now=NOW + dt.timedelta(days=3))
    assert _count(store, "SELECT count(*) FROM score_rows") == 0
    assert _count(store, "SELECT count(*) FROM scores") == 41
    assert _count(store, "SELECT count(DISTINCT id) FROM scores") == 41
    con = store.cursor()
    assert con.execute("SELECT value FROM scores WHERE id = 's3'").fetchall() == [(0.99,)]
    con.close()
    _narrowed_as_the_view(store)
    store.close()


def _noon(days_ago: int) -> dt.datetime:
    day = (NOW - dt.timedelta(days=days_ago)).date()
    return dt.datetime.combine(day, dt.time(12))


def _files(store: Store, day: dt.datetime) -> list[str]:
    folder = store.lake_dir / "spans" / f"date={day:%Y-%m-%d}"
    return sorted(p.name for p in folder.glob("*.parquet"))


def test_cold_compaction_merges_files_and_removes_late_duplicates(tmp_path: Path) -> None:
    store = Store(tmp_path)
    sink = DuckDBSink(store, dedupe_window_s=0)  # every retry is "late": stored again
    sink.open()
    metrics = Metrics()
    roller = LakeRoller(store, metrics, interval_s=1, row_group_rows=1000,
                        hot_retention=dt.timedelta(days=2))  # fmt: skip
    t = _noon(6)
    at = NOW - t  # the age that puts _spans at noon, six days ago
    for b in range(4):  # four rolls: four small files of one day
        sink.write(_spans(b * 100, 100, at), b + 1)
        roller.roll()
    sink.write(_spans(10_000, 50, dt.timedelta(hours=1)), 5)  # hot, stays hot
    roller.roll()
    roller.move()
    assert _count(store, "SELECT count(*) FROM span_rows") == 50
    # a retry long after the first copy went cold is stored again ...
    sink.write(_spans(0, 100, at), 6)
    roller.roll()
    roller.move()
    assert _count(store, "SELECT count(*) FROM spans") == 550  # ... and read twice
    assert _count(store, "SELECT count(DISTINCT span_id) FROM spans") == 450
    expected = (
        store.cursor().sql(f"SELECT DISTINCT {COLS} FROM spans ORDER BY trace_id").to_arrow_table()
    )
    rolls = _files(store, t)
    assert len(rolls) == 5 and all(n.startswith("part-") for n in rolls)

    report = roller.compact()
    assert (report.partitions, report.files_in, report.files_out) == (1, 5, 1)
    assert report.duplicates_removed == 100
    assert _files(store, t) == ["seg-000000000001-000000000001-000000000006.parquet"]
    assert _snapshot(store).equals(expected), "one copy of each span, the same values"
    assert _count(store, "SELECT count(*) FROM spans") == 450
    text = generate_latest(metrics.registry).decode()
    assert "prefixscope_tier_duplicates_removed_total 100.0" in text
    assert 'prefixscope_tier_compacted_files_total{direction="in"} 5.0' in text
    assert _count(store, "SELECT count(*) FROM cold_superseded") == 0

    # a late span for that day adds a roll file; the next pass merges it into the segment
    sink.write(_spans(20_000, 10, at), 7)
    roller.roll()
    roller.move()
    assert roller.compact().files_in == 2
    assert _files(store, t) == ["seg-000000000002-000000000001-000000000007.parquet"]
    assert _count(store, "SELECT count(*) FROM spans") == 460
    assert roller.compact().files_out == 0  # nothing left to do
    sink.close()
    store.close()
    store = Store(tmp_path)  # the compacted state survives a restart
    assert _count(store, "SELECT count(*) FROM spans") == 460
    assert _count(store, "SELECT count(DISTINCT span_id) FROM spans") == 460
    store.close()


def _move_to(store: Store, boundary: dt.datetime) -> None:
    con = store.cursor()
    try:
        tiers.move(con, boundary, rolled_batch(con), views.refresh_view)
    finally:
        con.close()


def test_a_filling_day_is_compacted_by_roll_files_only(tmp_path: Path) -> None:
    store = Store(tmp_path)
    sink = DuckDBSink(store, dedupe_window_s=0)
    sink.open()
    roller = LakeRoller(store, Metrics(), interval_s=1, row_group_rows=1000,
                        hot_retention=dt.timedelta(days=2))  # fmt: skip
    t = _noon(6)
    for b in range(3):
        sink.write(_spans(b * 100, 100, NOW - t), b + 1)
        roller.roll()
    # boundary one hour after the spans' noon: their day is cold but still filling
    boundary = t + dt.timedelta(hours=1)
    _move_to(store, boundary)
    before = _snapshot(store)
    assert roller.compact(min_files=4).files_out == 0  # three roll files: below min_files
    report = roller.compact(min_files=3)
    assert (report.files_in, report.files_out, report.duplicates_removed) == (3, 1, 0)
    assert _files(store, t) == ["seg-000000000001-000000000001-000000000003.parquet"]
    assert _snapshot(store).equals(before)
    sink.write(_spans(1000, 5, NOW - t), 4)
    roller.roll()
    _move_to(store, boundary)
    # one roll file and a segment: a filling day's segments are left alone
    assert roller.compact(min_files=2).files_out == 0
    assert _count(store, "SELECT count(*) FROM spans") == 305
    sink.close()
    store.close()


_COMPACT_SCRIPT = """
import datetime as dt, sys
sys.path[:0] = [{root!r}]
from tests.collector.storage.test_tiers import _spans, NOW
from prefixscope.collector.storage.lake import LakeRoller
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store
from prefixscope.metrics import Metrics
store = Store({data!r})
sink = DuckDBSink(store, dedupe_window_s=0)
sink.open()
roller = LakeRoller(store, Metrics(), interval_s=1, row_group_rows=1000,
                    hot_retention=dt.timedelta(days=2))
age = dt.timedelta(days=6)
for b in range(3):
    sink.write(_spans(b * 100, 100, age), b + 1)
    roller.roll()
sink.write(_spans(0, 100, age), 4)  # a late duplicate of the first batch
roller.roll()
roller.move()
roller.compact()  # PREFIXSCOPE_CRASH_AT kills the process in here
"""


@pytest.mark.parametrize("point", ["compact.published", "compact.committed", "compact.removed"])
def test_kill_9_during_cold_compaction_loses_and_duplicates_nothing(
    tmp_path: Path, point: str
) -> None:
    import os
    import signal
    import subprocess
    import sys

    root = str(REPO_ROOT)
    script = _COMPACT_SCRIPT.format(root=root, data=str(tmp_path))
    env = {**os.environ, "PREFIXSCOPE_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=120, cwd=root)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    store = Store(tmp_path)
    try:
        # after the crash, before any repair: every span once or (before the commit) the
        # duplicate still there, never a gap
        n, distinct = (
            store.cursor()
            .execute("SELECT count(*), count(DISTINCT span_id) FROM spans")
            .fetchall()[0]
        )
        assert distinct == 300
        assert n == (400 if point == "compact.published" else 300)
        roller = LakeRoller(store, Metrics(), interval_s=1, row_group_rows=1000,
                            hot_retention=dt.timedelta(days=2))  # fmt: skip
        roller.compact()
        assert _count(store, "SELECT count(DISTINCT span_id) FROM spans") == 300
        assert _count(store, "SELECT count(*) FROM spans") == 300
        day = store.lake_dir / "spans" / f"date={NOW - dt.timedelta(days=6):%Y-%m-%d}"
        names = sorted(p.name for p in day.iterdir())
        assert len(names) == 1 and names[0].startswith("seg-"), names
        assert _count(store, "SELECT count(*) FROM cold_superseded") == 0
    finally:
        store.close()
