"""Per-variant time series: one line per version of a prefix, with the base model beside it.

Per time bucket and (variant, version): requests (``collector/spans/requests.py``: the unit of every
metric), error rate and fallback rate (with Jeffreys intervals), p50/p99 latency and TTFT, the
thumbs-down rate (requests with thumbs-down feedback, attributed as in the scorecard), and
each evaluator's mean score (its latest value per request, with a normal-approximation
interval). The base model beside a variant is the variant's own base model. The
bucket follows the data: the smallest of 1, 5 and 15 minutes, 1, 3, 6 and 12 hours, a day
and a week that cuts the time from the first to the last request in the window (and filter)
into at most :data:`MAX_BUCKETS` buckets (the window's length when it holds no request), so a
burst of a minute is minutes and a week of traffic is quarter days, whatever the window;
buckets are aligned to the clock (DuckDB's ``time_bucket`` grid), so the same bucket has the
same start in every request. Version rollouts are markers: the first request of each
version, and the registry's registration time when the variant is registered.

Three SQL statements over the window (the data's extent, requests, scores), each one
grouped pass over the requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from .query import BASE, PREFIX_SQL, REQUESTS, Window, json_path, judged_sql
from .stats import jeffreys_interval

#: bucket lengths to choose from, shortest first
BUCKETS: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(days=1),
    timedelta(days=7),
)
#: most buckets a series is cut into (a chart of 48 points stays readable, and a bucket
#: keeps enough requests for its rate to mean something)
MAX_BUCKETS = 48
RATES = ("error_rate", "fallback_rate", "thumbs_down_rate")


def bucket_for(span: timedelta) -> timedelta:
    """The shortest bucket that cuts ``span`` (the data's extent) into at most
    :data:`MAX_BUCKETS` buckets."""
    for bucket in BUCKETS:
        if span <= bucket * MAX_BUCKETS:
            return bucket
    return BUCKETS[-1]


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    prefix_id: str
    since: datetime | str | None = "7d"
    until: datetime | str | None = None
    route: str | None = None
    cohort: dict[str, str] | None = None
    with_base: bool = True


def _resolve(q: SeriesQuery, con: duckdb.DuckDBPyConnection) -> tuple[datetime, datetime]:
    w = Window.of(q.since, q.until)
    until = w.until or datetime.now(UTC).replace(tzinfo=None)
    since = w.since
    if since is None:
        row = con.execute(
            f"SELECT min(s.start_time) FROM {REQUESTS} s WHERE {PREFIX_SQL} = ?",
            [q.prefix_id],
        ).fetchall()
        since = row[0][0] if row and row[0][0] is not None else until - timedelta(days=7)
    return since, until


def timeseries(con: duckdb.DuckDBPyConnection, q: SeriesQuery) -> dict[str, Any]:
    """The page's data: ``bucket_seconds``, ``series`` (one per variant/version) and
    ``rollouts`` (markers)."""
    since, until = _resolve(q, con)
    variants = [q.prefix_id, BASE] if q.with_base and q.prefix_id != BASE else [q.prefix_id]
    where = ["s.start_time >= ?", "s.start_time < ?", f"{PREFIX_SQL} IN ?"]
    params: list[Any] = [since, until, variants]
    if len(variants) > 1:  # the base model's requests: of the variant's base model(s) only
        where.append(
            f"({PREFIX_SQL} = ? OR s.base_model IN (SELECT DISTINCT v.base_model FROM "
            f"{REQUESTS} v WHERE {PREFIX_SQL.replace('s.', 'v.')} = ? "
            "AND v.start_time >= ? AND v.start_time < ?))"
        )
        params += [q.prefix_id, q.prefix_id, since, until]
    if q.route is not None:
        where.append("s.route = ?")
        params.append(q.route)
    for key, value in (q.cohort or {}).items():
        where.append(f"json_extract_string(s.cohort, '{json_path(key)}') = ?")
        params.append(value)
    extent = con.execute(
        f"SELECT min(s.start_time), max(s.start_time) FROM {REQUESTS} s "
        f"WHERE {' AND '.join(where)}",
        params,
    ).fetchall()
    first, last = extent[0] if extent else (None, None)
    bucket = bucket_for(last - first if first is not None and last is not None else until - since)
    bucket_s = int(bucket.total_seconds())
    req_cte = f"""req AS (
  SELECT s.trace_id, s.span_id, {PREFIX_SQL} AS pid,
    CASE WHEN {PREFIX_SQL} = '{BASE}' THEN '' ELSE coalesce(s.prefix_version, '') END AS ver,
    time_bucket(to_seconds({bucket_s}), s.start_time) AS b,
    s.error, s.fallback_reason, s.latency_ms, s.ttft_ms, s.span_ids, s.last_in_trace
  FROM {REQUESTS} s WHERE {" AND ".join(where)})"""
    req_params = params
    judged = judged_sql(alias="r")
    rows = con.execute(
        f"""WITH {req_cte},
down AS (SELECT DISTINCT r.trace_id, r.span_id FROM feedback t JOIN req r
         ON r.trace_id = t.trace_id AND {judged} WHERE t.kind = 'thumbs_down')
SELECT pid, ver, b, count(*) AS n,
  count(*) FILTER (error) AS errors,
  count(fallback_reason) AS fallbacks,
  count(*) FILTER (d.trace_id IS NOT NULL) AS thumbs_down,
  quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.99),
  quantile_cont(ttft_ms, 0.5), quantile_cont(ttft_ms, 0.99), count(ttft_ms)
FROM req LEFT JOIN down d USING (trace_id, span_id) GROUP BY ALL ORDER BY pid, ver, b""",
        req_params,
    ).fetchall()
    score_rows = con.execute(
        f"""WITH {req_cte}
SELECT pid, ver, b, name, count(*), avg(v), stddev_samp(v) FROM (
  SELECT r.pid, r.ver, r.b, r.trace_id, r.span_id, t.name,
    arg_max(t.value, (t.created_at, t.id)) AS v
  FROM scores t JOIN req r ON r.trace_id = t.trace_id AND {judged} GROUP BY ALL)
GROUP BY ALL ORDER BY 1, 2, 3, 4""",
        req_params,
    ).fetchall()
    series: dict[tuple[str, str], dict[str, Any]] = {}
    for pid, ver, b, n, errors, fallbacks, down, p50, p99, t50, t99, nt in rows:
        s = series.setdefault((pid, ver), _new_series(pid, ver))
        s["t"].append(b.isoformat())
        s["n"].append(int(n))
        for name, k in (("error_rate", errors), ("fallback_rate", fallbacks),
                        ("thumbs_down_rate", down)):  # fmt: skip
            s[name].append(int(k))  # counts for now: rates and intervals below, vectorized
        s["latency_p50"].append(p50)
        s["latency_p99"].append(p99)
        s["ttft_p50"].append(t50)
        s["ttft_p99"].append(t99)
        s["ttft_n"].append(int(nt))
    for s in series.values():
        n_arr = np.asarray(s["n"], np.float64)
        for name in RATES:
            k_arr = np.asarray(s[name], np.float64)
            lo, hi = jeffreys_interval(k_arr, n_arr)
            s[name] = (k_arr / n_arr).tolist() if len(n_arr) else []
            s[name + "_ci"] = [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)]
    for pid, ver, b, name, n, mean, sd in score_rows:
        s = series.setdefault((pid, ver), _new_series(pid, ver))
        ev = s["scores"].setdefault(name, {"t": [], "mean": [], "ci": [], "n": []})
        half = 1.96 * (sd or 0.0) / np.sqrt(n) if n > 1 else None
        ev["t"].append(b.isoformat())
        ev["mean"].append(mean)
        ev["n"].append(int(n))
        ev["ci"].append(
            [max(0.0, mean - half), min(1.0, mean + half)] if half is not None else [None, None]
        )
    return {
        "prefix_id": q.prefix_id,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "bucket_seconds": bucket_s,
        "route": q.route,
        "cohort": q.cohort or {},
        "series": sorted(series.values(), key=lambda s: (s["prefix_id"] == BASE, s["version"])),
        "rollouts": rollouts(con, q.prefix_id),
    }


def _new_series(pid: str, ver: str) -> dict[str, Any]:
    s: dict[str, Any] = {"prefix_id": pid, "version": ver, "label": f"{pid}@{ver}" if ver else pid}
    for name in ("t", "n", "latency_p50", "latency_p99", "ttft_p50", "ttft_p99", "ttft_n"):
        s[name] = []
    for name in RATES:
        s[name] = []
        s[name + "_ci"] = []
    s["scores"] = {}
    return s


def rollouts(con: duckdb.DuckDBPyConnection, prefix_id: str) -> list[dict[str, Any]]:
    """When each version was first seen, and when the registry (re)registered the variant."""
    out: list[dict[str, Any]] = [
        {"version": ver, "time": t.isoformat(), "source": "first_seen"}
        for ver, t in con.execute(
            f"""SELECT coalesce(s.prefix_version, ''), min(s.start_time) FROM {REQUESTS} s
WHERE {PREFIX_SQL} = ? GROUP BY 1 ORDER BY 2""",
            [prefix_id],
        ).fetchall()
    ]
    reg = con.execute(
        "SELECT version, registered_at, updated_at FROM prefixes WHERE prefix_id = ?", [prefix_id]
    ).fetchall()
    for ver, registered, updated in reg:
        out.append({"version": ver or "", "time": registered.isoformat(), "source": "registered"})
        if updated and updated != registered:
            out.append({"version": ver or "", "time": updated.isoformat(), "source": "updated"})
    return sorted(out, key=lambda m: m["time"])


def exists(con: duckdb.DuckDBPyConnection, prefix_id: str) -> bool:
    """A variant with traffic or a registration (or the base model)."""
    if prefix_id == BASE:
        return True
    row = con.execute(
        f"""SELECT EXISTS (SELECT 1 FROM prefixes WHERE prefix_id = ?)
  OR EXISTS (SELECT 1 FROM {REQUESTS} s WHERE {PREFIX_SQL} = ?)""",
        [prefix_id, prefix_id],
    ).fetchall()
    return bool(row[0][0])
