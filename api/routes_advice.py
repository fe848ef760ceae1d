"""Advice routes: the release gate for a variant and the routing advice per (route, cohort)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from prefixscope.analytics.query import parse_cohort_filter

from . import analysis
from .deps import ApiState
from .models import COMMON_ERRORS, GateResult, PrefixIdPath, RoutingResponse
from .params import Filter, TimeBound


def advice_routes(state: ApiState) -> APIRouter:
    read = [Depends(state.require_read())]
    store = state.ctx.store
    router = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)

    @router.get(
        "/gate/{prefix_id}", response_model=GateResult, dependencies=read, tags=["analytics"]
    )
    def get_gate(
        prefix_id: PrefixIdPath,
        prefix_version: Filter = None,
        since: TimeBound = None,
        until: TimeBound = None,
        alpha: Annotated[float | None, Query(gt=0, lt=1)] = None,
        min_n: Annotated[int | None, Query(ge=2, le=10_000_000)] = None,
        strict: bool = False,
        cohort: Annotated[
            list[str] | None,
            Query(
                max_length=20,
                description="Gate only the cells of this cohort: key=value, repeatable "
                "(e.g. specialty=cardiology)",
                examples=[["specialty=cardiology"]],
            ),
        ] = None,
    ) -> GateResult:
        """Release gate: a status per (version, route, cohort) with reasons.

        Cells: ``fail`` (a significant regression vs base or the previous version),
        ``untested`` (too few requests to test against base: not a pass, not a regression),
        ``pass``. Verdict: ``fail`` if any cell fails; else ``pass`` if at least one cell was
        tested, with the thin cells listed as untested; else ``insufficient_data``. With
        ``strict=true`` any untested cell makes the verdict ``insufficient_data``. The tests
        are always-valid (mSPRT), so ``since`` is a fixed time or unset (all data): an age
        like ``7d`` would slide with the clock and is refused. ``cohort=key=value`` gates only
        the cells of that cohort (the population the prefix is released for).
        """
        with analysis.analytics_errors():
            wanted = parse_cohort_filter(cohort or [])
        result = analysis.gate(
            store,
            prefix_id,
            prefix_version=prefix_version,
            since=since,
            until=until,
            alpha=alpha,
            min_n=min_n,
            strict=strict,
            cohort=wanted or None,
        )
        return GateResult.model_validate(analysis.as_jsonable(result))

    @router.get("/routing", response_model=RoutingResponse, dependencies=read, tags=["analytics"])
    def get_routing(
        metric: Annotated[str, Query(min_length=1, max_length=200)] = "TaskCompletion",
        threshold: Annotated[float, Query(ge=-1e9, le=1e9, allow_inf_nan=False)] = 0.0,
        min_n: Annotated[int, Query(ge=1, le=10_000_000)] = 100,
        lower_bound: bool = True,
        since: TimeBound = "7d",
        until: TimeBound = None,
    ) -> RoutingResponse:
        """Per (route, cohort): the variant to route to on ``metric``, or fall back to base."""
        advice = analysis.routing(
            store,
            metric,
            threshold=threshold,
            min_n=min_n,
            use_lower_bound=lower_bound,
            since=since,
            until=until,
        )
        return RoutingResponse(
            metric=metric,
            threshold=threshold,
            min_n=min_n,
            advice=analysis.as_jsonable(advice),
        )

    return router
