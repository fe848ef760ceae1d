"""Analytics on Spark (``local[2]``) over the same Parquet lake as DuckDB: the same cube (exactly
equal counts and histograms) and the same alerts (fingerprints, metrics, values, examples).

One SparkSession for the module (starting a JVM takes ~20-30 s); marked slow.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from prefixscope.analytics.alerts import alert_objects, list_alerts
from prefixscope.analytics.cube import build_cube
from prefixscope.analytics.detection import detection_cube, run_detection
from prefixscope.analytics.engines import DuckDBEngine, SparkEngine, spark_session
from prefixscope.analytics.query import Window
from prefixscope.analytics.scorecard import scorecard
from prefixscope.cli import main
from prefixscope.collector.storage.store import Store
from tests.support.lake_fixtures import (
    REGRESSED,
    T0,
    assert_same_alerts,
    assert_same_cube,
    build_lake,
)

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow

WINDOWS = [Window(), Window(T0 + timedelta(minutes=30), T0 + timedelta(minutes=90))]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session("local[2]", driver_memory="1g")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("lake"))
    build_lake(path)
    return path


@pytest.fixture(scope="module")
def engines(spark: Any, lake: str) -> tuple[DuckDBEngine, SparkEngine]:
    return DuckDBEngine.over_lake(lake), SparkEngine.over_lake(spark, lake)


@pytest.mark.parametrize("window", WINDOWS, ids=["all", "window"])
def test_spark_cube_equals_duckdb_cube(
    engines: tuple[DuckDBEngine, SparkEngine], window: Window
) -> None:
    duck, spark = engines
    cube = detection_cube(spark, window)
    assert cube.meta["engine"] == "spark" and len(cube) >= 4
    assert_same_cube(detection_cube(duck, window), cube)
    # JSON group keys and time buckets go through the dialect
    dims = ["prefix_id", "cohort.specialty", "cohort.language", "hour"]
    assert_same_cube(build_cube(duck, dims, window), build_cube(spark, dims, window))


def test_spark_alerts_equal_duckdb_alerts(engines: tuple[DuckDBEngine, SparkEngine]) -> None:
    duck, spark = engines
    duck_run, spark_run = run_detection(duck), run_detection(spark)
    assert len(spark_run.comparisons) == len(duck_run.comparisons) > 20
    for a, b in zip(
        sorted(duck_run.comparisons, key=lambda c: repr(c.fingerprint_parts())),
        sorted(spark_run.comparisons, key=lambda c: repr(c.fingerprint_parts())),
    ):
        assert a.fingerprint_parts() == b.fingerprint_parts()
        assert (a.n, a.n_baseline, a.flagged) == (b.n, b.n_baseline, b.flagged)
        assert b.p_value == pytest.approx(a.p_value, rel=1e-9, abs=1e-12)
    spark_alerts = alert_objects(spark, spark_run)
    assert_same_alerts(alert_objects(duck, duck_run), spark_alerts)
    # in the regressed cohort; p99 only over the whole route (test_analytics_engines.py)
    assert {a.metric for a in spark_alerts} == {
        "TaskCompletion",
        "latency_p90",
        "thumbs_down_rate",
        "latency_p99",
    }
    assert {(a.prefix_id, a.prefix_version, a.route) for a in spark_alerts} == {REGRESSED[:3]}


def test_spark_scorecard_equals_duckdb_scorecard(
    engines: tuple[DuckDBEngine, SparkEngine],
) -> None:
    duck, spark = engines
    keys = ["prefix_id", "cohort.specialty"]
    a, b = scorecard(duck, keys).to_dict(), scorecard(spark, keys).to_dict()
    assert [r["group"] for r in a["rows"]] == [r["group"] for r in b["rows"]]
    for ra, rb in zip(a["rows"], b["rows"]):
        assert ra["n"] == rb["n"] and ra["metrics"].keys() == rb["metrics"].keys()
        for name, ma in ra["metrics"].items():
            for field, va in ma.items():
                vb = rb["metrics"][name][field]
                assert vb == (pytest.approx(va, rel=1e-9) if isinstance(va, float) else va)


def test_cli_run_with_spark_engine(spark: Any, lake: str, tmp_path: Path) -> None:
    duck = DuckDBEngine.over_lake(lake)
    expected = {a.fingerprint for a in alert_objects(duck, run_detection(duck))}
    out = tmp_path / "alerts.json"
    runner = CliRunner()
    base = ["analytics", "run", "--engine", "spark", "--lake-path", lake]
    res = runner.invoke(main, [*base, "--out", str(out)])  # reuses the module's session
    assert res.exit_code == 0, res.output
    report = orjson.loads(out.read_bytes())
    assert report["engine"] == "spark"
    assert {a["fingerprint"] for a in report["alerts"]} == expected
    data_dir = tmp_path / "store"
    res = runner.invoke(main, [*base, "--data-dir", str(data_dir), "--json"])
    assert res.exit_code == 0, res.output
    with Store(data_dir) as store:
        stored = list_alerts(store.cursor())
    assert {a.fingerprint for a in stored} == expected
    assert all(len(a.example_trace_ids) == 5 for a in stored)


def test_online_evaluation_on_spark_scores_what_duckdb_scores(spark: Any, tmp_path: Path) -> None:
    """``prefixscope evaluate --lake-path L --engine spark``: the same sample, skips and scores
    as on DuckDB over the same lake (the sampling hash is spelled per engine)."""
    from prefixscope.analytics.evaluators import JSONValidation
    from prefixscope.analytics.online import lake_writer, run_online
    from prefixscope.collector.storage.export import export_duckdb_tables
    from tests.support.lake_fixtures import lake_rows
    from tests.support.lake_fixtures import text_store as _text_store

    lakes = {name: str(tmp_path / name) for name in ("duck", "spark")}
    con = _text_store()
    for path in lakes.values():
        export_duckdb_tables(con, path)
    reports = {}
    for name, path in lakes.items():
        engine = (
            DuckDBEngine.over_lake(path) if name == "duck" else SparkEngine.over_lake(spark, path)
        )
        reports[name] = run_online(
            engine, [JSONValidation()], sample=0.5, write=lake_writer(path)
        ).to_dict()
    assert reports["duck"] == reports["spark"] and reports["spark"]["scored"] > 0
    rows = {
        name: {(r["id"], r["value"]) for r in lake_rows(Path(path), "scores")}
        for name, path in lakes.items()
    }
    assert rows["duck"] == rows["spark"]


def test_spark_keeps_an_ids_first_copy_across_partitions(spark: Any, tmp_path: Path) -> None:
    """One score id on two dates (a retry after UTC midnight, re-sent with another value),
    written as a lake collector writes it: one row, the first copy sent, before and after
    ``prefixscope lake compact``, as on DuckDB (tests/api/test_lake_duplicates.py)."""
    from prefixscope.api.annotation_store import write_lake
    from prefixscope.api.models import ScoreIn

    lake = str(tmp_path / "lake")
    day = T0.replace(hour=23, minute=59)
    for value, created_at in ((0.25, day), (0.75, day + timedelta(minutes=2))):
        copy = ScoreIn(id="resent", trace_id="a1" * 16, name="G", value=value, created_at=day)
        write_lake(lake, "scores", [copy.model_copy(update={"created_at": created_at})])
    other = ScoreIn(id="other", trace_id="a1" * 16, name="G", value=0.5, created_at=day)
    write_lake(lake, "scores", [other])  # the first day's partition: two files
    expected = [{"id": "other", "value": 0.5}, {"id": "resent", "value": 0.25}]
    sql = "SELECT id, value FROM scores ORDER BY id"
    for _ in ("before", "after"):
        assert SparkEngine.over_lake(spark, lake).arrow(sql).to_pylist() == expected
        assert DuckDBEngine.over_lake(lake).arrow(sql).to_pylist() == expected
        assert CliRunner().invoke(main, ["lake", "compact", "--lake-path", lake]).exit_code == 0


def test_spark_repointed_served_name_and_explicit_prefix_id(
    spark: Any, start_server: Any, tmp_path: Path
) -> None:
    """The Spark lake engine applies the registry's history as the DuckDB one does
    (tests/api/test_lake_api.py): spans before the re-pointing stay on the older version, an
    explicit prefix.id wins; the counts are what the scenario sent."""
    from tests.support.lake_repoint import COUNTS_SQL, EXPECTED, repointed_lake

    lake = tmp_path / "lake"
    repointed_lake(start_server, lake)
    rows = SparkEngine.over_lake(spark, str(lake)).arrow(COUNTS_SQL).to_pylist()
    assert {(r["prefix_id"], r["prefix_version"]): r["n"] for r in rows} == EXPECTED
