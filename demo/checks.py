"""The demo checks its own story against the numbers it computed, and says so plainly.

Each check reads the store (replay scores, alerts) or the analytics results the report
printed; none is hard-coded. The checks, as docs/guides/demo.md states them:

1. ``own_specialty``: each prefix beats the base model on its own specialty's golden items:
   replay TaskCompletion paired on dataset items, by at least 0.10, with the 95 % interval of
   the paired difference above 0;
2. ``misrouting_hurts``: some prefix does worse than base on another department's notes;
3. ``v2_alert``: an open TaskCompletion alert for ``radiology@2`` against the previous version
   on the radiology cohort, and no alert on a released version (``@1``) in its own
   specialty's cohort (where it should help), on any metric, latency included. Alerts on
   mis-routed notes (a prefix on another specialty's cohort doing worse than base) are true
   regressions, counted apart. (The demo's latencies are real wall-clock times; the arms are
   randomized per request, so a loaded machine slows both alike, and detection counts
   requests, with a quantile floor on tail metrics: see docs/guides/detection.md.);
4. ``gate``: gated on its own specialty's cohort, at least one variant PASSes and
   ``radiology@2`` FAILs;
5. ``routing``: at least one cohort is routed to its own prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import duckdb

from prefixscope.analytics.alert_record import AlertRecord
from prefixscope.demo import data as demo_data

MIN_MARGIN = 0.10
#: two-sided 95 % normal quantile (paired differences over >= 16 items)
Z95 = 1.959963984540054


@dataclass(slots=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(slots=True)
class StoryChecks:
    checks: list[Check] = field(default_factory=list)
    margins: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks
            ],
            "margins": self.margins,
        }


def replay_scores(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], float]:
    """(variant, specialty, dataset item) -> the replay's TaskCompletion score."""
    rows = con.execute(
        """SELECT coalesce(nullif(s.prefix_id, 'base'), 'base') AS variant,
       s.cohort->>'specialty' AS specialty,
       s.attributes->>'$."dataset.item_id"' AS item,
       arg_max(t.value, (t.created_at, t.id)) AS value
FROM spans s JOIN scores t ON t.span_id = s.span_id AND t.trace_id = s.trace_id
WHERE s.route = 'replay' AND t.name = 'TaskCompletion'
  AND (s.prefix_version IS NULL OR s.prefix_version <> '2')
GROUP BY ALL"""
    ).fetchall()
    return {(str(v), str(sp), str(it)): float(x) for v, sp, it, x in rows if it is not None}


def paired_margin(
    scores: dict[tuple[str, str, str], float], variant: str, specialty: str
) -> dict[str, float]:
    """Mean paired difference (variant - base) over the specialty's items, with a 95 % CI."""
    diffs = [
        scores[(variant, specialty, item)] - scores[("base", specialty, item)]
        for (v, sp, item) in scores
        if v == variant and sp == specialty and ("base", specialty, item) in scores
    ]
    n = len(diffs)
    if n < 2:
        return {"n": float(n), "delta": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    half = Z95 * math.sqrt(var / n)
    return {"n": float(n), "delta": mean, "ci_low": mean - half, "ci_high": mean + half}


def v2_alert_check(alerts: list[AlertRecord]) -> Check:
    """Check 3 (see the module's doc) over the run's open alerts."""

    def specialty(a: AlertRecord) -> str | None:
        return a.cohort.get("specialty")

    def listed(some: list[AlertRecord]) -> str:
        return ", ".join(
            f"{a.prefix_id}@{a.prefix_version} {a.metric} on {specialty(a)}" for a in some
        )

    v2 = [a for a in alerts if a.prefix_id == "radiology" and str(a.prefix_version) == "2"]
    tc = [
        a
        for a in v2
        if a.metric == "TaskCompletion"
        and a.baseline == "radiology@1"
        and specialty(a) == "radiology"
    ]
    rest = [a for a in alerts if a not in v2]
    misrouted = [
        a for a in rest if specialty(a) in demo_data.SPECIALTIES and specialty(a) != a.prefix_id
    ]
    unexpected = [a for a in rest if a not in misrouted]
    detail = (
        f"TaskCompletion {tc[0].value:.2f} vs {tc[0].baseline_value:.2f} (q={tc[0].q_value:.2g})"
        if tc
        else "no TaskCompletion alert for radiology@2 vs radiology@1 on radiology notes"
    )
    detail += f"; {len(misrouted)} alert(s) on mis-routed notes"
    if unexpected:
        detail += "; unexpected: " + listed(unexpected)
    return Check("v2_alert", bool(tc) and not unexpected, detail)


def run_checks(
    con: duckdb.DuckDBPyConnection,
    alerts: list[AlertRecord],
    gate_status: dict[str, str],
    routing: list[Any],
) -> StoryChecks:
    out = StoryChecks()
    scores = replay_scores(con)
    own_ok, own_txt = True, []
    for spec in demo_data.SPECIALTIES:
        m = paired_margin(scores, spec, spec)
        out.margins[spec] = m
        ok = m["delta"] >= MIN_MARGIN and m["ci_low"] > 0
        own_ok &= ok
        own_txt.append(
            f"{spec} {m['delta']:+.2f} [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}] n={m['n']:.0f}"
        )
    out.checks.append(Check("own_specialty", own_ok, "; ".join(own_txt)))

    worst: tuple[float, str] | None = None
    for prefix in demo_data.SPECIALTIES:
        for spec in demo_data.SPECIALTIES:
            if spec == prefix:
                continue
            m = paired_margin(scores, prefix, spec)
            if not math.isnan(m["delta"]) and (worst is None or m["delta"] < worst[0]):
                worst = (m["delta"], f"{prefix} on {spec} notes {m['delta']:+.2f} vs base")
    out.checks.append(
        Check(
            "misrouting_hurts",
            worst is not None and worst[0] < 0,
            worst[1] if worst else "no mis-routed replay",
        )
    )

    out.checks.append(v2_alert_check(alerts))

    passes = sorted(k for k, s in gate_status.items() if s == "pass")
    v2_gate = gate_status.get("radiology@2")
    out.checks.append(
        Check(
            "gate",
            bool(passes) and v2_gate == "fail",
            f"PASS: {', '.join(passes) or 'none'}; radiology@2: {v2_gate}",
        )
    )

    own_routes = sorted(
        f"{a.route} -> {a.variant}"
        for a in routing
        if a.variant != "base" and a.cohort.get("specialty") == a.variant
    )
    out.checks.append(
        Check("routing", bool(own_routes), ", ".join(own_routes) or "every cohort to base")
    )
    return out
