"""Routes backed by analytics: scorecard, regression runs and their slices, evaluation runs,
a variant's time series (alerts: :mod:`.routes_alerts`; the release gate and routing advice:
:mod:`.routes_advice`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from prefixscope.analytics.query import parse_cohort_filter
from prefixscope.errors import BadRequest

from . import analysis, detect
from .deps import ApiState
from .detect import run_regressions
from .evaluate import run_evaluations
from .models import (
    COMMON_ERRORS,
    NOT_FOUND,
    WRITE_ERRORS,
    EvaluationRun,
    EvaluationRunRequest,
    PrefixIdPath,
    RegressionRun,
    RegressionRunRequest,
    Scorecard,
    SliceTree,
    TimeSeries,
)
from .params import CohortFilter, Filter, TimeBound

MAX_GROUP_KEYS = 6


def split_list(values: list[str] | None) -> list[str]:
    """``a,b`` and repeated parameters alike; empty items dropped."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def analysis_routes(state: ApiState) -> APIRouter:
    read = [Depends(state.require_read())]
    write = [Depends(state.require_write())]
    store = state.ctx.store
    router = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)

    @router.get("/scorecard", response_model=Scorecard, dependencies=read, tags=["analytics"])
    def get_scorecard(
        group_by: Annotated[
            str,
            Query(
                max_length=500,
                description="Comma-separated keys: prefix_id, prefix_version, route, "
                "prompt_version, base_model, cohort.<key>, attr.<key>, day, hour, ...",
                examples=["prefix_id,route,cohort.specialty"],
            ),
        ] = "prefix_id",
        since: TimeBound = None,
        until: TimeBound = None,
        metric: Annotated[
            list[str] | None,
            Query(max_length=50, description="Metrics to include (repeat or comma-separate)"),
        ] = None,
        dataset: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Scorecard:
        """Per-group metrics with n and 95% intervals; deltas vs the base model."""
        keys = split_list([group_by])
        if len(keys) > MAX_GROUP_KEYS:
            raise BadRequest(f"at most {MAX_GROUP_KEYS} group_by keys, got {len(keys)}")
        if len(set(keys)) != len(keys):
            raise BadRequest("group_by keys must be distinct")
        card = analysis.scorecard(store, keys, since, until, split_list(metric), dataset)
        return Scorecard.model_validate(analysis.as_jsonable(card))

    @router.post(
        "/regressions/run",
        response_model=RegressionRun,
        dependencies=write,
        tags=["alerts"],
        responses=WRITE_ERRORS,
    )
    def post_regressions_run(body: RegressionRunRequest | None = None) -> RegressionRun:
        """Run regression detection now over the window; writes alerts, returns the run's."""
        req = body or RegressionRunRequest()
        out = run_regressions(state, req)
        return RegressionRun(
            alerts=out.alerts,
            new=[a.id for a in out.new],
            updated=[a.id for a in out.updated],
            resolved=[a.id for a in out.resolved],
            comparisons=out.comparisons,
            flagged=out.flagged,
            sequential=out.sequential,
            since=out.window.since,
            until=out.window.until,
        )

    @router.get(
        "/regressions/slices",
        response_model=SliceTree,
        dependencies=read,
        tags=["alerts"],
    )
    def get_regression_slices(
        prefix_id: Annotated[str, Query(min_length=1, max_length=200)],
        metric: Filter = None,
        prefix_version: Filter = None,
        route: Filter = None,
        since: TimeBound = None,
        until: TimeBound = None,
    ) -> SliceTree:
        """The cohort slices detection tests for a variant (the whole route, each cohort
        key, each pair of keys), per metric and baseline: n, effect, interval, p and q per
        slice, which were flagged and which one is the alert's cause. Computed now, with
        the running minimum of earlier looks, as a run would; writes nothing."""
        req = RegressionRunRequest(since=since, until=until)
        window, families = detect.slice_tree(state, req, prefix_id, metric, prefix_version, route)
        return SliceTree.model_validate(
            {"since": window.since, "until": window.until, "families": families}
        )

    @router.post(
        "/evaluations/run",
        response_model=EvaluationRun,
        dependencies=write,
        tags=["evaluations"],
        responses=WRITE_ERRORS,
    )
    def post_evaluations_run(body: EvaluationRunRequest) -> EvaluationRun:
        """Online evaluation: score the window's stored spans (source "online"), each
        (span, evaluator) once; spans without usable text are counted as skipped."""
        report = run_evaluations(state, body)
        return EvaluationRun.model_validate(report.to_dict())

    @router.get(
        "/prefixes/{prefix_id}/timeseries",
        response_model=TimeSeries,
        dependencies=read,
        tags=["prefixes"],
        responses=NOT_FOUND,
    )
    def get_timeseries(
        prefix_id: PrefixIdPath,
        since: TimeBound = "7d",
        until: TimeBound = None,
        route: Filter = None,
        cohort: CohortFilter = None,
        base: Annotated[bool, Query(description="Include the base model's series")] = True,
    ) -> TimeSeries:
        """The variant's metrics over time, one series per version and the base model beside
        it: requests, error/fallback/thumbs-down rates with intervals, p50/p99 latency and
        TTFT, each evaluator's mean. The bucket follows the data's extent in the window (at
        most 48 buckets: minutes for a burst, quarter days for a week); rollouts are version
        markers."""
        with analysis.analytics_errors():
            wanted = parse_cohort_filter(cohort or [])
        data = analysis.timeseries(store, prefix_id, since, until, route, wanted, base)
        return TimeSeries.model_validate(data)

    return router
