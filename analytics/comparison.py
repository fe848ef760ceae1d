"""What a detection run finds: one :class:`Comparison` per metric of a cell against one
baseline, the :class:`Prior` earlier looks established for it, and the run's
:class:`DetectionResult`; comparisons grouped in families (a cell's slices, for one metric
and baseline) and metrics in families of tests (score, rate, quantile)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .cube import Cube
from .detection_config import DetectionConfig
from .metrics import QUANTILE_METRICS, RATE_METRICS
from .query import Window


@dataclass(slots=True)
class Comparison:
    """One metric of one cell against one baseline."""

    prefix_id: str
    prefix_version: str
    route: str | None
    cohort: dict[str, Any]
    metric: str
    base_model: str | None
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
    #: lower confidence bound on the worsening, on the test's scale (score: baseline - value,
    #: rate: value - baseline, quantile: log ratio); >= 0 means "worse" at level alpha
    worse_bound: float = float("-inf")
    #: flagged and named as the cause of its family's regression (one alert per cause; the
    #: flagged slices that contain it or lie inside it are its ``evidence``)
    cause: bool = False
    evidence: list[Comparison] = field(default_factory=list)
    #: the Simes-BH q-value of its family (the cell, metric and baseline over all slices)
    family_q: float | None = None

    def fingerprint(self) -> str:
        """Stable id of this comparison across runs (cell, metric, baseline)."""
        raw = orjson.dumps(self.fingerprint_parts(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(raw).hexdigest()[:32]

    def fingerprint_parts(self) -> list[Any]:
        parts: list[Any] = [
            self.prefix_id,
            self.prefix_version,
            self.route,
            sorted(self.cohort.items()),
            self.metric,
            self.baseline,
        ]
        if self.base_model is not None:  # ids of single-base-model alerts stay as they were
            parts.append(self.base_model)
        return parts


@dataclass(frozen=True, slots=True)
class Prior:
    """What earlier looks at the same growing window established for one comparison."""

    min_p: float
    worse_bound: float


@dataclass(slots=True)
class DetectionResult:
    #: the data the run tested: ``[since, until)``, or in windows mode the evaluation window
    window: Window
    config: DetectionConfig
    comparisons: list[Comparison]
    cube: Cube

    @property
    def regressions(self) -> list[Comparison]:
        """One per cause: the alerts of the run (every flagged slice without slices:
        ``flagged``)."""
        return [c for c in self.comparisons if c.cause]


def family(metric: str) -> str:
    """The test family of a metric: ``quantile``, ``rate`` or ``score``."""
    if metric in QUANTILE_METRICS:
        return "quantile"
    if metric in RATE_METRICS:
        return "rate"
    return "score"


def families(cmps: Sequence[Comparison]) -> list[int]:
    """Each comparison's family: its (prefix, version, base model, route, metric, baseline),
    whose members are its cohort slices."""
    index: dict[tuple[object, ...], int] = {}
    return [
        index.setdefault(
            (c.prefix_id, c.prefix_version, c.base_model, c.route, c.metric, c.baseline),
            len(index),
        )
        for c in cmps
    ]
