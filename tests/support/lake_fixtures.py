"""A generated Parquet lake with an injected regression, and cube/alert comparisons.

Used by ``test_analytics_engines.py`` (DuckDB) and ``test_analytics_spark.py`` (Spark): the
lake holds what a scale-out deployment leaves before compaction, including the awkward parts:
duplicate segments (retried exports on another collector, a re-published score batch),
trace-level scores and feedback, traces with two requests that end at the same instant
(primary-request ties), a two-key cohort, two versions of a prefix.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from prefixscope.analytics.alert_record import AlertRecord
from prefixscope.analytics.cube import Cube
from prefixscope.analytics.synthetic import Arm, generate, scratch_store
from prefixscope.collector.storage.export import export_duckdb_tables
from prefixscope.collector.storage.request_store import rebuild

T0 = datetime(2025, 3, 1)
COHORT_A = {"specialty": "a"}
COHORT_B = {"specialty": "b", "language": "de"}
GOOD = {"TaskCompletion": (0.8, 10.0)}
BAD = {"TaskCompletion": (0.62, 10.0)}
#: the injected regression: p1 version 2 in cohort a
REGRESSED = ("p1", "2", "chat", COHORT_A)


def arms(version: str | None, bad: bool) -> list[Arm]:
    arms = []
    for prefix in (None, "p1"):
        for cohort in (COHORT_A, COHORT_B):
            worse = bad and prefix == "p1" and cohort == COHORT_A
            arms.append(
                Arm(
                    prefix,
                    version if prefix else None,
                    "chat",
                    cohort,
                    n=1200,
                    scores=BAD if worse else GOOD,
                    p99_factor=2.0 if worse else 1.0,
                    thumbs_down_rate=0.12 if worse else 0.05,
                )
            )
    return arms


def build_store() -> duckdb.DuckDBPyConnection:
    """The data as the embedded store would hold it (no duplicates)."""
    con = scratch_store()
    generate(con, arms("1", bad=False), seed=1, start=T0)
    generate(con, arms("2", bad=True), seed=2, start=T0 + timedelta(hours=1), id_offset=10**6)
    # trace-level scores (span_id NULL): attributed to the trace's primary request
    con.execute(
        """INSERT INTO score_rows (id, trace_id, span_id, name, value, source, created_at)
SELECT 'g-' || trace_id, trace_id, NULL, 'Groundedness', (hash(trace_id) % 1000) / 1000.0,
  'judge', start_time FROM spans WHERE hash(trace_id) % 3 = 0"""
    )
    # a second score for some spans and traces, at the same instant under a later id (a tie
    # for "the latest score"): the higher id wins on every engine
    con.execute(
        """INSERT INTO score_rows (id, trace_id, span_id, name, value, source, created_at)
SELECT 'zz-' || id, trace_id, span_id, name, 1 - value, source, created_at
FROM scores WHERE hash(id) % 6 = 0"""
    )
    # a second request in some traces, ending at the same instant as the first (a tie for
    # "the request that ended last"), served by base: the higher span id wins on every engine
    con.execute(
        """INSERT INTO span_rows SELECT * REPLACE ('ff' || span_id[3:] AS span_id,
  NULL AS prefix_id, NULL AS prefix_version)
FROM spans WHERE prefix_id = 'p1' AND hash(trace_id) % 7 = 0"""
    )
    rebuild(con, "ingest_batch = 0")  # rows written without ingest: resolve them here
    return con


def build_lake(lake: str) -> duckdb.DuckDBPyConnection:
    """Publish the store's tables to ``lake`` with duplicates; return the store."""
    con = build_store()
    export_duckdb_tables(con, lake)
    # retried exports / re-published batches: every table gets duplicate rows
    export_duckdb_tables(
        con,
        lake,
        where={
            "spans": "hash(trace_id) % 5 = 0",
            "scores": "hash(id) % 4 = 0",
            "feedback": "hash(id) % 2 = 0",
        },
    )
    return con


def summary(cube: Cube) -> dict[Any, dict[str, Any]]:
    """A cube as {cell key: statistics}, independent of row order."""
    out: dict[Any, dict[str, Any]] = {}
    for i, key in enumerate(cube.keys):
        out[key] = {
            "sums": {k: float(v[i]) for k, v in cube.sums.items()},
            "seen": (cube.first_seen[i], cube.last_seen[i]),
            "hist": {},
            "scores": {},
            "feedback": {},
        }
    for c, m, b, n in zip(cube.h_cell, cube.h_metric, cube.h_bin, cube.h_count):
        out[cube.keys[c]]["hist"][(int(m), int(b))] = int(n)
    for c, name, n, s, ss in zip(cube.s_cell, cube.s_name, cube.s_n, cube.s_sum, cube.s_sumsq):
        out[cube.keys[c]]["scores"][name] = (int(n), float(s), float(ss))
    for c, kind, n in zip(cube.f_cell, cube.f_kind, cube.f_count):
        out[cube.keys[c]]["feedback"][kind] = int(n)
    return out


def assert_same_cube(a: Cube, b: Cube) -> None:
    """Counts, histograms, sums and times exactly equal; score sums to float precision (the
    engines add doubles in different orders)."""
    sa, sb = summary(a), summary(b)
    assert a.dims == b.dims
    assert sorted(sa, key=repr) == sorted(sb, key=repr)
    for key, x in sa.items():
        y = sb[key]
        assert x["sums"] == y["sums"], key
        assert x["seen"] == y["seen"], key
        assert x["hist"] == y["hist"], key
        assert x["feedback"] == y["feedback"], key
        assert x["scores"].keys() == y["scores"].keys(), key
        for name, (n, s, ss) in x["scores"].items():
            assert y["scores"][name] == (
                n,
                pytest.approx(s, rel=1e-12),
                pytest.approx(ss, rel=1e-12),
            )


FLOAT_FIELDS = ("baseline_value", "value", "delta", "ci_low", "ci_high", "p_value", "q_value")


def assert_close(a: Any, b: Any, where: str = "") -> None:
    """``a == b`` with every float (however nested in dicts and lists) within 1e-9 relative
    (the engines add doubles in different orders)."""
    if isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), where
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_alerts(a: list[AlertRecord], b: list[AlertRecord]) -> None:
    """Same alerts (by fingerprint), equal fields, floats within 1e-9 relative."""
    by_fp = {x.fingerprint: x.to_dict() for x in b}
    assert sorted(by_fp) == sorted(str(x.fingerprint) for x in a)
    for record in a:
        x = record.to_dict()
        y = by_fp[x["fingerprint"]]
        for k, v in x.items():
            if k in ("id", "created_at", "updated_at"):
                continue
            if k in FLOAT_FIELDS and v is not None:
                assert y[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
            elif k == "details":
                assert_close(v, y[k], k)
            else:
                assert y[k] == v, k


def lake_rows(lake: Path, table: str) -> list[dict[str, Any]]:
    files = [str(p) for p in lake.glob(f"{table}/date=*/*.parquet") if not p.name.startswith(".")]
    if not files:
        return []
    return duckdb.sql(f"SELECT * FROM read_parquet({files!r})").to_arrow_table().to_pylist()


def text_store() -> Any:
    """Requests with JSON output, broken JSON output, and no text at all."""
    from prefixscope.analytics.synthetic import Arm, generate, scratch_store
    from prefixscope.collector.storage.request_store import rebuild

    con = scratch_store()
    generate(con, [Arm(None, None, n=150), Arm("p1", "1", n=150)], seed=3)
    con.execute(
        """UPDATE span_rows SET attributes = CASE hash(span_id) % 3
  WHEN 0 THEN '{"output.value": "{\\"code\\": \\"J18.9\\"}"}'
  WHEN 1 THEN '{"output.value": "{not json"}'
  ELSE '{}' END"""
    )
    rebuild(con, "ingest_batch = 0")
    return con
