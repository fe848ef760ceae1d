"""The analytics engine seam on DuckDB: a Parquet lake read through deduplicating views gives
exactly the cube and the alerts of the store holding the same data; the CLI runs on a lake.
(The same comparisons against Spark are in ``test_analytics_spark.py``.)"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import orjson
import pytest
from click.testing import CliRunner

from prefixscope.analytics.alerts import alert_objects, list_alerts
from prefixscope.analytics.cube import build_cube
from prefixscope.analytics.detection import detection_cube, run_detection
from prefixscope.analytics.engines import DuckDBEngine
from prefixscope.analytics.query import InvalidArgument, Window, group_expr
from prefixscope.cli import main
from prefixscope.collector.storage.compact import compact
from prefixscope.collector.storage.dialect import DUCKDB, SPARK
from prefixscope.collector.storage.export import export_duckdb_tables
from prefixscope.collector.storage.fs import open_fs
from prefixscope.collector.storage.store import Store
from prefixscope.collector.storage.tables import published_files
from tests.support.lake_fixtures import (
    COHORT_A,
    REGRESSED,
    T0,
    arms,
    assert_same_alerts,
    assert_same_cube,
    build_lake,
    build_store,
)

Lake = tuple[str, duckdb.DuckDBPyConnection]
WINDOWS = [Window(), Window(T0 + timedelta(minutes=30), T0 + timedelta(minutes=90))]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    path = str(tmp_path_factory.mktemp("lake"))
    return path, build_lake(path)


def raw_and_distinct(path: str, table: str, key: str) -> tuple[int, int]:
    rows = duckdb.sql(
        f"SELECT count(*), count(DISTINCT ({key})) FROM read_parquet(?)",
        params=[f"{path}/{table}/*/*.parquet"],
    ).fetchall()
    return int(rows[0][0]), int(rows[0][1])


def test_the_lake_holds_duplicates_of_every_table(lake: Lake) -> None:
    path, _ = lake
    for table, key in (("spans", "trace_id, span_id"), ("scores", "id"), ("feedback", "id")):
        raw, distinct = raw_and_distinct(path, table, key)
        assert raw > distinct > 0, table


@pytest.mark.parametrize("window", WINDOWS, ids=["all", "window"])
def test_lake_cube_equals_store_cube(lake: Lake, window: Window) -> None:
    path, con = lake
    engine = DuckDBEngine.over_lake(path)
    store = detection_cube(con, window)
    assert_same_cube(store, detection_cube(engine, window))
    assert store.s_n.sum() > 0 and store.f_count.sum() > 0
    dims = ["prefix_id", "cohort.specialty", "cohort.language", "hour"]
    assert_same_cube(build_cube(con, dims, window), build_cube(engine, dims, window))


@pytest.mark.parametrize("bound", [0, 10**9], ids=["cte", "temp-table"])
def test_a_shared_relation_is_a_temp_table_only_when_small(
    lake: Lake, bound: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cube's request relation is computed once into a temp table when it holds
    SHARE_IN_MEMORY_ROWS rows or fewer, else repeated as a CTE; either way the cube is the
    same, and the temp table is gone afterwards."""
    from prefixscope.analytics import engines

    _, con = lake
    cur = con.cursor()
    sent = cur.execute("SELECT count(*) FROM requests_base").fetchall()[0][0]
    monkeypatch.setattr(engines, "SHARE_IN_MEMORY_ROWS", bound)
    temp = "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = 'req'"
    with DuckDBEngine(cur).shared("req", "SELECT * FROM requests_base", []) as req:
        inside = cur.execute(temp).fetchall()[0][0]
        rows = cur.execute(req.sql("SELECT count(*) FROM req")).fetchall()[0][0]
    assert rows == sent > 0
    assert (inside, bool(req.cte)) == ((1, False) if bound else (0, True))
    assert cur.execute(temp).fetchall()[0][0] == 0
    dims = ["prefix_id", "cohort.specialty", "hour"]
    monkeypatch.setattr(engines, "SHARE_IN_MEMORY_ROWS", 10**9 - bound)
    other = build_cube(cur, dims, WINDOWS[1])
    monkeypatch.setattr(engines, "SHARE_IN_MEMORY_ROWS", bound)
    assert_same_cube(build_cube(cur, dims, WINDOWS[1]), other)


def test_lake_alerts_equal_store_alerts_and_show_the_regression(lake: Lake) -> None:
    path, con = lake
    engine = DuckDBEngine.over_lake(path)
    store_alerts = alert_objects(con, run_detection(con))
    lake_alerts = alert_objects(engine, run_detection(engine))
    assert_same_alerts(store_alerts, lake_alerts)
    prefix, version, route, cohort = REGRESSED
    cells = {(a.prefix_id, a.prefix_version, a.route) for a in lake_alerts}
    assert cells == {(prefix, version, route)}
    # the regression is named in its cohort; a latency p99 twice as high in one cohort is
    # significant only over the whole route (1,200 requests give 12 tail observations a side),
    # so that one is named at the route
    assert all(
        a.cohort == cohort or (a.cohort == {} and a.metric == "latency_p99") for a in lake_alerts
    )
    metrics = {a.metric for a in lake_alerts if a.cohort == cohort}
    assert metrics == {"TaskCompletion", "latency_p90", "thumbs_down_rate"}
    for a in lake_alerts:
        assert a.baseline in ("base", "p1@1") and a.id == a.fingerprint
        assert len(a.example_trace_ids) == 5
        rows = con.execute(
            "SELECT DISTINCT prefix_id, prefix_version, cohort FROM spans "
            "WHERE trace_id IN (SELECT unnest(?)) AND prefix_id IS NOT NULL",
            [a.example_trace_ids],
        ).fetchall()
        seen = {(r[0], r[1], r[2] and orjson.dumps(orjson.loads(r[2])).decode()) for r in rows}
        assert {(p, v) for p, v, _ in seen} == {(prefix, version)}
        if a.cohort:
            assert [(r[0], r[1], orjson.loads(r[2])) for r in rows] == [(prefix, version, COHORT_A)]


def test_compaction_dedupes_scores_and_feedback_by_id(tmp_path: Path) -> None:
    path = str(tmp_path / "lake")
    con = build_lake(path)
    for table in ("spans", "scores", "feedback"):
        report = compact(path, table=table)
        assert report.duplicates_removed > 0, table
    for table, key in (("spans", "trace_id, span_id"), ("scores", "id"), ("feedback", "id")):
        raw, distinct = raw_and_distinct(path, table, key)
        stored = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        assert raw == distinct == stored, table
    store_cube = detection_cube(con, Window())
    # compacted partitions (one compact-* file each) are read without deduplication
    clean, dirty = published_files(*open_fs(path), "spans")
    assert clean and not dirty
    assert_same_cube(store_cube, detection_cube(DuckDBEngine.over_lake(path), Window()))
    # a late retry lands in a compacted partition: that partition is deduplicated again
    export_duckdb_tables(con, path, ("spans",), where={"spans": "hash(trace_id) % 3 = 0"})
    clean, dirty = published_files(*open_fs(path), "spans")
    assert dirty and not clean
    assert_same_cube(store_cube, detection_cube(DuckDBEngine.over_lake(path), Window()))


def test_cli_run_on_a_lake_prints_or_stores_alerts(lake: Lake, tmp_path: Path) -> None:
    path, con = lake
    expected = {a.fingerprint for a in alert_objects(con, run_detection(con))}
    out = tmp_path / "alerts.json"
    runner = CliRunner()
    res = runner.invoke(main, ["analytics", "run", "--lake-path", path, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"{len(expected)} regressions" in res.output
    report = orjson.loads(out.read_bytes())
    assert report["engine"] == "duckdb"
    assert {a["fingerprint"] for a in report["alerts"]} == expected
    data_dir = tmp_path / "store"
    args = ["analytics", "run", "--lake-path", path, "--data-dir", str(data_dir), "--json"]
    for _ in range(2):  # the second run updates the same alerts
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
    with Store(data_dir) as store:
        stored = list_alerts(store.cursor())
    assert {a.fingerprint for a in stored} == expected
    assert all(a.status == "open" and len(a.example_trace_ids) == 5 for a in stored)


def test_cli_spark_engine_needs_a_lake() -> None:
    res = CliRunner().invoke(main, ["analytics", "run", "--engine", "spark"])
    assert res.exit_code == 2
    assert "--lake-path is required" in res.output


@pytest.mark.parametrize("dialect", [DUCKDB, SPARK], ids=["duckdb", "spark"])
def test_json_keys_are_validated_for_every_dialect(dialect: object) -> None:
    with pytest.raises(InvalidArgument):
        group_expr("cohort.a') OR TRUE --", dialect)  # type: ignore[arg-type]
    assert "a.b" in group_expr("cohort.a.b", dialect)  # type: ignore[arg-type]


def test_cli_run_and_scorecard_with_served_model_on_a_lake(tmp_path: Path) -> None:
    """Variant p1 sent only by served names (``cardio-v1``/``cardio-v2``, no prefix.id), as
    third-party instrumentors send it: ``--served-model NAME=PREFIX@VERSION`` gives the
    generator's counts per variant and finds its injected regression on p1@2; without the
    flag the traffic is the unregistered variants of those names."""
    path = str(tmp_path / "lake")
    con = build_store()
    con.execute(
        "UPDATE span_rows SET request_model = 'openai/cardio-v' || prefix_version, "
        "prefix_id = NULL, prefix_version = NULL WHERE prefix_id = 'p1'"
    )
    export_duckdb_tables(con, path, ("spans", "scores", "feedback"))
    served = ["--served-model", "cardio-v1=p1@1", "--served-model", "cardio-v2=p1@2"]
    runner = CliRunner()

    def card(*extra: str) -> dict[tuple[str, str], int]:
        args = ["analytics", "scorecard", "--lake-path", path, "--json", *extra]
        res = runner.invoke(main, [*args, "--group-by", "prefix_id,prefix_version"])
        assert res.exit_code == 0, res.output
        rows = orjson.loads(res.output)["rows"]
        return {(r["group"]["prefix_id"], r["group"]["prefix_version"]): r["n"] for r in rows}

    # the generator's arms: the requests it sent per version of p1
    sent = {v: sum(a.n for a in arms(v, bad=v == "2") if a.prefix_id == "p1") for v in ("1", "2")}
    mapped = card(*served)
    assert (mapped[("p1", "1")], mapped[("p1", "2")]) == (sent["1"], sent["2"])
    assert not {k for k in mapped if str(k[0]).startswith("cardio")}
    unmapped = card()
    assert (unmapped[("cardio-v1", "")], unmapped[("cardio-v2", "")]) == (sent["1"], sent["2"])
    assert ("p1", "1") not in unmapped

    res = runner.invoke(main, ["analytics", "run", "--lake-path", path, "--json", *served])
    assert res.exit_code == 0, res.output
    alerts = orjson.loads(res.output)["alerts"]
    prefix, version, route, cohort = REGRESSED
    assert {(a["prefix_id"], a["prefix_version"], a["route"]) for a in alerts} == {
        (prefix, version, route)
    }
    named = {a["metric"] for a in alerts if a["cohort"] == cohort}
    assert named == {"TaskCompletion", "latency_p90", "thumbs_down_rate"}
