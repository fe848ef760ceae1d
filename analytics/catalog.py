"""The built-in metrics, defined once: name, kind, label, direction and detection defaults.

Every consumer derives what it needs from :data:`CATALOG`: the estimators
(:mod:`.metrics`: which cube histogram or counter a metric reads), detection (the default
minimum effect and minimum n), the API (which names are built in, which direction is worse)
and the dashboard (column labels and help). Any other metric name is an evaluator score
(kind ``mean``, higher is better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["quantile", "rate", "mean", "ratio", "total", "count"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: Kind
    label: str
    help: str
    #: True: a larger value is worse; False: a smaller one is; None: neither (a volume)
    lower_is_better: bool | None
    #: detection's default minimum effect (relative for quantiles, absolute otherwise)
    min_effect: float | None = None
    #: detection's default minimum n per side, when the global one is too small
    min_n: int | None = None
    #: quantiles: the cube histogram ("latency" | "ttft" | "route_latency") and the quantile
    histogram: str | None = None
    quantile: float | None = None
    #: rates: the cube counter of successes
    counter: str | None = None


def _q(
    name: str, hist: str, q: float, label: str, help_: str, min_n: int | None = None
) -> MetricSpec:
    return MetricSpec(name, "quantile", label, help_, True, 0.10, min_n, hist, q)


def _rate(name: str, counter: str, label: str, help_: str, min_effect: float) -> MetricSpec:
    return MetricSpec(name, "rate", label, help_, True, min_effect, counter=counter)


CATALOG: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("n", "count", "Requests", "requests in the cell", None),
        _q("latency_p50", "latency", 0.5, "p50", "median latency"),
        _q("latency_p90", "latency", 0.9, "p90", "90th percentile latency"),
        _q("latency_p99", "latency", 0.99, "p99", "99th percentile latency"),
        _q("ttft_p50", "ttft", 0.5, "TTFT p50", "median time to first token"),
        _q("ttft_p99", "ttft", 0.99, "TTFT p99", "99th percentile time to first token"),
        _q(
            "route_latency_p50",
            "route_latency",
            0.5,
            "Route p50",
            "median latency of the request's variant scope (the route around the model call)",
        ),
        _q(
            "route_latency_p99",
            "route_latency",
            0.99,
            "Route p99",
            "99th percentile latency of the request's variant scope",
        ),
        _rate("error_rate", "errors", "Errors", "share of requests with status ERROR", 0.01),
        _rate(
            "fallback_rate",
            "fallbacks",
            "Fallback",
            "share of requests that fell back to the base model",
            0.02,
        ),
        _rate(
            "thumbs_down_rate",
            "thumbs_down",
            "Thumbs-down",
            "share of requests with thumbs-down feedback",
            0.02,
        ),
        _rate(
            "escalation_rate",
            "escalation",
            "Escalations",
            "share of requests escalated to a human",
            0.01,
        ),
        MetricSpec("kv_cache_reuse_rate", "ratio", "KV reuse", "cached / prompt tokens", False),
        MetricSpec("input_tokens", "total", "Input tokens", "prompt tokens", None),
        MetricSpec("output_tokens", "total", "Output tokens", "completion tokens", None),
    )
}
BUILTIN_METRICS: tuple[str, ...] = tuple(CATALOG)
#: A quantile is tested only when each side holds at least this many requests beyond it: a
#: p99 then needs 1,000 requests a side, a p90 100. Below that the estimate and its bootstrap
#: variance rest on a handful of tail observations, and on heavy tails the test would not hold
#: its level (tests/analytics/test_detection.py simulates lognormal latency with sigma 1).
MIN_TAIL_OBSERVATIONS = 10


def tail_min_n(metric: str) -> int:
    """The fewest requests a side for which a quantile metric may be tested (0: any)."""
    spec = CATALOG.get(metric)
    if spec is None or spec.kind != "quantile" or spec.quantile is None:
        return 0
    return math.ceil(MIN_TAIL_OBSERVATIONS / (1.0 - spec.quantile) - 1e-9)


#: Metrics where a larger value is worse.
LOWER_IS_BETTER: frozenset[str] = frozenset(n for n, s in CATALOG.items() if s.lower_is_better)
DEFAULT_MIN_EFFECT: dict[str, float] = {
    n: s.min_effect for n, s in CATALOG.items() if s.min_effect is not None
}
DEFAULT_MIN_N: dict[str, int] = {n: s.min_n for n, s in CATALOG.items() if s.min_n is not None}


def is_evaluator(metric: str) -> bool:
    """Any name that is not built in is an evaluator score."""
    return metric not in CATALOG
