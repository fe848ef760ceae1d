"""An alert's evidence as data for a picture: both sides of the comparison it made.

For the alert's cell (variant and version, base model, route, cohort) against its baseline
(``base`` or the previous version) over the alert's evaluation window, in requests (each
request's latest score, feedback attributed as in the scorecard):

* latency and TTFT quantiles: each side's ECDF (101 quantiles) and the alert's quantile;
* rates (errors, fallbacks, thumbs-down, escalations): each side's k / n with its Jeffreys
  interval;
* evaluator scores: each side's score histogram (20 bins on [0, 1]) and mean.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from .catalog import CATALOG, is_evaluator
from .query import BASE, PREFIX_SQL, REQUESTS, json_path, judged_sql, parse_time
from .stats import jeffreys_interval

_QUANTILE_COLUMN = {"latency": "latency_ms", "ttft": "ttft_ms", "route_latency": "route_latency_ms"}


def _flagged(kind: str) -> str:
    """Requests with feedback of ``kind`` (attributed as in the scorecard)."""
    return (
        f"count(*) FILTER (EXISTS (SELECT 1 FROM feedback t WHERE t.trace_id = s.trace_id "
        f"AND t.kind = '{kind}' AND {judged_sql(alias='s')}))"
    )


_RATE_SQL = {
    "errors": "count(*) FILTER (s.error)",
    "fallbacks": "count(s.fallback_reason)",
    "thumbs_down": _flagged("thumbs_down"),
    "escalation": _flagged("escalation"),
}


def _window(alert: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    details = alert.get("details") or {}
    w = details.get("evaluation_window") or details.get("window") or {}
    return parse_time(w.get("since")), parse_time(w.get("until"))


def _side(alert: dict[str, Any], baseline: bool) -> tuple[str, list[Any]]:
    """SQL condition and parameters selecting one side's requests."""
    since, until = _window(alert)
    where = ["TRUE"]
    params: list[Any] = []
    base_model = (alert.get("details") or {}).get("base_model")
    if base_model is not None:
        where.append("s.base_model = ?")
        params.append(base_model)
    if since is not None:
        where.append("s.start_time >= ?")
        params.append(since)
    if until is not None:
        where.append("s.start_time < ?")
        params.append(until)
    if alert.get("route") is not None:
        where.append("s.route = ?")
        params.append(alert["route"])
    for key, value in (alert.get("cohort") or {}).items():
        where.append(f"json_extract_string(s.cohort, '{json_path(key)}') = ?")
        params.append(str(value))
    if baseline:
        ref = alert.get("baseline") or BASE
        pid, _, ver = ref.partition("@")
        where.append(f"{PREFIX_SQL} = ?")
        params.append(pid)
        if ver:
            where.append("s.prefix_version = ?")
            params.append(ver)
    else:
        where.append(f"{PREFIX_SQL} = ?")
        params.append(alert["prefix_id"] or BASE)
        if alert.get("prefix_version"):
            where.append("s.prefix_version = ?")
            params.append(alert["prefix_version"])
    return " AND ".join(where), params


def evidence(con: duckdb.DuckDBPyConnection, alert: dict[str, Any]) -> dict[str, Any]:
    metric = alert["metric"]
    spec = CATALOG.get(metric)
    sides: dict[str, dict[str, Any]] = {}
    for name, is_base in (("variant", False), ("baseline", True)):
        cond, params = _side(alert, is_base)
        if spec is not None and spec.kind == "quantile" and spec.histogram in _QUANTILE_COLUMN:
            col = _QUANTILE_COLUMN[spec.histogram]
            qs = [i / 100 for i in range(101)]
            row = con.execute(
                f"SELECT count(s.{col}), quantile_cont(s.{col}, ?::DOUBLE[]) FROM {REQUESTS} s "
                f"WHERE {cond}",
                [qs, *params],
            ).fetchall()[0]
            sides[name] = {
                "kind": "ecdf",
                "n": int(row[0]),
                "x": list(row[1] or []),
                "p": qs if row[1] else [],
                "quantile": spec.quantile,
            }
        elif spec is not None and spec.kind == "rate" and spec.counter in _RATE_SQL:
            row = con.execute(
                f"SELECT count(*), {_RATE_SQL[spec.counter]} FROM {REQUESTS} s WHERE {cond}",
                params,
            ).fetchall()[0]
            n, k = int(row[0]), int(row[1])
            lo, hi = jeffreys_interval(np.array([k]), np.array([n]))
            sides[name] = {
                "kind": "rate",
                "n": n,
                "k": k,
                "rate": k / n if n else None,
                "ci": [float(lo[0]), float(hi[0])] if n else [None, None],
            }
        elif is_evaluator(metric):
            rows = con.execute(
                f"""SELECT arg_max(t.value, (t.created_at, t.id)) FROM scores t JOIN {REQUESTS} s
  ON t.trace_id = s.trace_id AND {judged_sql(alias="s")}
WHERE t.name = ? AND {cond} GROUP BY s.trace_id, s.span_id""",
                [metric, *params],
            ).fetchall()
            values = np.array([r[0] for r in rows], np.float64)
            counts, edges = np.histogram(values, bins=20, range=(0.0, 1.0))
            sides[name] = {
                "kind": "histogram",
                "n": int(values.size),
                "counts": counts.tolist(),
                "edges": edges.tolist(),
                "mean": float(values.mean()) if values.size else None,
            }
        else:
            sides[name] = {"kind": "none", "n": 0}
    details = alert.get("details") or {}
    since, until = _window(alert)
    effect: dict[str, Any] = {
        "delta": alert.get("delta"),
        "ci_low": alert.get("ci_low"),
        "ci_high": alert.get("ci_high"),
        "min_effect": details.get("min_effect"),
        "scale": "absolute",
    }
    base = alert.get("baseline_value")
    if spec is not None and spec.kind == "quantile" and base:
        # quantile effects are judged relative to the baseline (the minimum effect is a
        # fraction): put the delta and its interval on that scale too
        effect.update(
            {
                k: (alert[k] / base if alert.get(k) is not None else None)
                for k in ("delta", "ci_low", "ci_high")
            },
            scale="relative",
        )
    return {
        "metric": metric,
        "label": spec.label if spec is not None else metric,
        "lower_is_better": spec.lower_is_better if spec is not None else False,
        "sides": sides,
        "effect": effect,
        "window": {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        },
    }
