"""Regression detection: every (prefix, version, base model, route, cohort) cell vs its
baselines, counted in requests (``collector/spans/requests.py``).

Baselines: the base model's own requests, of the variant's base model, in the same route,
cohort and window (``"base"``), and the previous version of the same prefix on the same base
model, route and cohort (``"<prefix>@<version>"``; versions are ordered by when they were
first seen). Base requests of another base model are never a variant's baseline. Per metric family:

* evaluator scores — difference of means, Welch variance (worse = lower);
* rates (error/fallback/thumbs-down/escalation) — difference of proportions (worse = higher);
* latency/TTFT quantiles — log ratio of quantiles, variance from the exact bootstrap of the
  histogram (worse = higher).

How repeated runs are made safe (``DetectionConfig.sequential``):

* ``msprt`` (default) — each comparison's normal statistic goes through a one-sided mixture
  SPRT, giving an *always-valid* p-value (valid however often detection re-runs on growing
  data). The guarantee needs a *growing* window: ``since`` is fixed (an ISO time, or unset
  for all data), never an age like ``7d`` that slides with the clock (refused). Given the
  previous looks (``prior``), the p-value is their running minimum and the bound their
  running maximum, so an alert does not flicker between runs;
* ``windows`` — the run tests only the latest *completed* evaluation window
  ``[k W, (k+1) W)`` of span start time (epoch-aligned, UTC) with fixed-horizon tests (Welch
  t, pooled two-proportion z, bootstrap z). Until the next window completes every re-run
  tests the same data, so it repeats the same p-values instead of taking a new chance;
* ``fixed`` — fixed-horizon tests on the given ``[since, until)``, for one look only.

Benjamini-Hochberg then controls the FDR across every comparison of the run. A regression is
flagged only when q <= alpha, the estimated effect is worse than the metric's minimum effect
and both sides have the minimum n. Each comparison reports the interval of the test that
decided it: a one-sided (1 - alpha) bound on the worse side (mSPRT: the confidence sequence
from inverting the test; fixed horizon: the one-sided t or normal bound), so a flagged
comparison's interval never includes 0. See docs/guides/detection.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import duckdb
import numpy as np
import orjson
from scipy import special
from scipy import stats as sps

from . import slices as slices_mod
from . import stats
from .causes import name_causes
from .comparison import Comparison, DetectionResult, Prior, families, family
from .cube import Cube, build_cube
from .cube_cache import cached_cube
from .detection_config import DetectionConfig, DetectionConfigError
from .engines import Engine
from .metrics import BUILTIN_METRICS, Cell, Estimate, summarise
from .query import BASE, Window, is_relative, parse_time
from .slices import slice_cube

DIMS = ("prefix_id", "prefix_version", "base_model", "route", "cohort")
#: evaluation windows are aligned to the Unix epoch (naive UTC, like the store's timestamps)
EPOCH = datetime(1970, 1, 1)


def evaluation_window(
    length: timedelta,
    clock: datetime | str | None = None,
    delay: timedelta = timedelta(0),
) -> Window:
    """The latest completed evaluation window at ``clock`` (default: now, UTC).

    Windows are ``[k W, (k+1) W)`` of span start time, aligned to the Unix epoch in UTC (with
    ``W = 1d``: UTC days). The result is the window with the largest ``k`` whose end is at or
    before ``clock - delay``; it changes only when the clock crosses the next window's end
    (plus ``delay``), so every run in between tests the same window.
    """
    now = parse_time(clock) or datetime.now(UTC).replace(tzinfo=None)
    k = (now - delay - EPOCH) // length
    end = EPOCH + k * length
    return Window(end - length, end)


def check_anchor(since: datetime | str | None, config: DetectionConfig) -> None:
    """mSPRT needs a growing window: refuse a ``since`` that is an age (``7d``)."""
    if config.sequential == "msprt" and is_relative(since):
        raise DetectionConfigError(
            f"since {since!r} is an age, so the window slides with the clock; mSPRT is only "
            "valid on a growing window: give since as a fixed time (ISO-8601) or leave it "
            "unset (all data), or use sequential 'windows' for rolling evaluation windows"
        )


def detection_window(
    since: datetime | str | None, until: datetime | str | None, config: DetectionConfig
) -> Window:
    """The data a run tests: ``[since, until)``, or in windows mode the latest completed
    evaluation window at ``until`` (the run's clock; default now).

    In windows mode ``since`` may only be at or before the window's start: a ``since`` inside
    the window would make the tested data depend on when the run happens, which is exactly
    what windows mode exists to prevent.
    """
    check_anchor(since, config)
    if config.sequential != "windows":
        return Window.of(since, until)
    win = evaluation_window(config.window, until, config.window_delay)
    lower = parse_time(since)
    if lower is not None and win.since is not None and lower > win.since:
        raise DetectionConfigError(
            f"since {lower.isoformat()} cuts into the evaluation window "
            f"[{win.since.isoformat()}, {win.until.isoformat() if win.until else ''}): in "
            "windows mode the tested window is set by the window length and until; leave "
            "since unset (or at or before the window start)"
        )
    return win


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
    """The cube detection runs on: cells (prefix_id, prefix_version, base_model, route,
    cohort). On the embedded store, from the days kept since the last run
    (:mod:`.cube_cache`: only the days whose requests, scores or feedback changed are
    scanned again)."""
    if isinstance(con, duckdb.DuckDBPyConnection):
        return _canonical_cohort(cached_cube(con, DIMS, window))
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


def run_detection(
    con: duckdb.DuckDBPyConnection | Engine,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    config: DetectionConfig | None = None,
    *,
    cube: Cube | None = None,
    prior: Mapping[str, Prior] | None = None,
) -> DetectionResult:
    """Compare every cell with its baselines; nothing is written (see :mod:`.alerts`).

    In windows mode ``until`` is the run's clock (default now) and the tested data is the
    latest completed evaluation window (:func:`detection_window`). ``prior`` (mSPRT only):
    the running minimum p-value and maximum bound of earlier looks at the same growing
    window, by :meth:`Comparison.fingerprint`.
    """
    config = (config or DetectionConfig()).validate()
    window = detection_window(since, until, config)
    if cube is not None and config.sequential == "windows" and cube.window != window:
        raise DetectionConfigError(
            f"the cube covers {cube.window}, not the evaluation window {window}"
        )
    cube = cube if cube is not None else detection_cube(con, window)
    if config.slices.depth > 0:
        scube = slice_cube(cube, config.slices)
        comparisons = compare_cells(
            summarise(scube, config.alpha), config, prior=prior, slices=cube
        )
    else:
        comparisons = compare_cells(summarise(cube, config.alpha), config, prior=prior)
    return DetectionResult(window, config, comparisons, cube)


def compare_cells(
    cells: Sequence[Cell],
    config: DetectionConfig,
    *,
    prior: Mapping[str, Prior] | None = None,
    slices: Cube | None = None,
) -> list[Comparison]:
    """Every cell against its baselines (base, previous version), decided run-wide: by one
    Benjamini-Hochberg over every comparison, or with ``slices`` (the cube the cells come
    from, whose cohorts are slices) by the two-stage procedure over families of slices and
    with one cause named per regression (:mod:`.slices`); ``slices`` is then the cube of full
    cohort combinations the slices were rolled up from."""
    by_key = {c.key: c for c in cells}
    position = {c.key: i for i, c in enumerate(cells)}
    prev = _version_order(list(cells))
    pending: list[_Pending] = []
    for cell in cells:
        prefix, version, base_model, route, cohort_raw = cell.key
        if prefix == BASE:
            continue
        rest = (base_model, route, cohort_raw)
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
                if metric in BUILTIN_METRICS and family(metric) == "score":
                    continue  # n, tokens, kv-cache: reported, not tested
                if config.metrics is not None and metric not in config.metrics:
                    continue
                b = base.metrics.get(metric)
                item = _compare(
                    config,
                    (str(prefix), str(version or ""), base_model, route),
                    cohort,
                    metric,
                    label,
                    est,
                    b,
                )
                if item is not None:
                    item.cells = (position[cell.key], position[base.key])
                    pending.append(item)
    decided = _decide(config, pending, prior or {}, hierarchical=slices is not None)
    if slices is not None:
        name_causes(config, [p.cmp for p in pending], slices)
    else:
        for c in decided:
            c.cause = c.flagged
    return decided


@dataclass(slots=True)
class _Pending:
    """A comparison before the run-wide decision."""

    cmp: Comparison
    stat: float  # estimated effect on the test scale, signed so that positive = worse
    var: float  # its variance
    tau: float  # mSPRT mixing scale
    df: float  # degrees of freedom of the fixed-horizon test (inf: normal)
    #: (variant cell, baseline cell) positions among the compared cells
    cells: tuple[int, int] = (-1, -1)


def _fixed_horizon(
    fam: str, stat: float, var: float, est: Estimate, b: Estimate
) -> tuple[float, float, str]:
    """One-sided fixed-horizon test: (p-value, degrees of freedom, test name)."""
    if fam == "score" and est.var is not None and b.var is not None:
        df = float(stats.welch_df(est.var, est.n, b.var, b.n))
        return float(stats.welch_p_value(stat, est.var, est.n, b.var, b.n)), df, "welch_t"
    if fam == "rate" and est.successes is not None and b.successes is not None:
        p = stats.two_proportion_p_value(est.successes, est.n, b.successes, b.n)
        return float(p), np.inf, "pooled_z"
    # ``special.ndtr(-z)`` is ``norm.sf(z)`` without scipy.stats' per-call overhead
    return float(special.ndtr(-stat / np.sqrt(var))), np.inf, "bootstrap_z"


def _compare(
    config: DetectionConfig,
    cell: tuple[str, str, str | None, str | None],
    cohort: dict[str, Any],
    metric: str,
    label: str,
    est: Estimate,
    b: Estimate | None,
) -> _Pending | None:
    if b is None or est.value is None or b.value is None or est.var is None or b.var is None:
        return None
    prefix, version, base_model, route = cell
    floor_n = config.n_floor(metric)
    if est.n < floor_n or b.n < floor_n:
        return None
    fam = family(metric)
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
        if fam == "rate" and var <= 0 and est.successes is not None and b.successes is not None:
            # 0 % vs 100 %: no spread on either side, but the pooled (null) variance is > 0
            pooled = (est.successes + b.successes) / (est.n + b.n)
            var = pooled * (1 - pooled) * (1 / est.n + 1 / b.n)
        tau = config.tau_factor * floor
        effect = stat
    if var <= 0 or tau <= 0:
        return None
    p_fixed, df, test = _fixed_horizon(fam, stat, var, est, b)
    mode = config.sequential
    cmp = Comparison(
        prefix_id=prefix,
        prefix_version=version,
        route=route,
        cohort=cohort,
        metric=metric,
        base_model=base_model,
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
        p_fixed=p_fixed,
        method=f"msprt:{fam}" if mode == "msprt" else f"{mode}:{fam}:{test}",
    )
    cmp.severity = _severity(effect, floor)
    return _Pending(cmp, stat, var, tau, df)


def _severity(effect: float, floor: float) -> str:
    ratio = effect / floor if floor > 0 else np.inf
    return "critical" if ratio >= 4 else "major" if ratio >= 2 else "minor"


def _decide(
    config: DetectionConfig,
    pending: Sequence[_Pending],
    prior: Mapping[str, Prior],
    *,
    hierarchical: bool = False,
) -> list[Comparison]:
    if not pending:
        return []
    cmps = [p.cmp for p in pending]
    stat = np.array([p.stat for p in pending])
    var = np.array([p.var for p in pending])
    tau = np.array([p.tau for p in pending])
    if config.sequential == "msprt":
        p = stats.msprt_p_value(stat, var, tau)
        bound = stat - stats.msprt_threshold(var, tau, config.alpha)
        for i, c in enumerate(cmps):
            before = prior.get(c.fingerprint())
            if before is not None:  # running minimum / maximum over the looks so far
                p[i] = min(p[i], before.min_p)
                bound[i] = max(bound[i], before.worse_bound)
    else:  # fixed horizon ("fixed", "windows"): one-sided Welch t or normal bound
        p = np.array([c.p_fixed for c in cmps])
        df = np.array([x.df for x in pending])
        bound = stat - sps.t.ppf(1 - config.alpha, df) * np.sqrt(var)
    if hierarchical:
        q, fam_q = slices_mod.decide(families(cmps), p, config.alpha)
        for c, fq in zip(cmps, fam_q, strict=True):
            c.family_q = float(fq)
    else:
        q = stats.bh_q_values(p)
    for i, c in enumerate(cmps):
        fam = family(c.metric)
        c.p_value, c.q_value = float(p[i]), float(q[i])
        c.worse_bound = float(bound[i]) if np.isfinite(bound[i]) else float("-inf")
        # the one-sided interval on the delta (value - baseline) scale: the worse side only
        if fam == "quantile":
            c.ci_low, c.ci_high = c.baseline_value * float(np.expm1(bound[i])), None
        elif fam == "rate":
            c.ci_low, c.ci_high = float(bound[i]), None
        else:  # scores: worse = lower, so the bound caps the delta from above
            c.ci_low, c.ci_high = None, float(-bound[i])
        if not np.isfinite(bound[i]):
            c.ci_low = c.ci_high = None
        effect = (c.relative or 0.0) if fam == "quantile" else float(stat[i])
        c.flagged = bool(q[i] <= config.alpha and effect >= config.effect_floor(c.metric))
    return cmps
