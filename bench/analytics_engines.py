"""Analytics engines benchmark: the same run on one Parquet lake with DuckDB and with Spark.

    .venv/bin/python bench/analytics_engines.py                       # 1M and 10M spans
    .venv/bin/python bench/analytics_engines.py --sizes 1000000 --engines spark \\
        --keep /tmp/lakes --spark-driver-memory 4g

Data: the workload of ``bench/analytics.py`` (200 cells, scores on 15 % of spans, trace-level
feedback, one injected regression), written once per size as a Parquet lake by
``synthetic.generate_lake`` in 1M-span chunks (one segment per chunk and table, so readers
dedupe across ten files at 10M, as on an uncompacted lake).

A run = the detection cube + tests + alert objects with example traces + two scorecards rolled
up from the cube, as ``prefixscope analytics run --lake-path`` does. DuckDB reads the lake
through its deduplicating views (in-memory database); Spark runs ``local[N]`` in this machine's
JVM. Spark session start-up is reported separately. Both runs must find the same alerts.

``--mapping`` also writes each lake a second time with every variant known only by its served
model name (no ``prefix.id``; ``request_model`` ``hosted_vllm/<prefix>-v<version>``, mapped in
the lake's registry by ``prefixscope lake register --served-model``) and times the same run on
it: the cost of applying the mapping (goal, issue 34: within 1.25x of the run without one at
10M spans). Both lakes must give the same alerts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prefixscope.analytics.alerts import alert_objects
from prefixscope.analytics.detection import detection_cube, run_detection
from prefixscope.analytics.engines import DuckDBEngine, SparkEngine, spark_session
from prefixscope.analytics.query import Window
from prefixscope.analytics.scorecard import scorecard
from prefixscope.analytics.synthetic import generate_lake

sys.path.insert(0, str(Path(__file__).parent))
from analytics import COHORTS, PREFIXES, ROUTES, arms  # bench/analytics.py


def write_lake(lake: Path, n_spans: int) -> float:
    cells = len(PREFIXES) * len(ROUTES) * len(COHORTS)
    chunks = max(1, n_spans // 1_000_000)
    per = n_spans // cells // chunks
    t = time.perf_counter()
    for chunk in range(chunks):
        generate_lake(str(lake), arms(per), seed=chunk, id_offset=chunk * 10**9)
    return time.perf_counter() - t


def write_mapped_lake(lake: Path, n_spans: int) -> float:
    """The lake of :func:`write_lake` with every variant attributed by its served name."""
    from prefixscope.analytics.synthetic import generate, scratch_store
    from prefixscope.collector.storage.export import export_duckdb_tables
    from prefixscope.collector.storage.lake_registry import LakeRegistry
    from prefixscope.config import ServedModel

    cells = len(PREFIXES) * len(ROUTES) * len(COHORTS)
    chunks = max(1, n_spans // 1_000_000)
    per = n_spans // cells // chunks
    t = time.perf_counter()
    names: set[tuple[str, str, str]] = set()
    for chunk in range(chunks):
        con = scratch_store()
        generate(con, arms(per), seed=chunk, id_offset=chunk * 10**9)
        names |= {
            (f"{p}-v{v}", p, v)
            for p, v in con.execute(
                "SELECT DISTINCT prefix_id, prefix_version FROM span_rows "
                "WHERE prefix_id IS NOT NULL"
            ).fetchall()
        }
        con.execute(
            "UPDATE span_rows SET request_model = 'hosted_vllm/' || prefix_id || '-v' || "
            "prefix_version, prefix_id = NULL, prefix_version = NULL WHERE prefix_id IS NOT NULL"
        )
        export_duckdb_tables(con, str(lake), ("spans", "scores", "feedback"))
        con.close()
    LakeRegistry(str(lake)).declare_served([ServedModel(n, p, v) for n, p, v in sorted(names)])
    return time.perf_counter() - t


def full_run(engine: Any) -> tuple[str, set[str]]:
    t = time.perf_counter()
    cube = detection_cube(engine, Window())
    t_cube = time.perf_counter() - t
    result = run_detection(engine, cube=cube)
    alerts = alert_objects(engine, result)
    t_detect = time.perf_counter() - t - t_cube
    scorecard(engine, ["prefix_id", "route"], cube=result.cube)
    scorecard(engine, ["prefix_id", "cohort.specialty"], cube=result.cube)
    wall = time.perf_counter() - t
    text = (
        f"{wall:6.1f}s (cube {t_cube:.1f}, tests+alerts with examples {t_detect:.1f}); "
        f"{len(result.comparisons)} comparisons, {len(alerts)} alerts"
    )
    return text, {a.fingerprint for a in alerts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="Comma-separated span counts.")
    ap.add_argument("--engines", default="duckdb,spark", help="Comma-separated engines.")
    ap.add_argument("--master", default="local[2]", help="Spark master.")
    ap.add_argument("--spark-driver-memory", default="4g")
    ap.add_argument("--keep", default=None, help="Keep (and reuse) the lakes under this dir.")
    ap.add_argument(
        "--mapping",
        action="store_true",
        help="Also run on the same lake attributed by served model names (the mapping's cost).",
    )
    args = ap.parse_args()
    engines = args.engines.split(",")
    root = Path(args.keep or tempfile.mkdtemp(prefix="pslake-"))
    spark = None
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            kinds = [("", write_lake)] + ([("-mapped", write_mapped_lake)] if args.mapping else [])
            found: dict[str, set[str]] = {}
            runs: dict[tuple[str, str], float] = {}
            for suffix, writer in kinds:
                lake = root / f"lake-{size}{suffix}"
                gen = 0.0
                if not (lake / "spans").exists():
                    gen = writer(lake, size)
                files = len(list(lake.glob("*/date=*/*.parquet")))
                label = "served names, mapped" if suffix else "prefix.id"
                print(
                    f"{size:>10} spans ({label}): lake written in {gen:.1f}s ({files} files)",
                    flush=True,
                )
                for name in engines:
                    t = time.perf_counter()
                    if name == "duckdb":
                        engine: Any = DuckDBEngine.over_lake(str(lake))
                    else:
                        if spark is None:
                            spark = spark_session(
                                args.master, driver_memory=args.spark_driver_memory
                            )
                            print(
                                f"  spark session start {time.perf_counter() - t:.1f}s",
                                flush=True,
                            )
                            t = time.perf_counter()
                        engine = SparkEngine.over_lake(spark, str(lake))
                    setup = time.perf_counter() - t
                    t = time.perf_counter()
                    cold, found[name + suffix] = full_run(engine)
                    warm, _ = full_run(engine)
                    runs[(name, suffix)] = setup + time.perf_counter() - t
                    print(
                        f"  {name:>6}: views {setup:.1f}s | run 1 {cold}\n          | run 2 {warm}",
                        flush=True,
                    )
            if len(found) > 1:
                same = len({frozenset(v) for v in found.values()}) == 1
                print(f"  same alerts on every engine (and lake): {same}", flush=True)
            for name in engines:
                if (name, "-mapped") in runs:
                    ratio = runs[(name, "-mapped")] / runs[(name, "")]
                    print(
                        f"  {name}: mapped / unmapped (views + two runs) = {ratio:.2f} "
                        f"(goal <= 1.25)",
                        flush=True,
                    )
        load = os.getloadavg()[0]
        print(f"load average {load:.1f} on {os.cpu_count()} cores")
    finally:
        if spark is not None:
            spark.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
