"""Release gate and routing advice, built on the detector and the cube.

* :func:`gate` — for one prefix (optionally one version): a status per (route, cohort slice)
  with reasons (slices as detection tests them: the whole route, each cohort key, each pair
  of keys; ``slices.py``). A cell is ``fail`` when the detector flags a regression vs a
  baseline in that slice (a prefix that regressed on ``language=de`` fails the ``language=de``
  slice, and every slice inside it that shows it); ``untested``
  when it lacks the minimum sample size or no comparison with the base model could be tested
  (a handful of guardrail or agent requests); otherwise ``pass``. The verdict: ``fail`` if any
  cell fails; else ``pass`` if at least one cell was tested (and passed), with the untested
  cells listed; else ``insufficient_data`` (nothing could be tested). ``strict=True`` is for
  teams that want every cell covered: then any untested cell makes the verdict
  ``insufficient_data``.
* :func:`routing_advice` — for each (route, cohort slice) of at most one key (the whole
  route and each key's values, so German notes can be routed apart), and for each slice of
  more keys that a regression is confined to: the variant with the best mean on a chosen
  evaluator, or ``"base"`` ("fall back to base") when no prefix reaches the threshold (lower
  confidence bound by default) or none beats its base model. A prefix whose regression
  against base detection flags and confines to a slice (key or pair level: the cause, and
  the flagged slices inside it) is no candidate there, whatever its mean: that slice goes to
  the best other variant or to base, while the prefix keeps the slices its regression does
  not reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import duckdb
import orjson

from .comparison import DetectionResult
from .detection import detection_cube, run_detection
from .detection_config import DetectionConfig
from .metrics import summarise
from .query import BASE, Window
from .slices import SliceConfig, canonical, parse, slice_cube

GateStatus = Literal["pass", "fail", "insufficient_data"]
CellStatus = Literal["pass", "fail", "untested"]


@dataclass(slots=True)
class GateCell:
    route: str | None
    cohort: dict[str, Any]
    prefix_version: str
    status: CellStatus = "pass"
    reasons: list[str] = field(default_factory=list)
    n: int = 0

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "cohort": self.cohort,
            "prefix_version": self.prefix_version,
            "passed": self.passed,
            "status": self.status,
            "reasons": self.reasons,
            "n": self.n,
        }


@dataclass(slots=True)
class GateResult:
    prefix_id: str
    #: ``fail`` if any cell fails, else ``pass`` if a cell was tested (every untested cell too,
    #: under ``strict``), else ``insufficient_data``
    status: GateStatus
    cells: list[GateCell]
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix_id": self.prefix_id,
            "passed": self.passed,
            "status": self.status,
            "reason": self.reason,
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
    strict: bool = False,
    cohort: Mapping[str, str] | None = None,
) -> GateResult:
    """Gate status of ``prefix_id`` per route and cohort (see module docstring).

    ``cohort`` restricts the gate to the cells whose cohort has these values (e.g.
    ``{"specialty": "cardiology"}``: the population the prefix is released for); detection
    still runs over every cell, so the BH family and the q-values do not change.
    """
    config = (config or DetectionConfig()).validate()
    result = run_detection(con, since, until, config)
    cube = slice_cube(result.cube, config.slices) if config.slices.depth > 0 else result.cube
    want = {str(k): str(v) for k, v in (cohort or {}).items()}
    cells: dict[tuple[str, str | None, str], GateCell] = {}
    for key, cell in zip(cube.keys, summarise(cube, config.alpha), strict=True):
        p, v, _base_model, route, cohort_raw = key
        if p != prefix_id or (prefix_version is not None and v != prefix_version):
            continue
        values = parse(cohort_raw)
        if any(str(values.get(k)) != v_ for k, v_ in want.items()):
            continue  # not inside the gated population
        k = (str(v or ""), route, str(cohort_raw))
        if k in cells:  # one cell per slice, whatever base models it ran on
            cells[k].n += cell.n
            continue
        gc = GateCell(route, values, str(v or ""), n=cell.n)
        if cell.n < config.min_n:
            gc.status = "untested"
            gc.reasons.append(f"insufficient data: n={cell.n} < min_n={config.min_n}")
        cells[k] = gc
    tested: set[tuple[str, str | None, str]] = set()
    for c in result.comparisons:
        if c.prefix_id != prefix_id:
            continue
        k = (c.prefix_version, c.route, str(canonical(c.cohort.items())))
        found = cells.get(k)
        if found is None:
            continue
        gc = found
        if c.baseline == BASE:
            tested.add(k)
        if c.flagged:
            gc.status = "fail"  # a regression outranks missing evidence elsewhere
            rel = f" ({c.relative:+.1%})" if c.relative is not None else ""
            gc.reasons.append(
                f"{c.metric} worse than {c.baseline}: {c.value:.4g} vs {c.baseline_value:.4g}"
                f"{rel}, q={c.q_value:.3g}"
            )
    for k, gc in cells.items():
        if gc.status == "pass" and k not in tested:
            gc.status = "untested"
            gc.reasons.append(
                "insufficient data: no comparison with base met the minimum sample size "
                f"(min_n={config.min_n} on both sides)"
            )
        if gc.status == "pass":
            gc.reasons.append("no significant regression vs base or previous version")
    out = sorted(cells.values(), key=lambda g: (g.prefix_version, g.route or "", str(g.cohort)))
    failed = sum(g.status == "fail" for g in out)
    thin = sum(g.status == "untested" for g in out)
    tested_n = len(out) - thin
    untested = f"; {thin} thin cell(s) untested" if thin else ""
    status: GateStatus
    if not out:
        where = f" in cohort {want}" if want else ""
        status, reason = "insufficient_data", f"no requests of {prefix_id}{where} in the window"
    elif failed:
        status, reason = "fail", f"regression in {failed} of {len(out)} cells{untested}"
    elif tested_n == 0:
        status = "insufficient_data"
        reason = f"no cell of {len(out)} had enough data to test (no regression found)"
    elif thin and strict:
        status = "insufficient_data"
        reason = f"strict: {thin} of {len(out)} cells untested (no regression found)"
    else:
        status = "pass"
        reason = f"no significant regression in {tested_n} tested cell(s){untested}"
    return GateResult(prefix_id, status, out, reason)


@dataclass(slots=True)
class RoutingAdvice:
    route: str | None
    cohort: dict[str, Any]
    variant: str  # a prefix id, or "base"
    reason: str
    candidates: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    #: prefixes kept out of this slice by a flagged regression against base, with why
    excluded: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "cohort": self.cohort,
            "variant": self.variant,
            "reason": self.reason,
            "candidates": self.candidates,
            "excluded": self.excluded,
        }


#: (prefix, base model, route, slice) of a routing row
_Row = tuple[str | None, str | None, str | None, str | None]


def _regressed(
    result: DetectionResult,
) -> tuple[dict[_Row, str], set[tuple[str | None, str | None]]]:
    """The slices each prefix must not be routed to, where a regression against base (any
    metric, any version) is confined to a cohort slice (its cause names a key or a pair): the
    flagged slices that lie inside the cause (the cause itself, or a slice with more keys
    that holds it). A flagged slice that contains the cause (the whole route, when German
    notes regressed) or overlaps it (``plan=free``) is explained by the cause and keeps the
    prefix: the cause's own slice routes its requests. A cause of the whole route (a prefix
    slower everywhere, as its prefix tokens make it) moves no slice: it is a property of the
    prefix, which the gate judges, and the advice on the routed metric stands. Also the
    causes' (route, slice), which get an entry of their own."""
    out: dict[_Row, str] = {}
    causes: set[tuple[str | None, str | None]] = set()
    for cause in result.regressions:
        if cause.baseline != BASE or not cause.cohort:
            continue  # a regression of the whole route is the gate's verdict, not a route
        where = set(cause.cohort.items())
        causes.add((cause.route, canonical(where)))
        for c in (cause, *cause.evidence):
            if not where <= set(c.cohort.items()):
                continue
            row = (c.prefix_id, c.base_model, c.route, canonical(c.cohort.items()))
            named = ", ".join(f"{k}={v}" for k, v in sorted(cause.cohort.items())) or "route"
            out.setdefault(
                row,
                f"{c.metric} regressed vs base on {named}: {c.value:.4g} vs "
                f"{c.baseline_value:.4g}, q={c.q_value:.3g}",
            )
    return out, causes


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
    config: DetectionConfig | None = None,
) -> list[RoutingAdvice]:
    """Best variant per (route, cohort) on ``metric`` (higher is better), or fall back to base.

    A prefix qualifies when it has ``min_n`` scored requests, its score (lower confidence
    bound when ``use_lower_bound``) is at least ``threshold`` and above the base model's mean,
    and detection flags no regression of it against base confined to the slice
    (:func:`_regressed`). Detection runs once over the same window with ``config`` (default:
    one fixed-horizon look at level ``alpha`` and minimum n ``min_n``, since the window
    trails the clock); a cause of two keys or more gets its own entry, so a pair can be
    routed apart.
    """
    window = Window.of(since, until)
    config = config or DetectionConfig(alpha=alpha, min_n=max(2, min_n), sequential="fixed")
    config.validate()
    detected = detection_cube(con, window)
    regressed, causes = _regressed(
        run_detection(con, window.since, window.until, config, cube=detected)
    )
    full = detected.rollup(("prefix_id", "base_model", "route", "cohort"))
    cells = summarise(slice_cube(full, SliceConfig(depth=1)), alpha)
    deep = {(route, sk) for route, sk in causes if len(parse(sk)) > 1}
    if deep:  # the slices of two keys or more that a regression is confined to
        wide = SliceConfig(depth=max(len(parse(sk)) for _, sk in deep), max_slices=1 << 30)
        cells += [c for c in summarise(slice_cube(full, wide), alpha) if c.key[2:] in deep]
    groups: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    bases: dict[tuple[str | None, str | None, str | None], Any] = {}
    models: dict[tuple[str | None, str | None, str], str | None] = {}
    for cell in cells:
        p, base_model, route, cohort_raw = cell.key
        est = cell.metrics.get(metric)
        if est is None or est.value is None:
            continue
        if p == BASE:
            bases[(base_model, route, cohort_raw)] = est
        else:  # a variant is compared with the base model it runs on
            models[(route, cohort_raw, str(p))] = base_model
        groups.setdefault((route, cohort_raw), {})[str(p)] = est
    out = []
    for (route, cohort_raw), cands in sorted(groups.items(), key=lambda kv: str(kv[0])):
        base = cands.get(BASE)
        info = {p: {"mean": e.value, "ci_low": e.ci_low, "n": e.n} for p, e in cands.items()}
        excluded: dict[str, str] = {}
        best, best_score = None, None
        for p, e in cands.items():
            if p == BASE:
                continue
            model = models.get((route, cohort_raw, p))
            why = regressed.get((p, model, route, cohort_raw))
            if why is not None:
                excluded[p] = why
                continue
            if e.n < min_n:
                continue
            own = bases.get((model, route, cohort_raw))
            s = e.ci_low if use_lower_bound and e.ci_low is not None else e.value
            if s < threshold or (own is not None and s <= own.value):
                continue
            if best_score is None or s > best_score:
                best, best_score = p, s
        cohort = orjson.loads(cohort_raw) if cohort_raw else {}
        kept_out = [f"{p} excluded: {why}" for p, why in sorted(excluded.items())]
        if best is None:
            others = set(cands) - {BASE} - set(excluded)
            none = (
                f"no prefix with n>={min_n} has {metric} "
                f"{'lower bound ' if use_lower_bound else ''}>= {threshold} and above base"
            )
            reason = "fall back to base: " + "; ".join(
                kept_out + ([none] if others or not kept_out else [])
            )
            out.append(RoutingAdvice(route, cohort, BASE, reason, info, excluded))
        else:
            reason = "; ".join(
                [
                    f"{best}: {metric} {'lower bound ' if use_lower_bound else ''}"
                    f"{best_score:.3f} >= {threshold}"
                    + (f", base mean {base.value:.3f}" if base is not None else ""),
                    *kept_out,
                ]
            )
            out.append(RoutingAdvice(route, cohort, best, reason, info, excluded))
    return out
