"""The dashboard: ``GET /`` (an open page shell), its static files, and two HTML fragments.

The shell holds no data, so it needs no token. The fragments (``/api/v1/dashboard`` and
``/api/v1/dashboard/trace/{id}``) are rendered server-side (Jinja2, autoescaped, SVG plots
from :mod:`.plots`) and are protected like every other ``/api`` route; the page's script
fetches them with the token the user typed in (kept in ``sessionStorage``). Every page is
served with a strict Content-Security-Policy: scripts and styles only from this server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

import prefixscope
from prefixscope.analytics.catalog import CATALOG, LOWER_IS_BETTER
from prefixscope.errors import NotFound
from prefixscope.semconv import BASE_PREFIX_ID

from . import alerts, analysis, plots, registry, traces
from .deps import ApiState
from .models import COMMON_ERRORS, NOT_FOUND, TIME_BOUND_PATTERN, PrefixIdPath, TraceView
from .web import SECURITY_HEADERS, environment, fmt_metric, static_files

WINDOWS = [
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
    ("all", "all time"),
]
DEFAULT_WINDOW = "7d"
DASHBOARD_WINDOW_PATTERN = "^(all|" + TIME_BOUND_PATTERN[1:-1] + ")$"
#: Built-in columns of the variants table: (metric, header, help), labels from the catalog.
TABLE_METRICS = [
    (m, CATALOG[m].label, CATALOG[m].help)
    for m in (
        "error_rate",
        "fallback_rate",
        "latency_p50",
        "latency_p99",
        "ttft_p50",
        "thumbs_down_rate",
        "kv_cache_reuse_rate",
    )
]
MAX_EVALUATOR_COLUMNS = 5
MIN_HEAT_N = 30


def _classify(metric: str, stat: analysis.Stat) -> str:
    """better/worse when the 95% interval of the delta vs base excludes zero."""
    lo, hi = stat.delta_ci_low, stat.delta_ci_high
    if lo is None or hi is None or lo <= 0 <= hi:
        return ""
    lower_better = metric in LOWER_IS_BETTER
    return "worse" if (lo > 0) == lower_better else "better"


def _cell(metric: str, stat: analysis.Stat | None) -> dict[str, str]:
    if stat is None or stat.value is None:
        return {"text": "\u2013", "ci": "", "cls": "", "title": f"{metric}: no data"}
    ci = ""
    if stat.ci_low is not None and stat.ci_high is not None:
        ci = f"{fmt_metric(metric, stat.ci_low)}\u2013{fmt_metric(metric, stat.ci_high)}"
    title = f"{metric} = {fmt_metric(metric, stat.value)} (n={stat.n})"
    if stat.base_value is not None:
        title += f"; base {fmt_metric(metric, stat.base_value)}"
    if stat.delta is not None and stat.delta_ci_low is not None:
        title += (
            f"; delta {stat.delta:+.4g} (95% CI {stat.delta_ci_low:+.4g}, "
            f"{stat.delta_ci_high:+.4g})"
        )
    return {
        "text": fmt_metric(metric, stat.value),
        "ci": ci,
        "cls": _classify(metric, stat),
        "title": title,
    }


def panels_context(
    state: ApiState, since: str | None, metric: str | None, cohort: str | None
) -> dict[str, Any]:
    store = state.ctx.store
    by_prefix = {
        g.key["prefix_id"]: g for g in analysis.group_stats(store, ["prefix_id"], since, None)
    }
    reg = {p.prefix_id: p for p in registry.list_prefixes(store)}
    open_alerts = alerts.list_alerts(store, status="open", limit=50)
    evaluators = sorted(
        {m for g in by_prefix.values() for m in g.metrics if analysis.is_evaluator(m)}
    )
    columns = [
        {"metric": m, "label": m, "help": f"mean {m} score"}
        for m in evaluators[:MAX_EVALUATOR_COLUMNS]
    ]
    columns += [{"metric": m, "label": label, "help": help_} for m, label, help_ in TABLE_METRICS]
    order = sorted(by_prefix, key=lambda p: (p != BASE_PREFIX_ID, str(p)))
    variants = []
    for pid in order:
        group, info = by_prefix[pid], reg.get(str(pid))
        variants.append(
            {
                "prefix_id": pid,
                "n": group.n,
                "status": info.status if info and info.registered else None,
                "owner": info.owner if info else None,
                "specialty": info.specialty if info else None,
                "versions": info.versions if info else [],
                "cells": [_cell(c["metric"], group.metrics.get(c["metric"])) for c in columns],
                "open_alerts": sum(
                    1 for a in open_alerts if (a.prefix_id or BASE_PREFIX_ID) == pid
                ),
            }
        )
    latency_rows = [
        plots.LatencyRow(
            label=str(pid),
            n=by_prefix[pid].n,
            **{
                q: _interval(by_prefix[pid].metrics.get(f"latency_{q}"))
                for q in ("p50", "p90", "p99")
            },
        )
        for pid in order
    ]
    heat = _heatmap(state, since, evaluators, metric, cohort)
    return {
        "window_label": dict(WINDOWS).get(since or "all", f"since {since}"),
        "columns": columns,
        "variants": variants,
        "latency_svg": Markup(plots.latency_svg(latency_rows)),
        "alerts": open_alerts,
        "problems": [],
        **heat,
    }


def _interval(stat: analysis.Stat | None) -> plots.Interval:
    if stat is None:
        return plots.Interval(None)
    return plots.Interval(stat.value, stat.ci_low, stat.ci_high)


def _heatmap(
    state: ApiState,
    since: str | None,
    evaluators: list[str],
    metric: str | None,
    cohort: str | None,
) -> dict[str, Any]:
    store = state.ctx.store
    keys = analysis.cohort_keys(store, since, None)
    empty = {
        "heat_metrics": evaluators,
        "heat_metric": None,
        "cohort_keys": keys,
        "cohort_key": None,
        "heatmap_svg": Markup(plots.heatmap_svg([], [], {}, metric="")),
    }
    if not evaluators or not keys:
        return empty
    cohort = cohort if cohort in keys else keys[0]
    groups = analysis.group_stats(store, ["prefix_id", cohort], since, None)
    if metric not in evaluators:  # default: the evaluator with the largest shift vs base
        metric = max(
            evaluators,
            key=lambda m: max(
                (abs(g.metrics[m].delta or 0.0) for g in groups if m in g.metrics), default=0.0
            ),
        )
    stats = {(g.key["prefix_id"], g.key[cohort]): g.metrics.get(metric) for g in groups}
    cols = sorted({str(c) for (_, c) in stats if c is not None})
    rows = sorted({str(p) for (p, _) in stats if p != BASE_PREFIX_ID})
    cells = {}
    for (pid, cval), st in stats.items():
        if pid == BASE_PREFIX_ID or cval is None or st is None or st.value is None:
            continue
        base = stats.get((BASE_PREFIX_ID, cval))
        cells[(str(pid), str(cval))] = plots.HeatCell(
            delta=st.delta,
            n=st.n,
            n_base=base.n if base else 0,
            value=st.value,
            base_value=st.base_value,
        )
    svg = plots.heatmap_svg(rows, cols, cells, metric=metric, min_n=MIN_HEAT_N, col_title=cohort)
    return {**empty, "heat_metric": metric, "cohort_key": cohort, "heatmap_svg": Markup(svg)}


def span_offsets(view: TraceView) -> dict[str, tuple[float, float]]:
    """Each span's (start, width) as fractions of the trace, for the waterfall bars."""
    out: dict[str, tuple[float, float]] = {}
    if view.start_time is None or not view.duration_ms:
        return out
    total = view.duration_ms
    stack = list(view.roots)
    while stack:
        node = stack.pop()
        if node.start_time is not None and node.duration_ms is not None:
            start = (node.start_time - view.start_time).total_seconds() * 1000.0 / total
            out[node.span_id] = (min(max(start, 0.0), 1.0), min(node.duration_ms / total, 1.0))
        stack.extend(node.children)
    return out


def dashboard_routes(state: ApiState) -> APIRouter:
    read = [Depends(state.require_read())]
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        html = (
            environment()
            .get_template("index.html")
            .render(windows=WINDOWS, default_window=DEFAULT_WINDOW, version=prefixscope.__version__)
        )
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    def page(kind: str, item_id: str, title: str, exists: Callable[[], bool]) -> HTMLResponse:
        # With tokens configured the shell is public like "/" (it holds no data) and the data
        # call answers 404 for an unknown id; without, an unknown id is a 404 page right away.
        found = state.ctx.access.enabled or exists()
        html = (
            environment()
            .get_template("page.html")
            .render(
                page=kind,
                item_id=item_id,
                title=title if found else f"Not found: {item_id}",
                windows=WINDOWS,
                version=prefixscope.__version__,
            )
        )
        return HTMLResponse(html, status_code=200 if found else 404, headers=SECURITY_HEADERS)

    @router.get("/prefixes/{prefix_id}", response_class=HTMLResponse, include_in_schema=False)
    def prefix_page(
        prefix_id: PrefixIdPath,
    ) -> HTMLResponse:
        """A variant over time (plotly.js charts of ``/api/v1/prefixes/{id}/timeseries``)."""
        from prefixscope.analytics.timeseries import exists

        return page(
            "prefix",
            prefix_id,
            f"Variant {prefix_id}",
            lambda: analysis.with_cursor(state.ctx.store, lambda con: exists(con, prefix_id)),
        )

    @router.get("/alerts/{alert_id}", response_class=HTMLResponse, include_in_schema=False)
    def alert_page(alert_id: Annotated[str, Path(min_length=1, max_length=200)]) -> HTMLResponse:
        """An alert with its evidence (``/api/v1/alerts/{id}/evidence``)."""

        def exists() -> bool:
            try:
                alerts.get_alert(state.ctx.store, alert_id)
            except NotFound:
                return False
            return True

        return page("alert", alert_id, f"Alert {alert_id}", exists)

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        entry = static_files().get(name)
        if entry is None:
            raise NotFound(f"no static file {name!r}")
        body, media_type = entry
        return Response(
            body,
            media_type=media_type,
            headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"},
        )

    @router.get(
        "/api/v1/dashboard",
        response_class=HTMLResponse,
        dependencies=read,
        tags=["dashboard"],
        responses=COMMON_ERRORS,
    )
    def panels(
        since: Annotated[
            str, Query(max_length=64, pattern=DASHBOARD_WINDOW_PATTERN, examples=["24h", "all"])
        ] = DEFAULT_WINDOW,
        metric: Annotated[str | None, Query(max_length=200)] = None,
        cohort: Annotated[str | None, Query(max_length=200)] = None,
    ) -> HTMLResponse:
        """Dashboard panels as an HTML fragment (variants, latency, heatmap, open alerts)."""
        context = panels_context(state, None if since == "all" else since, metric, cohort)
        html = environment().get_template("panels.html").render(**context)
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    @router.get(
        "/api/v1/dashboard/trace/{trace_id}",
        response_class=HTMLResponse,
        dependencies=read,
        tags=["dashboard"],
        responses={**COMMON_ERRORS, **NOT_FOUND},
    )
    def trace_fragment(
        trace_id: Annotated[str, Path(pattern=r"^[0-9a-fA-F]{32}$")],
    ) -> HTMLResponse:
        """One trace's span tree as an HTML fragment."""
        view = traces.get_trace(state.ctx.store, trace_id)
        if view is None:
            raise NotFound(f"no spans, scores or feedback for trace {trace_id}")
        html = environment().get_template("trace.html").render(t=view, wf=span_offsets(view))
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    return router
