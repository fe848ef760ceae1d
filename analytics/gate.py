"""Release gate and routing advice, built on the detector and the cube.

* :func:`gate` — for one prefix (optionally one version): pass/fail per (route, cohort) with
  reasons. A cell fails when the detector flags a regression vs a baseline, or when it lacks
  the minimum sample size vs the base model (no evidence is not a pass).
* :func:`routing_advice` — for each (route, cohort): the variant with the best mean on a
  chosen evaluator, or ``"base"`` ("fall back to base") when no prefix reaches the threshold
  (lower confidence bound by default) or none beats the base model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import orjson

from .detection import DetectionConfig, detection_cube, run_detection
from .metrics import summarise
from .query import BASE, Window


@dataclass(slots=True)
class GateCell:
    route: str | None
    cohort: dict[str, Any]
    prefix_version: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "cohort": self.cohort,
            "prefix_version": self.prefix_version,
            "passed": self.passed,
            "reasons": self.reasons,
            "n": self.n,
        }


@dataclass(slots=True)
class GateResult:
    prefix_id: str
    passed: bool
    cells: list[GateCell]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix_id": self.prefix_id,
            "passed": self.passed,
            "cells": [c.to_dict() for c in self.cells],
        }


def gate(
    con: duckdb.DuckDBPyConnection,
    prefix_id: str,
    *,
    prefix_version: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    config: DetectionConfig | None = None,
) -> GateResult:
    """Pass/fail of ``prefix_id`` per route and cohort (see module docstring)."""
    config = (config or DetectionConfig()).validate()
    result = run_detection(con, since, until, config)
    cells: dict[tuple[str, str | None, str], GateCell] = {}
    for key, cell in zip(result.cube.keys, summarise(result.cube, config.alpha), strict=True):
        p, v, route, cohort_raw = key
        if p != prefix_id or (prefix_version is not None and v != prefix_version):
            continue
        gc = GateCell(
            route, orjson.loads(cohort_raw) if cohort_raw else {}, str(v or ""), True, n=cell.n
        )
        if cell.n < config.min_n:
            gc.passed = False
            gc.reasons.append(f"insufficient data: n={cell.n} < min_n={config.min_n}")
        cells[(str(v or ""), route, str(cohort_raw))] = gc
    tested: set[tuple[str, str | None, str]] = set()
    for c in result.comparisons:
        if c.prefix_id != prefix_id:
            continue
        k = (
            c.prefix_version,
            c.route,
            orjson.dumps(c.cohort, option=orjson.OPT_SORT_KEYS).decode() if c.cohort else "None",
        )
        found = cells.get(k)
        if found is None:
            continue
        gc = found
        if c.baseline == BASE:
            tested.add(k)
        if c.flagged:
            gc.passed = False
            rel = f" ({c.relative:+.1%})" if c.relative is not None else ""
            gc.reasons.append(
                f"{c.metric} worse than {c.baseline}: {c.value:.4g} vs {c.baseline_value:.4g}"
                f"{rel}, q={c.q_value:.3g}"
            )
    for k, gc in cells.items():
        if gc.passed and k not in tested:
            gc.passed = False
            gc.reasons.append("no comparison with base met the minimum sample size")
        if gc.passed:
            gc.reasons.append("no significant regression vs base or previous version")
    out = sorted(cells.values(), key=lambda g: (g.prefix_version, g.route or "", str(g.cohort)))
    return GateResult(prefix_id, bool(out) and all(g.passed for g in out), out)


@dataclass(slots=True)
class RoutingAdvice:
    route: str | None
    cohort: dict[str, Any]
    variant: str  # a prefix id, or "base"
    reason: str
    candidates: dict[str, dict[str, float | int | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "cohort": self.cohort,
            "variant": self.variant,
            "reason": self.reason,
            "candidates": self.candidates,
        }


def routing_advice(
    con: duckdb.DuckDBPyConnection,
    metric: str = "TaskCompletion",
    *,
    threshold: float = 0.0,
    min_n: int = 100,
    use_lower_bound: bool = True,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    alpha: float = 0.05,
) -> list[RoutingAdvice]:
    """Best variant per (route, cohort) on ``metric`` (higher is better), or fall back to base.

    A prefix qualifies when it has ``min_n`` scored requests, its score (lower confidence
    bound when ``use_lower_bound``) is at least ``threshold`` and above the base model's mean.
    """
    window = Window.of(since, until)
    cube = detection_cube(con, window).rollup(("prefix_id", "route", "cohort"))
    groups: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for cell in summarise(cube, alpha):
        p, route, cohort_raw = cell.key
        est = cell.metrics.get(metric)
        if est is None or est.value is None:
            continue
        groups.setdefault((route, cohort_raw), {})[str(p)] = est
    out = []
    for (route, cohort_raw), cands in sorted(groups.items(), key=lambda kv: str(kv[0])):
        base = cands.get(BASE)
        info = {p: {"mean": e.value, "ci_low": e.ci_low, "n": e.n} for p, e in cands.items()}
        best, best_score = None, None
        for p, e in cands.items():
            if p == BASE or e.n < min_n:
                continue
            s = e.ci_low if use_lower_bound and e.ci_low is not None else e.value
            if s < threshold or (base is not None and s <= base.value):
                continue
            if best_score is None or s > best_score:
                best, best_score = p, s
        cohort = orjson.loads(cohort_raw) if cohort_raw else {}
        if best is None:
            reason = (
                f"fall back to base: no prefix with n>={min_n} has {metric} "
                f"{'lower bound ' if use_lower_bound else ''}>= {threshold} and above base"
            )
            out.append(RoutingAdvice(route, cohort, BASE, reason, info))
        else:
            reason = (
                f"{best}: {metric} {'lower bound ' if use_lower_bound else ''}"
                f"{best_score:.3f} >= {threshold}"
                + (f", base mean {base.value:.3f}" if base is not None else "")
            )
            out.append(RoutingAdvice(route, cohort, best, reason, info))
    return out
