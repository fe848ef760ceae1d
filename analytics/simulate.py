"""Simulations of the detector's error rates, shared by the tests and ``bench/``.

* :func:`daily_looks` — one prefix against the base model with identical traffic (A/A),
  ``per_day`` requests per arm and day, and a regression run after every day through the
  real store path (:func:`~.alerts.run_and_diff`, sequence state included). The share of
  runs with any alert is the false-alert rate of repeated looks.
* :func:`versions_fdr` — the Benjamini-Hochberg family with version baselines: ``prefixes``
  x ``versions`` x ``cohorts`` cells, each compared with the base model and with its
  previous version (v2 vs v1 and v1 vs base share v1: negatively correlated statistics).
  Cells are drawn as sufficient statistics and go through the real decision code
  (:func:`~.detection.compare_cells`); the measured FDR is E[false flags / flags].
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from .alerts import run_and_diff
from .comparison import Comparison
from .detection import compare_cells
from .detection_config import DetectionConfig
from .metrics import Cell, Estimate
from .query import BASE, parse_time
from .synthetic import Arm, generate

T0 = datetime(2025, 1, 1)


@dataclass(frozen=True, slots=True)
class Rate:
    """A simulated rate: ``hits`` of ``runs``, with its binomial standard error."""

    hits: float
    runs: int

    @property
    def value(self) -> float:
        return self.hits / self.runs if self.runs else float("nan")

    @property
    def stderr(self) -> float:
        v = self.value
        return float(np.sqrt(max(v * (1 - v), 1e-12) / self.runs)) if self.runs else float("nan")

    def __str__(self) -> str:
        return f"{self.value:.3f} (+/- {self.stderr:.3f}, {self.runs} runs)"


def daily_looks(
    runs: int,
    days: int,
    *,
    per_day: int = 100,
    since: str | None,
    config: DetectionConfig,
    seed0: int = 0,
) -> Rate:
    """A/A with a regression run at the end of every simulated day; ``since`` is resolved
    against the simulated clock, as the API resolves it against its own (an age like ``7d``
    therefore slides). Returns the share of runs in which any look raised an alert.

    A simulated run's days are stored at once; each look's window ends at its day's end, and
    a regression run reads nothing after its ``until``, so a look sees what it would have seen
    that evening
    (``test_a_look_reads_nothing_after_its_end`` in ``tests/analytics/test_detection.py``)."""
    from .synthetic import scratch_store

    cohort = {"specialty": "cardiology"}
    arms = [
        Arm(None, None, "clinical", cohort, n=per_day, scores={"TaskCompletion": (0.8, 10)}),
        Arm("card", "1", "clinical", cohort, n=per_day, scores={"TaskCompletion": (0.8, 10)}),
    ]
    hits = 0
    for run in range(runs):
        con = scratch_store()
        try:
            generate(
                con, arms, seed=seed0 + run, start=T0, duration=timedelta(days=1), periods=days
            )
            for day in range(days):
                clock = T0 + timedelta(days=day + 1)
                diff = run_and_diff(con, parse_time(since, clock), clock, config)
                if not diff.result.comparisons:  # a look that tests nothing cannot alert
                    raise RuntimeError(f"day {day}: the run tested no comparison")
                if diff.result.regressions:
                    hits += 1
                    break
        finally:
            con.close()
    return Rate(hits, runs)


@dataclass(frozen=True, slots=True)
class FdrResult:
    fdr: Rate  # mean false-discovery proportion (hits = sum of proportions)
    any_false: Rate  # share of replicates with at least one false flag
    power: float  # share of true regressions flagged (nan without regressions)
    comparisons: int  # per replicate


def versions_fdr(
    reps: int,
    *,
    prefixes: int = 10,
    versions: int = 3,
    cohorts: int = 7,
    n: int = 200,
    regressed: float = 0.0,
    drop: float = 0.08,
    config: DetectionConfig,
    seed: int = 0,
) -> FdrResult:
    """Every (prefix, version, cohort) cell vs base and vs its previous version, on one
    evaluator score (Beta(8, 2): mean 0.8) with ``n`` scored requests per cell. A share
    ``regressed`` of the prefix cells (never version 1, so their version baseline is
    informative) score ``drop`` lower; every other comparison is a true null, except the
    comparison of a regressed cell with a regressed previous version and the next version's
    comparison with a regressed cell (an improvement). Returns the false-discovery
    proportion averaged over replicates."""
    rng = np.random.default_rng(seed)
    alpha_b, beta_b = 8.0, 2.0
    keys: list[tuple[str, str, str, str, str]] = [_key(BASE, "", str(c)) for c in range(cohorts)]
    keys += [
        _key(f"p{p}", str(v), str(c))
        for p in range(prefixes)
        for v in range(1, versions + 1)
        for c in range(cohorts)
    ]
    fdp_sum, any_false, true_flags, true_total, n_cmp = 0.0, 0, 0, 0, 0
    for _ in range(reps):
        bad = {k for k in keys if k[0] != BASE and k[1] != "1" and rng.random() < regressed}
        cells = []
        for k in keys:
            mean_shift = -drop if k in bad else 0.0
            x = rng.beta(alpha_b, beta_b, n) + mean_shift
            first = T0 + timedelta(days=int(k[1] or 0))
            cell = Cell(key=k, n=n, first_seen=first, last_seen=first)
            cell.metrics["TaskCompletion"] = Estimate(
                "mean", float(x.mean()), n, var=float(x.var(ddof=1) / n)
            )
            cells.append(cell)
        cmps = compare_cells(cells, config)
        n_cmp = len(cmps)
        flagged = [c for c in cmps if c.flagged]
        true = [c for c in cmps if _is_regression(c, bad)]
        false = [c for c in flagged if not _is_regression(c, bad)]
        true_total += len(true)
        true_flags += sum(c.flagged for c in true)
        if flagged:
            fdp_sum += len(false) / len(flagged)
        any_false += bool(false)
    power = true_flags / true_total if true_total else float("nan")
    return FdrResult(Rate(fdp_sum, reps), Rate(any_false, reps), power, n_cmp)


def _is_regression(c: Comparison, bad: set[tuple[str, str, str, str, str]]) -> bool:
    """A true regression: the cell is worse and its baseline is not."""

    if _key(c.prefix_id, c.prefix_version, c.cohort["c"]) not in bad:
        return False
    if c.baseline == BASE:
        return True
    prefix, _, version = c.baseline.rpartition("@")
    return _key(prefix, version, c.cohort["c"]) not in bad


def _key(prefix: str, version: str, cohort: str) -> tuple[str, str, str, str, str]:
    """A cell key as the cube spells it: (prefix, version, base model, route, cohort JSON)."""
    return (prefix, version, "tiny-base", "clinical", f'{{"c":"{cohort}"}}')
