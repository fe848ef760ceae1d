"""Per-cell sufficient statistics, computed in DuckDB, summarised with :mod:`.stats`.

One call runs four vectorised queries over the request spans of a window, grouped by the
requested keys: volume/rates/tokens/exact quantiles; log-binned latency and TTFT histograms
(for the exact bootstrap); evaluator score moments; feedback counts. Everything downstream
(scorecards, regression detection, gates, routing advice) works on the resulting
:class:`Cell` objects, whose number is the number of groups, not of spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import duckdb
import numpy as np

from . import stats
from .query import Window, attributed_sql, group_expr, requests_cte

Kind = Literal["quantile", "rate", "mean", "ratio", "total", "count"]

#: metric -> (column, quantile)
QUANTILE_METRICS: dict[str, tuple[str, float]] = {
    "latency_p50": ("duration_ms", 0.5),
    "latency_p90": ("duration_ms", 0.9),
    "latency_p99": ("duration_ms", 0.99),
    "ttft_p50": ("ttft_ms", 0.5),
    "ttft_p99": ("ttft_ms", 0.99),
}
#: metric -> counter it is computed from
RATE_METRICS: dict[str, str] = {
    "error_rate": "errors",
    "fallback_rate": "fallbacks",
    "thumbs_down_rate": "thumbs_down",
    "escalation_rate": "escalation",
}
TOTAL_METRICS = ("input_tokens", "output_tokens")
RATIO_METRICS = ("kv_cache_reuse_rate",)
BUILTIN_METRIC_NAMES: frozenset[str] = frozenset(
    ["n", *QUANTILE_METRICS, *RATE_METRICS, *RATIO_METRICS, *TOTAL_METRICS]
)
FEEDBACK_KINDS = ("thumbs_down", "escalation")


@dataclass(slots=True)
class Estimate:
    """One metric of one cell. ``var`` is the sampling variance of ``value`` (for tests)."""

    kind: Kind
    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    var: float | None = None
    successes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "n": self.n, "ci_low": self.ci_low, "ci_high": self.ci_high}


@dataclass(slots=True)
class Cell:
    """Statistics of one group (a combination of key values)."""

    key: tuple[str | None, ...]
    n: int
    metrics: dict[str, Estimate] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None


def _f(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return None if np.isnan(v) else v


def compute_cells(
    con: duckdb.DuckDBPyConnection,
    keys: Sequence[str],
    window: Window,
    *,
    alpha: float = 0.05,
    extra_where: str = "TRUE",
    key_exprs: Sequence[str] | None = None,
    with_scores: bool = True,
    with_feedback: bool = True,
    with_histograms: bool = True,
) -> dict[tuple[str | None, ...], Cell]:
    """Statistics for every group of ``keys`` (scorecard key names) in ``window``."""
    exprs = list(key_exprs) if key_exprs is not None else [group_expr(k) for k in keys]
    ks = [f"k{i}" for i in range(len(exprs))]
    proj = "".join(f"{e} AS {k}, " for e, k in zip(exprs, ks, strict=True))
    body, params = requests_cte(window, extra_where)
    req = f"req AS (SELECT {proj}s.* FROM ({body}) s)"
    gid = _gid(ks, "")
    sel_keys = "".join(f"{k}, " for k in ks)
    base = con.execute(
        f"""WITH {req}
SELECT {sel_keys}{gid} AS gid, count(*) AS n,
  quantile_cont(duration_ms, [0.5, 0.9, 0.99]) AS lat_q, count(duration_ms) AS n_lat,
  quantile_cont(ttft_ms, [0.5, 0.99]) AS ttft_q, count(ttft_ms) AS n_ttft,
  count(*) FILTER (WHERE status_code = 'ERROR') AS errors,
  count(*) FILTER (WHERE coalesce(fallback_reason, '') <> '') AS fallbacks,
  sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
  sum(cached_tokens) AS cached, sum(input_tokens) FILTER (WHERE cached_tokens IS NOT NULL) AS
  cache_base, count(cached_tokens) AS n_cache,
  min(start_time) AS first_seen, max(start_time) AS last_seen
FROM req GROUP BY ALL""",
        params,
    ).fetchall()
    cells: dict[tuple[str | None, ...], Cell] = {}
    by_gid: dict[int, Cell] = {}
    nk = len(ks)
    for row in base:
        key = tuple(None if v is None else str(v) for v in row[:nk])
        (gid_v, n, lat_q, n_lat, ttft_q, n_ttft, errors, fallbacks, tin, tout, cached, cbase,
         n_cache, first, last) = row[nk:]
        cell = Cell(key=key, n=int(n), first_seen=first, last_seen=last)
        m = cell.metrics
        m["n"] = Estimate("count", float(n), int(n))
        for name, (col, p) in QUANTILE_METRICS.items():
            qs, cnt = (lat_q, n_lat) if col == "duration_ms" else (ttft_q, n_ttft)
            idx = {0.5: 0, 0.9: 1, 0.99: 2}[p] if col == "duration_ms" else {0.5: 0, 0.99: 1}[p]
            m[name] = Estimate("quantile", _f(qs[idx]) if qs else None, int(cnt))
        cell_counts = {"errors": int(errors), "fallbacks": int(fallbacks)}
        for name, counter in RATE_METRICS.items():
            if counter in cell_counts:
                m[name] = Estimate("rate", None, int(n), successes=cell_counts[counter])
        m["input_tokens"] = Estimate("total", _f(tin), int(n))
        m["output_tokens"] = Estimate("total", _f(tout), int(n))
        ratio = float(cached) / float(cbase) if cbase else None
        m["kv_cache_reuse_rate"] = Estimate("ratio", ratio, int(n_cache))
        cells[key] = cell
        by_gid[int(gid_v)] = cell
    if not cells:
        return cells
    if with_feedback:
        _add_feedback(con, req, ks, params, by_gid)
    for cell in cells.values():
        _finish_rates(cell, alpha)
    if with_histograms:
        _add_quantile_cis(con, req, gid, params, by_gid, alpha)
    if with_scores:
        _add_scores(con, req, ks, params, by_gid, alpha)
    return cells


def _gid(ks: Sequence[str], alias: str) -> str:
    return "hash(" + (", ".join(alias + k for k in ks) if ks else "NULL") + ")"


def _add_feedback(
    con: duckdb.DuckDBPyConnection,
    req: str,
    ks: Sequence[str],
    params: list[Any],
    by_gid: dict[int, Cell],
) -> None:
    kinds = ", ".join(f"'{k}'" for k in FEEDBACK_KINDS)
    rows = con.execute(
        f"""WITH {req}, fb AS ({attributed_sql("feedback", "t.kind")})
SELECT {_gid(ks, "r.")} AS gid, fb.kind,
  count(DISTINCT r.span_id || r.trace_id)
FROM fb JOIN req r ON r.trace_id = fb.trace_id AND r.span_id = fb.span_id
WHERE fb.kind IN ({kinds}) GROUP BY ALL""",
        params,
    ).fetchall()
    for cell in by_gid.values():
        for kind in FEEDBACK_KINDS:
            cell.metrics[f"{kind}_rate"] = Estimate("rate", None, cell.n, successes=0)
    for g, kind, cnt in rows:
        c = by_gid.get(int(g))
        if c is not None:
            c.metrics[f"{kind}_rate"].successes = int(cnt)


def _finish_rates(cell: Cell, alpha: float) -> None:
    for name in RATE_METRICS:
        est = cell.metrics.get(name)
        if est is None or est.successes is None or est.n <= 0:
            continue
        k, n = est.successes, est.n
        p = k / n
        lo, hi = stats.jeffreys_interval(k, n, alpha)
        est.value, est.var = p, p * (1 - p) / n
        est.ci_low, est.ci_high = float(lo), float(hi)


def _add_quantile_cis(
    con: duckdb.DuckDBPyConnection,
    req: str,
    gid: str,
    params: list[Any],
    by_gid: dict[int, Cell],
    alpha: float,
) -> None:
    res = con.execute(
        f"""WITH {req}
SELECT {gid} AS gid, 0 AS metric, {stats.bin_sql("duration_ms")} AS b, count(*) AS c
FROM req WHERE duration_ms IS NOT NULL GROUP BY ALL
UNION ALL
SELECT {gid} AS gid, 1 AS metric, {stats.bin_sql("ttft_ms")} AS b, count(*) AS c
FROM req WHERE ttft_ms IS NOT NULL GROUP BY ALL""",
        params,
    ).fetchnumpy()
    gids = np.asarray(res["gid"], dtype=np.uint64)
    if gids.size == 0:
        return
    order_keys = np.array(sorted(by_gid), dtype=np.uint64)
    cells = [by_gid[int(g)] for g in order_keys]
    idx = np.searchsorted(order_keys, gids)
    metric = np.asarray(res["metric"], dtype=np.int64)
    bins = np.asarray(res["b"], dtype=np.int64)
    counts = np.asarray(res["c"], dtype=np.int64)
    for mcode, col in ((0, "duration_ms"), (1, "ttft_ms")):
        sel = metric == mcode
        g, b, c = idx[sel], bins[sel], counts[sel]
        order = np.lexsort((b, g))
        g, b, c = g[order], b[order], c[order]
        for name, (qcol, p) in QUANTILE_METRICS.items():
            if qcol != col:
                continue
            boot = stats.quantile_bootstrap(g, b, c, len(cells), p, alpha)
            for i, cell in enumerate(cells):
                est = cell.metrics[name]
                if est.value is None or np.isnan(boot.var[i]):
                    continue
                est.var = float(boot.var[i])
                est.ci_low = min(float(boot.ci_low[i]), est.value)
                est.ci_high = max(float(boot.ci_high[i]), est.value)


def _add_scores(
    con: duckdb.DuckDBPyConnection,
    req: str,
    ks: Sequence[str],
    params: list[Any],
    by_gid: dict[int, Cell],
    alpha: float,
) -> None:
    rows = con.execute(
        f"""WITH {req}, sc AS ({attributed_sql("scores", "t.name, t.value")})
SELECT {_gid(ks, "r.")} AS gid, sc.name,
  count(*) AS n, avg(sc.value) AS mean, var_samp(sc.value) AS var
FROM sc JOIN req r ON r.trace_id = sc.trace_id AND r.span_id = sc.span_id
GROUP BY ALL""",
        params,
    ).fetchall()
    if not rows:
        return
    g = [int(r[0]) for r in rows]
    n = np.array([r[2] for r in rows], dtype=np.float64)
    mean = np.array([r[3] for r in rows], dtype=np.float64)
    var = np.array([np.nan if r[4] is None else r[4] for r in rows], dtype=np.float64)
    lo, hi = stats.mean_interval(mean, var, n, alpha)
    for i, (gi, r) in enumerate(zip(g, rows, strict=True)):
        cell = by_gid.get(gi)
        if cell is None:
            continue
        v = float(var[i]) if not np.isnan(var[i]) else 0.0
        cell.metrics[str(r[1])] = Estimate(
            "mean",
            float(mean[i]),
            int(n[i]),
            ci_low=_f(lo[i]),
            ci_high=_f(hi[i]),
            var=v / n[i] if n[i] > 0 else None,
        )


def metric_names(cells: Iterable[Cell]) -> list[str]:
    """Every metric name present in ``cells``, built-ins first."""
    seen: dict[str, None] = {}
    for c in cells:
        for k in c.metrics:
            seen.setdefault(k, None)
    builtin = [m for m in seen if m in BUILTIN_METRIC_NAMES]
    return builtin + sorted(m for m in seen if m not in BUILTIN_METRIC_NAMES)
