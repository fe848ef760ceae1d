"""The detection cube kept per day between runs (``analytics/cube_cache.py``).

Every test changes the store the way a real writer does (synthetic traffic resolved into
requests, the annotation endpoints' writers, retention, a served-model registration, the
resolver re-resolving a trace) and then checks two things: the cached cube equals a scan of
the rows (``build_cube``, no cache), and the cache did only the work the change called for
(``meta["cache"]``), so a cache that is absent or recomputes everything fails too. Request
counts are checked against what the generator sent.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefixscope.analytics import cube_cache, cube_disk
from prefixscope.analytics.cube import Cube, build_cube
from prefixscope.analytics.detection import DIMS, _canonical_cohort, detection_cube
from prefixscope.analytics.engines import DuckDBEngine
from prefixscope.analytics.query import Window
from prefixscope.analytics.scorecard import scorecard
from prefixscope.analytics.synthetic import Arm, generate
from prefixscope.api.annotation_store import write_feedback, write_scores
from prefixscope.api.models import FeedbackIn, ScoreIn
from prefixscope.collector.storage import attribution, request_store, retention
from prefixscope.collector.storage.lake import LakeRoller
from prefixscope.collector.storage.store import Store
from prefixscope.collector.storage.views import refresh_view
from prefixscope.metrics import Metrics

DAY0 = dt.datetime(2025, 3, 1)
ARMS = [
    Arm(
        prefix_id=p,
        prefix_version="1" if p else None,
        route=r,
        cohort={"team": t},
        n=60,
        scores={"TaskCompletion": (0.7, 10.0)},
        score_coverage=0.5,
        thumbs_down_rate=0.2,
    )
    for p in (None, "p1")
    for r in ("r1", "r2")
    for t in ("a", "b")
]
PER_DAY = sum(a.n for a in ARMS)  # requests generated per call below


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path)
    con = s.cursor()
    for day in range(3):  # three days of traffic, one trace per request
        generate(
            con,
            ARMS,
            seed=day,
            start=DAY0 + dt.timedelta(days=day),
            duration=dt.timedelta(hours=20),
            id_offset=day * 10**6,
            shape="sdk",
        )
    return s


def _same(a: Cube, b: Cube) -> None:
    """Equal statistics cell by cell (floating sums within rounding)."""
    assert sorted(a.keys, key=str) == sorted(b.keys, key=str)
    ia, ib = a.index(), b.index()
    perm = np.array([ia[k] for k in b.keys])
    for name in b.sums:
        assert np.allclose(a.sums[name][perm], b.sums[name]), name
    assert [a.first_seen[i] for i in perm] == b.first_seen
    assert [a.last_seen[i] for i in perm] == b.last_seen

    def entries(c: Cube, index: dict[Any, int]) -> tuple[list[Any], ...]:
        key = [None] * len(c.keys)
        for k, i in index.items():
            key[i] = k
        h = sorted(
            (str(key[int(x)]), int(m), int(bb), int(n))
            for x, m, bb, n in zip(c.h_cell, c.h_metric, c.h_bin, c.h_count, strict=True)
        )
        s = sorted(
            (str(key[int(x)]), nm, float(n), round(float(t), 9), round(float(q), 9))
            for x, nm, n, t, q in zip(c.s_cell, c.s_name, c.s_n, c.s_sum, c.s_sumsq, strict=True)
        )
        f = sorted(
            (str(key[int(x)]), k, float(n))
            for x, k, n in zip(c.f_cell, c.f_kind, c.f_count, strict=True)
        )
        return h, s, f

    assert entries(a, ia) == entries(b, ib)


def _run(store: Store, window: Window = Window()) -> tuple[Cube, dict[str, int]]:
    """A cached detection cube, checked against a scan of the rows; and what the cache did."""
    con = store.cursor()
    try:
        cube = detection_cube(con, window)
        _same(cube, _canonical_cohort(build_cube(con, DIMS, window)))
        return cube, cube.meta["cache"]
    finally:
        con.close()


def _trace(day: int, i: int) -> str:
    return f"{day * 10**6 + i:032x}"


def test_the_second_run_reuses_every_day_and_counts_what_was_sent(store: Store) -> None:
    cube, first = _run(store)
    assert first == {"days_reused": 0, "days_computed": 3, "partial_days": 0}
    assert cube.sums["n"].sum() == 3 * PER_DAY
    cube, second = _run(store)
    assert second == {"days_reused": 3, "days_computed": 0, "partial_days": 0}
    assert cube.sums["n"].sum() == 3 * PER_DAY


def test_new_requests_in_one_day_rescan_that_day_only(store: Store) -> None:
    _run(store)
    generate(
        store.cursor(),
        ARMS,
        seed=9,
        start=DAY0 + dt.timedelta(days=1, hours=21),
        duration=dt.timedelta(hours=1),
        id_offset=9 * 10**6,
        shape="sdk",
    )
    cube, did = _run(store)
    assert did == {"days_reused": 2, "days_computed": 1, "partial_days": 0}
    assert cube.sums["n"].sum() == 4 * PER_DAY


def test_a_late_score_and_late_feedback_rescan_the_day_of_their_request(store: Store) -> None:
    _run(store)
    # annotations created shortly after their requests, as the generator's are (the cache
    # looks up the requests of each created hour that changed)
    late = DAY0 + dt.timedelta(days=2, hours=22)
    write_scores(
        store,
        [ScoreIn(trace_id=_trace(2, 5), name="Groundedness", value=0.25, created_at=late)],
    )
    cube, did = _run(store)
    assert did == {"days_reused": 2, "days_computed": 1, "partial_days": 0}
    assert "Groundedness" in cube.s_name
    write_feedback(
        store,
        [FeedbackIn(trace_id=_trace(0, 7), kind="escalation", created_at=late)],
    )
    _, did = _run(store)
    assert did == {"days_reused": 2, "days_computed": 1, "partial_days": 0}


def test_replaced_and_removed_annotations_are_seen(store: Store) -> None:
    """A score written again under its id (``INSERT OR REPLACE``, as online evaluation does)
    and feedback removed by retention while its request stays (created before its request:
    clients may set ``created_at``) both change the cube of their request's day."""
    old = dt.datetime(2024, 1, 1)
    write_feedback(
        store, [FeedbackIn(id="early", trace_id=_trace(1, 3), kind="escalation", created_at=old)]
    )
    write_scores(
        store,
        [
            ScoreIn(
                id="s1",
                trace_id=_trace(2, 4),
                name="Tone",
                value=0.1,
                created_at=DAY0 + dt.timedelta(days=2, hours=21),
            )
        ],
    )
    _run(store)
    con = store.cursor()
    con.execute(
        "INSERT OR REPLACE INTO score_rows (id, trace_id, span_id, name, value, created_at) "
        "VALUES ('s1', ?, NULL, 'Tone', 0.9, ?)",
        [_trace(2, 4), DAY0 + dt.timedelta(days=2, hours=23)],
    )
    cube, did = _run(store)
    assert did["days_computed"] == 1
    tone = [i for i, n in enumerate(cube.s_name) if n == "Tone"]
    assert [cube.s_sum[i] for i in tone] == [pytest.approx(0.9)]
    assert retention.apply_to_store(con, dt.datetime(2024, 6, 1)) == {"feedback_rows": 1}
    _, did = _run(store)
    assert did == {"days_reused": 2, "days_computed": 1, "partial_days": 0}


def test_a_re_resolved_trace_rescans_its_day(store: Store) -> None:
    """A span that arrives after its trace was resolved (here: written without an ingest batch
    and resolved again by ``rebuild``) changes that request's spans."""
    _run(store)
    con = store.cursor()
    trace = _trace(1, 11)
    con.execute(
        "INSERT INTO span_rows (trace_id, span_id, parent_span_id, name, start_time, end_time, "
        "duration_ms, status_code, ingest_batch) SELECT trace_id, 'feedfacefeedface', span_id, "
        "'late db span', start_time, start_time, 0, 'OK', 0 FROM span_rows "
        "WHERE trace_id = ? AND parent_span_id IS NULL",
        [trace],
    ).fetchall()
    assert request_store.rebuild(con, "trace_id = ?", [trace]) >= 1
    _, did = _run(store)
    assert did == {"days_reused": 2, "days_computed": 1, "partial_days": 0}


def test_a_served_model_registration_recomputes_every_day(store: Store) -> None:
    con = store.cursor()
    # the base arms' calls name a served model (the generator's calls name none)
    con.execute("UPDATE request_rows SET request_model = 'tiny-lora' WHERE prefix_id IS NULL")
    _run(store)
    con.execute("BEGIN TRANSACTION")
    attribution.declare(
        con, "p9", {"tiny-lora": "3"}, base_model=None, prefix_type=None, source="test"
    )
    con.execute("COMMIT")
    refresh_view(con)
    cube, did = _run(store)
    assert did == {"days_reused": 0, "days_computed": 3, "partial_days": 0}
    assert any(k[0] == "p9" for k in cube.keys)  # the mapping is applied


def test_partial_days_at_the_window_ends_come_from_the_rows(store: Store) -> None:
    window = Window(DAY0 + dt.timedelta(hours=12), DAY0 + dt.timedelta(days=2, hours=6))
    cube, did = _run(store, window)
    assert did == {"days_reused": 0, "days_computed": 1, "partial_days": 2}
    cube, did = _run(store, window)
    assert did == {"days_reused": 1, "days_computed": 0, "partial_days": 2}
    whole, _ = _run(store)
    assert 0 < cube.sums["n"].sum() < whole.sums["n"].sum()


def test_a_one_run_mapping_is_never_cached(store: Store) -> None:
    con = store.cursor()
    con.execute("UPDATE request_rows SET request_model = 'tiny-lora' WHERE prefix_id IS NULL")
    assert "cache" in detection_cube(con, Window()).meta
    refresh_view(con, served=[("tiny-lora", "p9", "1")])  # temporary views, this cursor only
    cube = detection_cube(con, Window())
    assert "cache" not in cube.meta
    assert any(k[0] == "p9" for k in cube.keys)
    _same(cube, _canonical_cohort(build_cube(con, DIMS, Window())))


def test_days_moved_to_the_cold_tier_are_read_back_from_it(store: Store) -> None:
    """The oldest day moves to the Parquet tier (as ``serve`` moves it): the day it left is
    computed again from the cold rows, the same as a scan, and kept from then on."""
    con = store.cursor()
    # the synthetic rows as if ingested in batch 1 and resolved (the roller takes batches)
    con.execute("UPDATE span_rows SET ingest_batch = 1 WHERE ingest_batch = 0")
    con.execute("UPDATE request_rows SET resolve_batch = 1")
    con.execute("INSERT OR REPLACE INTO lake_state VALUES ('requests', 1, now()::TIMESTAMP)")
    _run(store)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    roller = LakeRoller(
        store, Metrics(), interval_s=1, row_group_rows=10_000, hot_retention=now - _day(1)
    )
    roller.roll()
    assert roller.move(now=now) > 0
    assert con.execute("SELECT min(start_time) FROM request_rows").fetchall()[0][0] >= _day(1)
    cube, did = _run(store)
    assert did == {"days_reused": 2, "days_computed": 1, "partial_days": 0}
    assert cube.sums["n"].sum() == 3 * PER_DAY
    _, did = _run(store)
    assert did == {"days_reused": 3, "days_computed": 0, "partial_days": 0}


def _day(n: int) -> dt.datetime:
    return DAY0 + dt.timedelta(days=n)


def test_a_scorecard_by_detection_dims_reads_the_kept_days(store: Store) -> None:
    """The dashboard's scorecards (variant, route, a cohort key) roll up the kept cube: the
    same rows as a scan through the engine interface (never cached), and the days are kept."""
    con = store.cursor()
    for group_by in (["prefix_id", "route"], ["prefix_id", "cohort.team"]):
        kept = scorecard(con, group_by)
        scanned = scorecard(DuckDBEngine(con), group_by)
        assert [(r.group, r.n) for r in kept.rows] == [(r.group, r.n) for r in scanned.rows]
        for a, b in zip(kept.rows, scanned.rows, strict=True):
            assert a.metrics.keys() == b.metrics.keys()
            for name, value in a.metrics.items():  # equal up to the order of float sums
                want = b.metrics[name].to_dict()
                for field, got in value.to_dict().items():
                    assert got == (want[field] if got is None else pytest.approx(want[field]))
        assert sum(r.n for r in kept.rows) == 3 * PER_DAY
    assert detection_cube(con, Window()).meta["cache"]["days_reused"] == 3


def test_days_scanned_in_parts_add_up_and_still_learn_their_annotations(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a scan bound below a day's requests each day is scanned in parts (as days of
    millions of requests are): the kept cube is the same, and feedback removed later (created
    before its request, so its request stays) still dirties only its request's day."""
    monkeypatch.setattr(cube_cache, "SCAN_MAX_REQUESTS", PER_DAY // 3)
    assert len(cube_cache._plan([(_day(0), _day(1), PER_DAY), (_day(1), _day(2), 10)])) == 4
    write_feedback(
        store,
        [FeedbackIn(trace_id=_trace(1, 8), kind="escalation", created_at=dt.datetime(2024, 1, 1))],
    )
    cube, did = _run(store)
    assert did == {"days_reused": 0, "days_computed": 3, "partial_days": 0}
    assert cube.sums["n"].sum() == 3 * PER_DAY
    assert retention.apply_to_store(store.cursor(), dt.datetime(2024, 6, 1)) == {"feedback_rows": 1}
    _, did = _run(store)
    assert did == {"days_reused": 2, "days_computed": 1, "partial_days": 0}
    window = Window(_day(0) + dt.timedelta(hours=3), _day(2) + dt.timedelta(hours=20))
    _, did = _run(store, window)
    assert did == {"days_reused": 1, "days_computed": 0, "partial_days": 2}


def _restart() -> None:
    """What a new server process starts with: no part in memory (only what is on disk)."""
    cube_cache.forget()


def _kept_folder(store: Store) -> Path:
    where = cube_disk.folder(str(store.db_path), DIMS)
    assert where is not None
    return where


def _part_files(store: Store) -> dict[str, int]:
    """The part files on disk, by kind; every one is named by the state (none is stale)."""
    where = _kept_folder(store)
    named = {name for _, name in json.loads((where / "state.json").read_text())["parts"]}
    files = {p.name for p in where.glob("*.npz")}
    assert files == named
    hours = sum("T" in n for n in files)
    return {"days": len(files) - hours, "hours": hours}


def test_a_restart_reads_the_days_kept_on_disk(store: Store) -> None:
    _run(store)
    assert _part_files(store) == {"days": 3, "hours": 20}  # the latest day by the hour too
    _restart()
    cube, did = _run(store)
    assert did == {"days_reused": 3, "days_computed": 0, "partial_days": 0}
    assert cube.sums["n"].sum() == 3 * PER_DAY


def test_changes_while_down_rescan_their_day_after_a_restart(store: Store) -> None:
    """New requests and a late score written while no run kept the cube in memory: the
    fingerprints saved on disk see them, as they would between two runs of one process."""
    _run(store)
    _restart()
    generate(
        store.cursor(),
        ARMS,
        seed=9,
        start=DAY0 + dt.timedelta(days=1, hours=21),
        duration=dt.timedelta(hours=1),
        id_offset=9 * 10**6,
        shape="sdk",
    )
    write_scores(
        store,
        [ScoreIn(trace_id=_trace(2, 3), name="TaskCompletion", value=0.0)],
        Metrics(),
    )
    cube, did = _run(store)
    assert did == {"days_reused": 1, "days_computed": 2, "partial_days": 0}
    assert cube.sums["n"].sum() == 4 * PER_DAY
    _restart()  # and the rescanned days were written again: a second restart reuses them all
    assert _run(store)[1] == {"days_reused": 3, "days_computed": 0, "partial_days": 0}
    # days 1 (now changing) and 2 (the latest) by the hour too; replaced parts are removed
    assert _part_files(store) == {"days": 3, "hours": 21 + 20}


@pytest.mark.parametrize("damage", ["other code", "truncated part", "garbage state"])
def test_parts_on_disk_that_cannot_be_trusted_are_scanned_again(store: Store, damage: str) -> None:
    _run(store)
    _restart()
    where = _kept_folder(store)
    state = where / "state.json"
    if damage == "other code":
        state.write_text(state.read_text().replace('"format": "', '"format": "x'))
    elif damage == "truncated part":
        part = sorted(where.glob("*.npz"))[0]
        part.write_bytes(part.read_bytes()[:100])
    else:
        state.write_text("{not json")
    cube, did = _run(store)
    assert did == {"days_reused": 0, "days_computed": 3, "partial_days": 0}
    assert cube.sums["n"].sum() == 3 * PER_DAY


def test_a_changing_day_is_kept_by_the_hour_and_rescans_only_its_changed_hours(
    store: Store,
) -> None:
    """The latest day is kept by the hour from the first run; another day is once it
    changes (its first change scans all its hours, later ones only theirs)."""
    _, did = _run(store)
    assert did["days_computed"] == 3
    late = DAY0 + dt.timedelta(days=2, hours=22)
    write_scores(
        store, [ScoreIn(trace_id=_trace(2, 5), name="Groundedness", value=0.25, created_at=late)]
    )
    cube, did = _run(store)
    assert did == {"days_reused": 2, "days_computed": 1, "partial_days": 0}
    assert cube.meta["hours_computed"] == 1  # the scored request's hour, in the latest day
    generate(
        store.cursor(),
        ARMS,
        seed=7,
        start=DAY0 + dt.timedelta(days=2, hours=21),
        duration=dt.timedelta(minutes=30),
        id_offset=7 * 10**6,
        shape="sdk",
    )
    cube, did = _run(store)
    assert cube.meta["hours_computed"] == 1  # a new hour: scanned alone
    assert cube.sums["n"].sum() == 4 * PER_DAY
    write_feedback(store, [FeedbackIn(trace_id=_trace(0, 7), kind="escalation", created_at=late)])
    cube, did = _run(store)
    assert did == {"days_reused": 2, "days_computed": 1, "partial_days": 0}
    assert cube.meta["hours_computed"] == 20  # day 0's first change: every hour of it
    later = late + dt.timedelta(hours=1)  # a created hour of its own (a changed created hour
    # dirties the request hours of all its rows)
    write_feedback(store, [FeedbackIn(trace_id=_trace(0, 9), kind="escalation", created_at=later)])
    cube, did = _run(store)
    assert cube.meta["hours_computed"] == 1  # and now only the one that changed
    _, did = _run(store)
    assert did == {"days_reused": 3, "days_computed": 0, "partial_days": 0}
