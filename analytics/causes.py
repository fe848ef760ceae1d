"""One alert per cause: among a family's flagged slices (the whole route, each cohort key,
each pair), the most specific slice that explains the worsening is named the cause and the
other flagged slices that contain it or lie inside it are its evidence (:func:`name_causes`,
the rule of ``slices.causes``); and the tested slice tree a run shows
(``GET /api/v1/regressions/slices``, :func:`slice_tree`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import slices as slices_mod
from .comparison import Comparison, DetectionResult, families, family
from .cube import Cube
from .detection_config import DetectionConfig
from .metrics import summarise


def name_causes(config: DetectionConfig, cmps: Sequence[Comparison], cube: Cube) -> None:
    """One cause per regression in each family (slices.causes), with its evidence."""
    fams = families(cmps)
    members: dict[int, list[int]] = {}
    for i, f in enumerate(fams):
        members.setdefault(f, []).append(i)
    explains = _Explainer(config, cmps, cube)
    for idx in members.values():
        if not any(cmps[i].flagged for i in idx):
            continue
        nodes = [slices_mod.Node(i, cmps[i].cohort, cmps[i].flagged, cmps[i].q_value) for i in idx]
        found = slices_mod.causes(nodes, explains)
        for i, evidence in found.items():
            cmps[i].cause = True
            cmps[i].evidence = [cmps[j] for j in evidence]


class _Explainer(slices_mod.Explains):
    """Whether slice X explains slice S's worsening: the requests of S outside X (variant and
    baseline alike, summed from the full cohort combinations) show no worsening of the
    metric's minimum effect, on enough requests to tell. S entirely inside X: explained."""

    def __init__(self, config: DetectionConfig, cmps: Sequence[Comparison], cube: Cube) -> None:
        self.config = config
        self.cmps = cmps
        self.cube = cube
        ci = cube.dims.index("cohort")
        self.cohorts = [slices_mod.parse(k[ci]) for k in cube.keys]
        self.groups: dict[tuple[object, ...], list[int]] = {}
        for j, key in enumerate(cube.keys):
            self.groups.setdefault(tuple(key[:ci]), []).append(j)

    def _cells(self, c: Comparison, baseline: bool, inside: dict[str, object],
               outside: dict[str, object]) -> list[int]:  # fmt: skip
        if baseline:
            pid, _, ver = c.baseline.partition("@")
            key: tuple[object, ...] = (pid, ver, c.base_model, c.route)
        else:
            key = (c.prefix_id, c.prefix_version, c.base_model, c.route)
        return [
            j
            for j in self.groups.get(key, [])
            if _within(self.cohorts[j], inside) and not _within(self.cohorts[j], outside)
        ]

    def __call__(self, x: int, s: int) -> bool:
        c = self.cmps[s]
        inside, outside = c.cohort, self.cmps[x].cohort
        variant = self._cells(c, False, inside, outside)
        baseline = self._cells(c, True, inside, outside)
        if not variant:
            return True  # nothing of S lies outside X
        old = np.asarray(variant + baseline, np.int64)
        new = np.asarray([0] * len(variant) + [1] * len(baseline), np.int64)
        rest = self.cube.expand(self.cube.dims, old, new, [("variant",), ("baseline",)])
        est_cells = summarise(rest, self.config.alpha)
        est, base = est_cells[0].metrics.get(c.metric), est_cells[1].metrics.get(c.metric)
        if est is None or est.value is None or est.n == 0:
            return True
        if base is None or base.value is None:
            return False
        floor_n = self.config.n_floor(c.metric)
        if est.n < floor_n or base.n < floor_n:
            return False  # too few requests elsewhere to say the worsening is not there
        fam = family(c.metric)
        if fam == "quantile":
            if est.value <= 0 or base.value <= 0:
                return False
            effect = est.value / base.value - 1
        elif fam == "rate":
            effect = est.value - base.value
        else:
            effect = base.value - est.value
        return effect < self.config.effect_floor(c.metric)


def _within(cohort: dict[str, object], sl: dict[str, object]) -> bool:
    """Whether a full cohort combination lies in slice ``sl`` (every key of the slice has
    its value; the whole route holds every combination)."""
    return all(str(cohort.get(k)) == str(v) for k, v in sl.items())


def slice_tree(
    result: DetectionResult,
    prefix_id: str,
    metric: str | None = None,
    prefix_version: str | None = None,
    route: str | None = None,
) -> list[dict[str, Any]]:
    """The tested slice tree of a run (``GET /api/v1/regressions/slices``): per family
    (version, base model, route, metric, baseline) of ``prefix_id``, every tested slice with
    its n, effect, interval, p and q, whether it was flagged and whether it was named as a
    cause; the whole route first, then keys, then pairs."""
    families: dict[tuple[Any, ...], dict[str, Any]] = {}
    for c in result.comparisons:
        if c.prefix_id != prefix_id or (metric is not None and c.metric != metric):
            continue
        if prefix_version is not None and c.prefix_version != prefix_version:
            continue
        if route is not None and c.route != route:
            continue
        key = (c.prefix_version, c.base_model, c.route, c.metric, c.baseline)
        fam = families.setdefault(
            key,
            {
                "prefix_id": prefix_id,
                "prefix_version": c.prefix_version,
                "base_model": c.base_model,
                "route": c.route,
                "metric": c.metric,
                "baseline": c.baseline,
                "family_q": c.family_q,
                "slices": [],
            },
        )
        fam["slices"].append(
            {
                "cohort": c.cohort,
                "n": c.n,
                "n_baseline": c.n_baseline,
                "value": c.value,
                "baseline_value": c.baseline_value,
                "delta": c.delta,
                "relative": c.relative,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "p_value": c.p_value,
                "q_value": c.q_value,
                "flagged": c.flagged,
                "cause": c.cause,
            }
        )
    out = list(families.values())
    for fam in out:
        fam["slices"].sort(key=lambda s: (len(s["cohort"]), str(sorted(s["cohort"].items()))))
    return out
