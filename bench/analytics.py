"""Analytics benchmark: scorecard + regression run over 1M and 10M generated spans.

    .venv/bin/python bench/analytics.py                 # 1M and 10M
    .venv/bin/python bench/analytics.py --sizes 1000000 --keep /tmp/bench
    .venv/bin/python bench/analytics.py --sizes 100000000 --keep /data/bench   # the 100M run

Data: 10 variants (base + 9 prefixes) x 4 routes x 5 cohorts = 200 cells; each request is
one trace of 4 spans in the SDK's shape (``--shape sdk``, default: an HTTP root, a route span
opening the variant scope, a DB span and the model call; ``--shape call``: the call alone, as
this benchmark measured before requests were the unit), so 10M spans are 2.5M requests;
TaskCompletion and Groundedness scores on 15 % of requests each (on the route span, as
``current_ids()`` gives them); thumbs-down (5 %) and escalation (1 %) feedback at trace level
(span_id NULL, attributed to the trace's last request); one injected regression (p3 in route
r1 / cohort c: TaskCompletion -0.1, p99 x2) so the alert path runs too. Generated vectorised
(numpy -> Arrow -> one INSERT per million spans, then its requests resolved) into a DuckDB
file opened through the real Store (``enable_external_access=false``).

Measured: a full run = one detection run (cube + tests + alert upsert) + a scorecard by
(prefix_id, route) rolled up from the same cube + a scorecard by cohort.specialty; seconds
and peak RSS of the process. The detection cube is kept per day between runs
(``analytics/cube_cache.py``), so the runs are: cold (the first a store ever has: every day
scanned), warm (nothing changed: every day kept), after a restart (the store opened again with
nothing in memory: the days kept on disk, ``analytics/cube_disk.py``), after new traffic
(1 % more requests, with their scores and feedback, in the last day: that day scanned again,
as between two runs of a live server). Then the variant page's time series
(``analytics.timeseries``, p3 and base, the whole generated span of time and a 7-day window),
a run after a served-model registration (every day scanned again, through the mapping's join)
and a warm run with the mapping.

``--cold-fraction F`` (default 0.5) then moves the oldest F of the week to the cold tier the
way the server does (lake roll, then ``tiers.move``), so the run reads both tiers through the
one ``spans`` view; ``--cold-fraction 0`` keeps everything in DuckDB.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefixscope.analytics import cube_cache
from prefixscope.analytics.alerts import save_alerts
from prefixscope.analytics.detection import detection_cube, run_detection
from prefixscope.analytics.detection_config import DetectionConfig
from prefixscope.analytics.query import Window
from prefixscope.analytics.scorecard import scorecard
from prefixscope.analytics.slices import SliceConfig
from prefixscope.analytics.synthetic import Arm, generate
from prefixscope.collector.storage.lake import LakeRoller
from prefixscope.collector.storage.store import Store
from prefixscope.config import Settings
from prefixscope.metrics import Metrics

PREFIXES = [None, *(f"p{i}" for i in range(9))]
ROUTES = [f"r{i}" for i in range(4)]
COHORTS = ["a", "b", "c", "d", "e"]
#: with --cohort-keys 3: every request also has a language and a plan (60 combinations)
LANGUAGES = ["de", "en", "fr", "es"]
PLANS = ["free", "pro", "team"]


def cohorts(keys: int) -> list[dict[str, str]]:
    if keys == 1:
        return [{"specialty": c} for c in COHORTS]
    return [
        {"specialty": c, "language": lang, "plan": plan}
        for c in COHORTS
        for lang in LANGUAGES
        for plan in PLANS
    ]


def arms(per: int, keys: int = 1) -> list[Arm]:
    """The 200 cells (x 12 with three cohort keys), ``per`` requests each, with the injected
    regression (cohort specialty c)."""
    out = []
    for p in PREFIXES:
        for r in ROUTES:
            for cohort in cohorts(keys):
                bad = (p, r, cohort["specialty"]) == ("p3", "r1", "c")
                out.append(
                    Arm(
                        p,
                        None if p is None else "2",
                        r,
                        cohort,
                        n=per,
                        scores={
                            "TaskCompletion": (0.7 if bad else 0.8, 10.0),
                            "Groundedness": (0.9, 10.0),
                        },
                        score_coverage=0.15,
                        p99_factor=2.0 if bad else 1.0,
                    )
                )
    return out


def populate(store: Store, n_spans: int, shape: str, keys: int) -> float:
    con = store.cursor()
    cells = len(PREFIXES) * len(ROUTES) * len(cohorts(keys))
    chunks = max(1, n_spans // 1_000_000)
    per = n_spans // cells // chunks // (4 if shape == "sdk" else 1)
    t = time.perf_counter()
    week = timedelta(days=7)
    for chunk in range(chunks):
        # spread over a week (the variant page's 7-day window holds all of it), in time order
        # as a server stores it: chunk k is the k-th slice of the week
        generate(
            con,
            arms(per, keys),
            seed=chunk,
            id_offset=chunk * 10**9,
            start=datetime(2025, 1, 1) + week * chunk / chunks,
            duration=week / chunks,
            shape=shape,
        )
    con.execute("CHECKPOINT")
    return time.perf_counter() - t


def make_cold(store: Store, fraction: float) -> tuple[float, int]:
    """Roll every span into the lake and move the oldest ``fraction`` of the week out of
    DuckDB (spans, requests, scores and feedback), as ``serve`` does; returns (seconds, spans
    moved)."""
    t = time.perf_counter()
    con = store.cursor()
    con.execute("UPDATE span_rows SET ingest_batch = 1 WHERE ingest_batch = 0")  # "committed"
    con.execute("UPDATE request_rows SET resolve_batch = 1")
    con.execute("INSERT OR REPLACE INTO lake_state VALUES ('requests', 1, now()::TIMESTAMP)")
    boundary = datetime(2025, 1, 1) + timedelta(days=7 * fraction)
    now = datetime.now(UTC).replace(tzinfo=None)
    roller = LakeRoller(
        store,
        Metrics(),
        interval_s=1,
        row_group_rows=1_000_000,
        hot_retention=now - boundary,
    )
    roller.roll()
    moved = roller.move(now=now)
    con.execute("CHECKPOINT")
    return time.perf_counter() - t, moved


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def full_run(store: Store, slice_depth: int = SliceConfig().depth) -> tuple[str, int, int]:
    con = store.cursor()
    t, c = time.perf_counter(), _cpu()
    cube = detection_cube(con, Window())
    t_cube = time.perf_counter() - t
    config = DetectionConfig(slices=SliceConfig(depth=slice_depth))
    result = run_detection(con, cube=cube, config=config)
    alerts = save_alerts(con, result)
    t_detect = time.perf_counter() - t - t_cube
    scorecard(con, ["prefix_id", "route"], cube=result.cube)
    scorecard(con, ["prefix_id", "cohort.specialty"], cube=result.cube)
    wall, cpu = time.perf_counter() - t, _cpu() - c
    kept = cube.meta.get("cache")
    days = f" [days: {kept['days_reused']} kept, {kept['days_computed']} scanned]" if kept else ""
    text = (
        f"{wall:5.2f}s (cube {t_cube:.2f}{days}, tests+alerts {t_detect:.2f}, scorecards "
        f"{wall - t_cube - t_detect:.2f}; cpu {cpu:.2f}s)"
    )
    return text, len(result.comparisons), len(alerts)


def timeseries_run(store: Store) -> str:
    from prefixscope.analytics.timeseries import SeriesQuery, timeseries

    con = store.cursor()
    out = []
    week = ("2025-01-01T00:00:00", "2025-01-08T00:00:00")  # where populate() put the data
    for label, query in (
        ("7 days, all cohorts", SeriesQuery("p3", *week)),
        ("7 days, route r1 and cohort c", SeriesQuery("p3", *week, "r1", {"specialty": "c"})),
    ):
        t = time.perf_counter()
        data = timeseries(con, query)
        points = sum(len(s["t"]) for s in data["series"])
        out.append(f"{label}: {time.perf_counter() - t:.2f}s ({points} points)")
    return ", ".join(out)


def new_traffic(store: Store, n_spans: int, shape: str, keys: int) -> int:
    """Append about 1 % more traffic in the last 6 hours of the week, with its scores and
    feedback (created minutes after each request), as a live server receives it between two
    runs; returns the requests added."""
    cells = len(PREFIXES) * len(ROUTES) * len(cohorts(keys))
    per = max(1, n_spans // 100 // cells // (4 if shape == "sdk" else 1))
    generate(
        store.cursor(),
        arms(per, keys),
        seed=10**6,
        id_offset=10**15,
        start=datetime(2025, 1, 7, 18),
        duration=timedelta(hours=6),
        shape=shape,
    )
    return per * cells


def with_mapping(store: Store) -> None:
    """Declare a served name (it matches nothing here: only the join's cost is measured)."""
    from prefixscope.collector.storage.attribution import declare_served
    from prefixscope.config import ServedModel

    declare_served(store.cursor(), [ServedModel("served-name", "p9", "9")])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="Comma-separated span counts.")
    ap.add_argument(
        "--keep",
        default=None,
        help="Keep (and reuse, when the size matches) the data under this directory.",
    )
    ap.add_argument(
        "--shape",
        choices=["sdk", "call"],
        default="sdk",
        help="Trace shape: sdk (4 spans a request, default) or call (1 span a request).",
    )
    ap.add_argument(
        "--cohort-keys",
        type=int,
        choices=[1, 3],
        default=1,
        help="Cohort keys per request: 1 (specialty) or 3 (specialty, language, plan); with "
        "3 the full run is also timed without slices (--slice-depth 0), in the same run.",
    )
    ap.add_argument(
        "--cold-fraction",
        type=float,
        default=0.5,
        help="Share of the week moved to the cold tier (the Parquet lake) before the runs.",
    )
    ap.add_argument(
        "--store-memory-mb",
        type=int,
        default=Settings().store_memory_mb,
        help="The store's memory budget for the runs, as `serve --store-memory-mb` (DuckDB "
        "gets its share of it; 0: DuckDB's default, 80%% of RAM). Default: the server's.",
    )
    args = ap.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        root = Path(args.keep or tempfile.mkdtemp(prefix="psbench-")) / f"spans-{size}"
        with Store(root) as store:
            have = store.cursor().execute("SELECT count(*) FROM spans").fetchone()
        if have and have[0] and have[0] != size:
            # a kept store of another size (an earlier run added its new traffic to it):
            # generate afresh, not on top of it (the generated ids would repeat)
            shutil.rmtree(root)
            have = None
        with Store(root) as store:
            gen = (
                populate(store, size, args.shape, args.cohort_keys)
                if not have or have[0] != size
                else 0.0
            )
            cold_s, moved = 0.0, 0
            if gen and args.cold_fraction > 0:
                cold_s, moved = make_cold(store, args.cold_fraction)
            spans = store.cursor().execute("SELECT count(*) FROM spans").fetchone()
            hot = store.cursor().execute("SELECT count(*) FROM span_rows").fetchone()
            reqs = store.cursor().execute("SELECT count(*) FROM requests_base").fetchone()
        # reopen, as the server opens it: the cold run reads the file, with no day kept on
        # disk by an earlier run (the first run a store ever has)
        shutil.rmtree(root / "cache", ignore_errors=True)
        with Store(root, memory_mb=args.store_memory_mb or None) as store:
            cold, comparisons, alerts = full_run(store)
            warm, _, _ = full_run(store)
        cube_cache.forget()  # a restart: nothing in memory, the days kept on disk
        with Store(root, memory_mb=args.store_memory_mb or None) as store:
            restart, _, _ = full_run(store)
            flat = ""
            if args.cohort_keys > 1:  # slices' cost, in the same run: without, then with
                without, n0, _ = full_run(store, slice_depth=0)
                again, _, _ = full_run(store)
                flat = (
                    f"\n  full run warm without slices (depth 0, {n0} comparisons) {without}"
                    f"\n  full run warm with slices again {again}"
                )
            added = new_traffic(store, size, args.shape, args.cohort_keys)
            live, _, _ = full_run(store)
            series = timeseries_run(store)
            with_mapping(store)
            mapped, _, _ = full_run(store)
            mapped_again, _, _ = full_run(store)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        load = os.getloadavg()[0]
        print(
            f"{spans[0] if spans else 0:>10} spans ({reqs[0] if reqs else 0} requests, "
            f"shape {args.shape}): generate {gen:6.1f}s, "
            f"{hot[0] if hot else 0} hot / {moved} moved cold in {cold_s:.1f}s\n"
            f"  full run cold (first ever) {cold}\n  full run warm {warm}\n"
            f"  full run after a restart (days kept on disk) {restart}{flat}\n"
            f"  full run after {added} new requests in the last day {live}\n"
            f"  time series (variant page) {series}\n"
            f"  full run after a served-model registration (every day again) {mapped}\n"
            f"  full run warm with the mapping (view join) {mapped_again}\n"
            f"  {comparisons} comparisons, {alerts} alerts | peak RSS {rss:,.0f} MiB | "
            f"load average {load:.1f} on {os.cpu_count()} cores; store memory budget "
            f"{args.store_memory_mb or 'DuckDB default'} MB",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
