"""Regression detection: every (prefix, version, route, cohort) cell vs its baselines.

Baselines: the base model in the same route, cohort and window (``"base"``), and the previous
version of the same prefix in the same route and cohort (``"<prefix>@<version>"``; versions
are ordered by when they were first seen). Per metric family:

* evaluator scores — difference of means, Welch variance (worse = lower);
* rates (error/fallback/thumbs-down/escalation) — difference of proportions (worse = higher);
* latency/TTFT quantiles — log ratio of quantiles, variance from the exact bootstrap of the
  histogram (worse = higher).

Each comparison's normal statistic goes through a one-sided mixture SPRT, giving an
*always-valid* p-value (valid however often detection re-runs on growing data);
Benjamini-Hochberg then controls the FDR across every comparison of the run. A regression is
flagged only when q <= alpha, the estimated effect is worse than the metric's minimum effect
and both sides have the minimum n. See README-detection.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any, Literal

import duckdb
import numpy as np
import orjson
from scipy import stats as sps

from . import stats
from .cube import Cube, build_cube
from .engines import Engine
from .metrics import BUILTIN_METRICS, QUANTILE_METRICS, RATE_METRICS, Cell, Estimate, summarise
from .query import BASE, Window

DIMS = ("prefix_id", "prefix_version", "route", "cohort")
DEFAULT_MIN_EFFECT: dict[str, float] = {
    **{m: 0.10 for m in QUANTILE_METRICS},  # relative (+10 %)
    "error_rate": 0.01,
    "fallback_rate": 0.02,
    "thumbs_down_rate": 0.02,
    "escalation_rate": 0.01,
}
DEFAULT_MIN_N: dict[str, int] = {"latency_p99": 300, "ttft_p99": 300}


class ConfigError(ValueError):
    """A detection setting is out of range."""


@dataclass(slots=True)
class DetectionConfig:
    """Detection settings; :meth:`validate` fails fast on bad values."""

    #: FDR level for Benjamini-Hochberg (and the level of reported intervals)
    alpha: float = 0.05
    #: minimum requests (or scored requests) on *each* side of a comparison
    min_n: int = 100
    #: per-metric overrides of ``min_n``
    min_n_by_metric: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MIN_N))
    #: minimum worsening per metric: absolute for rates/scores, relative for quantiles
    min_effect: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_EFFECT))
    #: minimum effect of evaluator scores without an entry in ``min_effect``
    score_min_effect: float = 0.05
    #: mSPRT mixing scale as a multiple of the minimum effect
    tau_factor: float = 2.0
    #: "msprt" (always valid, for repeated runs) or "fixed" (one look, fixed horizon)
    sequential: Literal["msprt", "fixed"] = "msprt"
    #: metrics to test (default: every detectable metric present)
    metrics: list[str] | None = None
    #: baselines to compare with
    baselines: tuple[str, ...] = ("base", "previous_version")

    def validate(self) -> DetectionConfig:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_n < 2 or any(v < 2 for v in self.min_n_by_metric.values()):
            raise ConfigError("min_n must be >= 2")
        if any(v < 0 for v in self.min_effect.values()) or self.score_min_effect < 0:
            raise ConfigError("minimum effects must be >= 0")
        if self.tau_factor <= 0:
            raise ConfigError("tau_factor must be > 0")
        if self.sequential not in ("msprt", "fixed"):
            raise ConfigError(f"sequential must be 'msprt' or 'fixed', got {self.sequential!r}")
        if not set(self.baselines) <= {"base", "previous_version"}:
            raise ConfigError(f"unknown baselines {self.baselines}")
        return self

    def effect_floor(self, metric: str) -> float:
        return self.min_effect.get(metric, self.score_min_effect)

    def n_floor(self, metric: str) -> int:
        return self.min_n_by_metric.get(metric, self.min_n)


@dataclass(slots=True)
class Comparison:
    """One metric of one cell against one baseline."""

    prefix_id: str
    prefix_version: str
    route: str | None
    cohort: dict[str, Any]
    metric: str
    baseline: str
    value: float
    baseline_value: float
    delta: float
    relative: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_baseline: int
    p_value: float
    p_fixed: float
    q_value: float = 1.0
    flagged: bool = False
    severity: str = "minor"
    method: str = ""

    def fingerprint_parts(self) -> list[Any]:
        return [
            self.prefix_id,
            self.prefix_version,
            self.route,
            sorted(self.cohort.items()),
            self.metric,
            self.baseline,
        ]


@dataclass(slots=True)
class DetectionResult:
    window: Window
    config: DetectionConfig
    comparisons: list[Comparison]
    cube: Cube

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.flagged]


def _canonical_cohort(cube: Cube) -> Cube:
    ci = cube.dims.index("cohort")
    new: dict[tuple[str | None, ...], int] = {}
    mapping = np.empty(len(cube.keys), dtype=np.int64)
    for i, k in enumerate(cube.keys):
        raw = k[ci]
        obj = orjson.loads(raw) if raw else {}
        canon = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode() if obj else None
        nk = (*k[:ci], canon, *k[ci + 1 :])
        mapping[i] = new.setdefault(nk, len(new))
    if len(new) == len(cube.keys):
        cube.keys = list(new)
        return cube
    return cube.regroup(cube.dims, mapping, list(new))


def detection_cube(con: duckdb.DuckDBPyConnection | Engine, window: Window) -> Cube:
    """The cube detection runs on: cells (prefix_id, prefix_version, route, cohort)."""
    return _canonical_cohort(build_cube(con, DIMS, window))


def _version_order(cells: list[Cell]) -> dict[tuple[str, str], str]:
    """(prefix, version) -> previous version of that prefix (by first-seen time)."""
    first: dict[tuple[str, str], datetime] = {}
    for c in cells:
        p, v = str(c.key[0]), str(c.key[1] or "")
        if p == BASE or c.first_seen is None:
            continue
        if (p, v) not in first or c.first_seen < first[(p, v)]:
            first[(p, v)] = c.first_seen
    prev: dict[tuple[str, str], str] = {}
    by_prefix: dict[str, list[tuple[datetime, str]]] = {}
    for (p, v), t in first.items():
        by_prefix.setdefault(p, []).append((t, v))
    for p, lst in by_prefix.items():
        lst.sort()
        for (_, v0), (_, v1) in pairwise(lst):
            prev[(p, v1)] = v0
    return prev


def _family(metric: str) -> str:
    if metric in QUANTILE_METRICS:
        return "quantile"
    if metric in RATE_METRICS:
        return "rate"
    return "score"


def run_detection(
    con: duckdb.DuckDBPyConnection | Engine,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    config: DetectionConfig | None = None,
    *,
    cube: Cube | None = None,
) -> DetectionResult:
    """Compare every cell with its baselines; nothing is written (see :mod:`.alerts`)."""
    config = (config or DetectionConfig()).validate()
    window = Window.of(since, until)
    cube = cube if cube is not None else detection_cube(con, window)
    cells = summarise(cube, config.alpha)
    by_key = {c.key: c for c in cells}
    prev = _version_order(cells)
    pending: list[tuple[Comparison, float, float, float]] = []  # (cmp, worse stat, var, tau)
    for cell in cells:
        prefix, version, route, cohort_raw = cell.key
        if prefix == BASE:
            continue
        rest = (route, cohort_raw)
        targets: list[tuple[str, Cell | None]] = []
        if "base" in config.baselines:
            targets.append((BASE, by_key.get((BASE, "", *rest))))
        pv = prev.get((str(prefix), str(version or "")))
        if "previous_version" in config.baselines and pv is not None:
            targets.append((f"{prefix}@{pv}", by_key.get((prefix, pv, *rest))))
        cohort = orjson.loads(cohort_raw) if cohort_raw else {}
        for label, base in targets:
            if base is None:
                continue
            for metric, est in cell.metrics.items():
                if metric in BUILTIN_METRICS and _family(metric) == "score":
                    continue  # n, tokens, kv-cache: reported, not tested
                if config.metrics is not None and metric not in config.metrics:
                    continue
                b = base.metrics.get(metric)
                item = _compare(
                    config, str(prefix), str(version or ""), route, cohort, metric, label, est, b
                )
                if item is not None:
                    pending.append(item)
    comparisons = _decide(config, pending)
    return DetectionResult(window, config, comparisons, cube)


def _compare(
    config: DetectionConfig,
    prefix: str,
    version: str,
    route: str | None,
    cohort: dict[str, Any],
    metric: str,
    label: str,
    est: Estimate,
    b: Estimate | None,
) -> tuple[Comparison, float, float, float] | None:
    if b is None or est.value is None or b.value is None or est.var is None or b.var is None:
        return None
    floor_n = config.n_floor(metric)
    if est.n < floor_n or b.n < floor_n:
        return None
    fam = _family(metric)
    floor = config.effect_floor(metric)
    if fam == "quantile":
        if est.value <= 0 or b.value <= 0:
            return None
        stat = float(np.log(est.value / b.value))
        var = est.var / est.value**2 + b.var / b.value**2
        tau = config.tau_factor * float(np.log1p(floor))
        effect = est.value / b.value - 1
    else:
        diff = est.value - b.value
        stat = diff if fam == "rate" else -diff
        var = est.var + b.var
        tau = config.tau_factor * floor
        effect = stat
    if var <= 0 or tau <= 0:
        return None
    cmp = Comparison(
        prefix_id=prefix,
        prefix_version=version,
        route=route,
        cohort=cohort,
        metric=metric,
        baseline=label,
        value=est.value,
        baseline_value=b.value,
        delta=est.value - b.value,
        relative=(est.value / b.value - 1) if b.value else None,
        ci_low=None,
        ci_high=None,
        n=est.n,
        n_baseline=b.n,
        p_value=1.0,
        p_fixed=float(sps.norm.sf(stat / np.sqrt(var))),
        method=f"{config.sequential}:{fam}",
    )
    cmp.severity = _severity(effect, floor)
    return cmp, stat, var, tau


def _severity(effect: float, floor: float) -> str:
    ratio = effect / floor if floor > 0 else np.inf
    return "critical" if ratio >= 4 else "major" if ratio >= 2 else "minor"


def _decide(
    config: DetectionConfig, pending: Sequence[tuple[Comparison, float, float, float]]
) -> list[Comparison]:
    if not pending:
        return []
    cmps = [p[0] for p in pending]
    stat = np.array([p[1] for p in pending])
    var = np.array([p[2] for p in pending])
    tau = np.array([p[3] for p in pending])
    if config.sequential == "msprt":
        p = stats.msprt_p_value(stat, var, tau)
        lo, hi = stats.msprt_confidence_interval(stat, var, tau, config.alpha)
    else:
        p = np.array([c.p_fixed for c in cmps])
        half = sps.norm.ppf(1 - config.alpha / 2) * np.sqrt(var)
        lo, hi = stat - half, stat + half
    q = stats.bh_q_values(p)
    for i, c in enumerate(cmps):
        fam = _family(c.metric)
        c.p_value, c.q_value = float(p[i]), float(q[i])
        # intervals on the delta (value - baseline) scale
        if fam == "quantile":
            c.ci_low = c.baseline_value * float(np.expm1(lo[i]))
            c.ci_high = c.baseline_value * float(np.expm1(hi[i]))
        elif fam == "rate":
            c.ci_low, c.ci_high = float(lo[i]), float(hi[i])
        else:
            c.ci_low, c.ci_high = float(-hi[i]), float(-lo[i])
        effect = (c.relative or 0.0) if fam == "quantile" else float(stat[i])
        c.flagged = bool(q[i] <= config.alpha and effect >= config.effect_floor(c.metric))
    return cmps
