"""Special views: agent prefix combinations, guardrail compliance, route flicker, and the
latency effect of prefix switching. Each returns JSON-ready dicts (one per row)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
from scipy import stats as sps

from prefixscope import semconv

from .query import BASE, PREFIX_SQL, REQUESTS, Window, json_path, judged_sql
from .stats import jeffreys_interval

_STEP = f"json_extract_string(x.attributes, '{json_path(semconv.AGENT_STEP)}')"
#: each request with its span (``x``: attributes and resource, which requests do not keep)
_WITH_SPAN = f"{REQUESTS} s JOIN spans x ON x.trace_id = s.trace_id AND x.span_id = s.span_id"


def _req(since: datetime | str | None, until: datetime | str | None) -> tuple[str, list[Any]]:
    where, params = Window.of(since, until).where("s")
    return where, params


def combinations(
    con: duckdb.DuckDBPyConnection,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    *,
    min_steps: int = 2,
) -> list[dict[str, Any]]:
    """Multi-step traces grouped by the ordered combination of prefixes they used.

    A trace's combination is its requests in start order, each as ``step:prefix`` (step
    from ``agent.step``, else the span name), e.g. ``planner:base > tool:icd > response:cardio``.
    Scored end to end: trace count, error rate (any failed step), end-to-end latency p50/p99,
    and the mean of every evaluator over the trace's scores.
    """
    cond, params = _req(since, until)
    rows = con.execute(
        f"""WITH t AS (
  SELECT s.trace_id,
    string_agg(coalesce({_STEP}, s.name) || ':' || {PREFIX_SQL}, ' > ' ORDER BY s.start_time)
      AS combination,
    count(*) AS steps, bool_or(s.error) AS failed,
    date_diff('microsecond', min(s.start_time), max(s.end_time)) / 1000.0 AS e2e_ms
  FROM {_WITH_SPAN} WHERE {cond} GROUP BY s.trace_id HAVING count(*) >= ?),
sc AS (SELECT trace_id, name, avg(value) AS v FROM scores
       WHERE trace_id IN (SELECT trace_id FROM t) GROUP BY ALL)
SELECT t.combination, count(DISTINCT t.trace_id) AS traces, avg(t.steps) AS steps,
  avg(t.failed::INT) AS error_rate, quantile_cont(t.e2e_ms, 0.5) AS e2e_p50,
  quantile_cont(t.e2e_ms, 0.99) AS e2e_p99,
  (SELECT map_from_entries(list((name, v))) FROM (
     SELECT sc.name, avg(sc.v) AS v FROM sc JOIN t t2 USING (trace_id)
     WHERE t2.combination = t.combination GROUP BY sc.name)) AS scores
FROM t GROUP BY t.combination ORDER BY traces DESC""",
        [*params, min_steps],
    ).fetchall()
    return [
        {
            "combination": r[0],
            "traces": int(r[1]),
            "steps": float(r[2]),
            "error_rate": r[3],
            "e2e_latency_p50": r[4],
            "e2e_latency_p99": r[5],
            "scores": dict(r[6] or {}),
        }
        for r in rows
    ]


def compliance(
    con: duckdb.DuckDBPyConnection,
    datasets: Sequence[str] | None = None,
    *,
    evaluator: str = "Refusal",
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Per prefix, the pass rate of ``evaluator`` on each guardrail dataset vs the base model.

    Guardrail datasets are ``datasets`` or, by default, those whose metadata has
    ``"kind": "guardrail"``. A replayed item passes when its score is >= 0.5.
    """
    if datasets is None:
        datasets = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT name FROM datasets "
                "WHERE json_extract_string(metadata, '$.kind') = 'guardrail'"
            ).fetchall()
        ]
    if not datasets:
        return []
    dsn = f"json_extract_string(x.attributes, '{json_path(semconv.DATASET_NAME)}')"
    rows = con.execute(
        f"""SELECT dataset, prefix_id, count(*) AS n, count(*) FILTER (WHERE v >= 0.5) AS passed
FROM (
  SELECT {dsn} AS dataset, {PREFIX_SQL} AS prefix_id, s.trace_id, s.span_id,
    arg_max(t.value, (t.created_at, t.id)) AS v
  FROM {_WITH_SPAN} JOIN scores t ON t.trace_id = s.trace_id AND {judged_sql(alias="s")}
  WHERE t.name = ? AND list_contains(?, {dsn}) GROUP BY ALL)
GROUP BY ALL ORDER BY 1, 2""",
        [evaluator, list(datasets)],
    ).fetchall()
    base = {r[0]: r[3] / r[2] for r in rows if r[1] == BASE and r[2]}
    out = []
    for ds, p, n, k in rows:
        lo, hi = jeffreys_interval(k, n, alpha)
        rate = k / n if n else None
        b = base.get(ds)
        out.append(
            {
                "dataset": ds,
                "prefix_id": p,
                "n": int(n),
                "pass_rate": rate,
                "ci_low": float(lo),
                "ci_high": float(hi),
                "base_pass_rate": b,
                "delta_vs_base": None if b is None or rate is None else rate - b,
            }
        )
    return out


def flicker(
    con: duckdb.DuckDBPyConnection,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
) -> list[dict[str, Any]]:
    """Per route: share of sessions (>= 2 requests) served by more than one prefix."""
    cond, params = _req(since, until)
    rows = con.execute(
        f"""SELECT route, count(*) AS sessions, count(*) FILTER (WHERE prefixes > 1) AS flicker
FROM (SELECT s.route, s.session_id, count(DISTINCT {PREFIX_SQL}) AS prefixes
      FROM {REQUESTS} s WHERE {cond} AND s.session_id IS NOT NULL
      GROUP BY ALL HAVING count(*) >= 2)
GROUP BY route ORDER BY route""",
        params,
    ).fetchall()
    out = []
    for route, n, k in rows:
        lo, hi = jeffreys_interval(k, n)
        out.append(
            {
                "route": route,
                "sessions": int(n),
                "flicker_sessions": int(k),
                "flicker_rate": k / n,
                "ci_low": float(lo),
                "ci_high": float(hi),
            }
        )
    return out


def switch_latency(
    con: duckdb.DuckDBPyConnection,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    *,
    max_sample: int = 200_000,
) -> dict[str, Any]:
    """p50/p99 latency of requests whose deployment last served another prefix vs the same.
    (The latency is the model call's, ``latency_ms``.)

    The deployment is the ``deployment.id`` attribute, else the ``service.instance.id``
    resource attribute. Also a one-sided Mann-Whitney p-value (switched slower).
    """
    cond, params = _req(since, until)
    dep = (
        f"coalesce(json_extract_string(x.attributes, '{json_path(semconv.DEPLOYMENT_ID)}'), "
        f"json_extract_string(x.resource, '{json_path(semconv.SERVICE_INSTANCE_ID)}'))"
    )
    base_sql = f"""WITH d AS (
  SELECT {dep} AS dep, {PREFIX_SQL} AS p, s.start_time, s.latency_ms AS duration_ms
  FROM {_WITH_SPAN} WHERE {cond} AND s.latency_ms IS NOT NULL),
o AS (SELECT duration_ms, p <> lag(p) OVER (PARTITION BY dep ORDER BY start_time) AS switched
      FROM d WHERE dep IS NOT NULL)"""
    rows = con.execute(
        f"""{base_sql}
SELECT switched, count(*), quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.99)
FROM o WHERE switched IS NOT NULL GROUP BY switched""",
        params,
    ).fetchall()
    res: dict[str, Any] = {"switched": None, "same": None, "p_value": None}
    for sw, n, p50, p99 in rows:
        res["switched" if sw else "same"] = {"n": int(n), "latency_p50": p50, "latency_p99": p99}
    if res["switched"] and res["same"]:
        samples = {}
        for flag in (True, False):
            vals = con.execute(
                f"{base_sql} SELECT duration_ms FROM o WHERE switched = ? "
                f"USING SAMPLE reservoir({int(max_sample)} ROWS) REPEATABLE (7)",
                [*params, flag],
            ).fetchnumpy()["duration_ms"]
            samples[flag] = np.asarray(vals, dtype=np.float64)
        res["p_value"] = float(
            sps.mannwhitneyu(samples[True], samples[False], alternative="greater").pvalue
        )
        res["p99_ratio"] = res["switched"]["latency_p99"] / res["same"]["latency_p99"]
    return res
