"""The detector's error rates by simulation (issue 15): repeated looks and version families.

    .venv/bin/python bench/detection_errors.py                  # both, full sizes
    .venv/bin/python bench/detection_errors.py --only looks --runs 100 --days 90
    .venv/bin/python bench/detection_errors.py --only fdr --reps 2000

looks: A/A, one prefix vs base, 100 requests per arm and day, a regression run after every
day for ``--days`` days through the real store path (``run_and_diff``). Compared: the API's
default run (mSPRT on the growing window, ``since`` unset, running-minimum p-values), the old
default (mSPRT on a sliding ``since=7d``). A rate is the share of runs with any false alert.
(Windows mode tests each completed window once, a fresh fixed-horizon test per window; its
per-window rate is simulated in tests/analytics/test_detection.py.)

fdr: A/A and partly regressed families of 10 prefixes x 3 versions x 7 cohorts (210 cells,
350 comparisons: each cell vs base and vs its previous version), fixed-horizon Welch tests
with no minimum effect (Benjamini-Hochberg alone), and with the default minimum effect.
The figure is the mean false-discovery proportion.

Simulations, not timings: the machine's load does not change the figures.
"""

from __future__ import annotations

import argparse
import time

from prefixscope.analytics.detection_config import DetectionConfig
from prefixscope.analytics.simulate import daily_looks, versions_fdr


def looks(runs: int, days: int) -> None:
    cases = [
        ("default API run: msprt, growing window (since unset)", None, DetectionConfig()),
        ("old default: msprt, sliding since=7d", "7d", DetectionConfig()),
    ]
    for name, since, cfg in cases:
        t = time.perf_counter()
        rate = daily_looks(runs, days, since=since, config=cfg, seed0=1000)
        print(f"[looks] {name}: false-alert rate {rate} ({time.perf_counter() - t:.0f} s)")


def fdr(reps: int) -> None:
    for floor_name, floor in (("no minimum effect", 1e-6), ("default minimum effect", None)):
        for regressed in (0.0, 0.1, 0.3):
            cfg = DetectionConfig(sequential="fixed")
            if floor is not None:
                cfg.score_min_effect = floor
            r = versions_fdr(reps, regressed=regressed, config=cfg, seed=11)
            print(
                f"[fdr] {floor_name}, {regressed:.0%} of cells regressed: FDR {r.fdr}, "
                f"P(any false alert) {r.any_false.value:.3f}, power {r.power:.3f}, "
                f"{r.comparisons} comparisons"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["looks", "fdr"])
    ap.add_argument("--runs", type=int, default=100, help="looks: seeded runs per case")
    ap.add_argument("--days", type=int, default=90, help="looks: daily looks per run")
    ap.add_argument("--reps", type=int, default=2000, help="fdr: replicates per case")
    args = ap.parse_args()
    if args.only in (None, "fdr"):
        fdr(args.reps)
    if args.only in (None, "looks"):
        looks(args.runs, args.days)


if __name__ == "__main__":
    main()
