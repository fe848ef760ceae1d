"""Metric estimates per cell (value, n, CI, sampling variance) from a :class:`~.cube.Cube`.

Metric names are the contract of DESIGN.md ("Metrics"): evaluator names (any score
``name``), ``latency_p50/p90/p99``, ``ttft_p50/p99``, ``route_latency_p50/p99``,
``error_rate``, ``fallback_rate``, ``thumbs_down_rate``, ``escalation_rate``,
``kv_cache_reuse_rate``, ``n``, ``input_tokens``, ``output_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from . import stats
from .catalog import BUILTIN_METRICS, CATALOG, Kind
from .cube import Cube
from .cube_sql import LATENCY, ROUTE_LATENCY, TTFT

_HISTOGRAMS = {"latency": LATENCY, "ttft": TTFT, "route_latency": ROUTE_LATENCY}
#: metric -> (cube histogram, quantile), from the catalog
QUANTILE_METRICS: dict[str, tuple[int, float]] = {
    n: (_HISTOGRAMS[str(s.histogram)], float(s.quantile or 0.0))
    for n, s in CATALOG.items()
    if s.kind == "quantile"
}
#: metric -> cube counter, from the catalog
RATE_METRICS: dict[str, str] = {n: str(s.counter) for n, s in CATALOG.items() if s.kind == "rate"}


@dataclass(slots=True)
class Estimate:
    """One metric of one cell; ``var`` is the sampling variance of ``value`` (for tests)."""

    kind: Kind
    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    var: float | None = None
    successes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "n": self.n, "ci_low": self.ci_low, "ci_high": self.ci_high}


@dataclass(slots=True)
class Cell:
    """The metrics of one group (one combination of key values)."""

    key: tuple[str | None, ...]
    n: int
    metrics: dict[str, Estimate] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None


def _opt(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def summarise(cube: Cube, alpha: float = 0.05) -> list[Cell]:
    """Estimates with (1 - alpha) intervals for every cell of ``cube`` (vectorised)."""
    m = len(cube)
    n = cube.sums["n"]
    cells = [
        Cell(key=k, n=int(n[i]), first_seen=cube.first_seen[i], last_seen=cube.last_seen[i])
        for i, k in enumerate(cube.keys)
    ]
    if m == 0:
        return cells
    for i, c in enumerate(cells):
        c.metrics["n"] = Estimate("count", float(n[i]), int(n[i]))
    _quantiles(cube, cells, alpha)
    counts = {"errors": cube.sums["errors"], "fallbacks": cube.sums["fallbacks"]}
    for kind in ("thumbs_down", "escalation"):
        arr = np.zeros(m)
        sel = np.array([k == kind for k in cube.f_kind], dtype=bool)
        if sel.any():
            np.add.at(arr, cube.f_cell[sel], cube.f_count[sel])
        counts[kind] = arr
    for name, counter in RATE_METRICS.items():
        k = counts[counter]
        lo, hi = stats.jeffreys_interval(k, n, alpha)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = k / n
        for i, c in enumerate(cells):
            c.metrics[name] = Estimate(
                "rate",
                _opt(p[i]),
                int(n[i]),
                _opt(lo[i]),
                _opt(hi[i]),
                var=_opt(p[i] * (1 - p[i]) / n[i]) if n[i] > 0 else None,
                successes=int(k[i]),
            )
    base, cached = cube.sums["cache_base"], cube.sums["cached"]
    for i, c in enumerate(cells):
        c.metrics["kv_cache_reuse_rate"] = Estimate(
            "ratio", float(cached[i] / base[i]) if base[i] > 0 else None, int(n[i])
        )
        for t, src in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens")):
            c.metrics[t] = Estimate("total", float(cube.sums[src][i]), int(n[i]))
    _scores(cube, cells, alpha)
    return cells


def _quantiles(cube: Cube, cells: list[Cell], alpha: float) -> None:
    m = len(cells)
    for metric in (LATENCY, TTFT, ROUTE_LATENCY):
        g, b, c = cube.histogram(metric)
        counts = np.bincount(g, weights=c, minlength=m) if len(g) else np.zeros(m)
        for name, (hm, p) in QUANTILE_METRICS.items():
            if hm != metric:
                continue
            point = stats.hist_quantile(g, b, c, m, p)
            boot = stats.quantile_bootstrap(g, b, c, m, p, alpha)
            for i, cell in enumerate(cells):
                v = _opt(point[i])
                cell.metrics[name] = Estimate(
                    "quantile",
                    v,
                    int(counts[i]),
                    None if v is None else min(float(boot.ci_low[i]), v),
                    None if v is None else max(float(boot.ci_high[i]), v),
                    var=_opt(boot.var[i]),
                )


def _scores(cube: Cube, cells: list[Cell], alpha: float) -> None:
    if len(cube.s_cell) == 0:
        return
    n = cube.s_n
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = cube.s_sum / n
        var = np.where(n > 1, (cube.s_sumsq - n * mean * mean) / (n - 1), np.nan)
    var = np.maximum(var, 0.0)
    # evaluator scores are in [0, 1] (the API validates them): intervals stay inside it
    lo, hi = stats.bounded_score_interval(cube.s_sum, cube.s_sumsq, n, alpha)
    for j, ci in enumerate(cube.s_cell):
        cells[int(ci)].metrics[cube.s_name[j]] = Estimate(
            "mean",
            _opt(mean[j]),
            int(n[j]),
            _opt(lo[j]),
            _opt(hi[j]),
            var=_opt(var[j] / n[j]) if n[j] > 1 else None,
        )


def metric_names(cells: list[Cell]) -> list[str]:
    """Every metric present in ``cells``: built-ins in contract order, then evaluators."""
    seen: set[str] = set()
    for c in cells:
        seen.update(c.metrics)
    return [m for m in BUILTIN_METRICS if m in seen] + sorted(seen - set(BUILTIN_METRICS))
