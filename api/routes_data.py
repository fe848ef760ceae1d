"""Routes over stored data: scores, feedback, sandboxed SQL, the prefix registry, traces."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Response

from prefixscope.errors import NotFound

from . import annotation_store, registry, traces
from .deps import ApiState
from .models import (
    COMMON_ERRORS,
    NOT_FOUND,
    WRITE_ERRORS,
    ErrorBody,
    FeedbackIn,
    PrefixIdPath,
    PrefixInfo,
    PrefixList,
    PrefixRegistration,
    ScoreIn,
    SqlRequest,
    SqlResponse,
    TraceView,
    WriteResult,
)

MAX_BATCH = 10_000
ScoreBody = Annotated[
    ScoreIn | Annotated[list[ScoreIn], Body(min_length=1, max_length=MAX_BATCH)],
    Body(description="One score or a list of up to 10000"),
]
FeedbackBody = Annotated[
    FeedbackIn | Annotated[list[FeedbackIn], Body(min_length=1, max_length=MAX_BATCH)],
    Body(description="One feedback record or a list of up to 10000"),
]
TraceIdPath = Annotated[str, Path(pattern=r"^[0-9a-fA-F]{32}$")]


def data_routes(state: ApiState) -> APIRouter:
    read = [Depends(state.require_read())]
    write = [Depends(state.require_write())]
    store = state.ctx.store
    router = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)

    @router.post(
        "/scores",
        response_model=WriteResult,
        dependencies=write,
        tags=["annotations"],
        responses=WRITE_ERRORS,
    )
    def post_scores(
        body: ScoreBody,
        idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
    ) -> WriteResult:
        """Store evaluator scores (value in [0, 1]); committed before the response.

        Idempotent: records without an ``id`` get one from the ``Idempotency-Key`` header
        or from their content, so a retried request adds nothing."""
        items = body if isinstance(body, list) else [body]
        return annotation_store.write_scores(store, items, idempotency_key)

    @router.post(
        "/feedback",
        response_model=WriteResult,
        dependencies=write,
        tags=["annotations"],
        responses=WRITE_ERRORS,
    )
    def post_feedback(
        body: FeedbackBody,
        idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
    ) -> WriteResult:
        """Store user feedback (thumbs_up, thumbs_down, escalation, ...); idempotent like
        scores (``Idempotency-Key`` header, or an id derived from the content)."""
        items = body if isinstance(body, list) else [body]
        result = annotation_store.write_feedback(store, items, idempotency_key)
        vm = state.ctx.variant_metrics
        if vm is not None:
            dup = set(result.duplicate_ids)
            refs = [
                (it.trace_id, it.span_id)
                for it, rid in zip(items, result.ids, strict=True)
                if it.kind == "thumbs_down" and rid not in dup
            ]
            vm.observe_thumbs_down(annotation_store.variant_keys(store, refs))
        return result

    @router.post(
        "/sql",
        response_model=SqlResponse,
        dependencies=read,
        tags=["sql"],
        responses={
            400: {
                "model": ErrorBody,
                "description": "Syntax error (with position), forbidden "
                "statement, multiple statements, or an error raised by the query",
            },
            408: {"model": ErrorBody, "description": "The query ran past the time limit"},
            429: {"model": ErrorBody, "description": "Too many concurrent queries"},
        },
    )
    def post_sql(body: SqlRequest) -> SqlResponse:
        """Run one read-only SQL statement over the store (sandboxed, time- and row-limited)."""
        result = state.sandbox.run(body.sql)
        return SqlResponse(
            columns=result.columns,
            types=result.types,
            rows=result.rows,
            truncated=result.truncated,
            elapsed_ms=result.elapsed_ms,
        )

    @router.get("/prefixes", response_model=PrefixList, dependencies=read, tags=["prefixes"])
    def get_prefixes() -> PrefixList:
        """Every variant seen in traffic or registered, with versions, first/last seen and n."""
        return PrefixList(prefixes=registry.list_prefixes(store))

    @router.get(
        "/prefixes/{prefix_id}",
        response_model=PrefixInfo,
        dependencies=read,
        tags=["prefixes"],
        responses=NOT_FOUND,
    )
    def get_prefix(prefix_id: PrefixIdPath) -> PrefixInfo:
        info = registry.get_prefix(store, prefix_id)
        if info is None:
            raise NotFound(f"prefix {prefix_id!r} was never seen nor registered")
        return info

    @router.put(
        "/prefixes/{prefix_id}",
        response_model=PrefixInfo,
        dependencies=write,
        tags=["prefixes"],
        responses={
            201: {"model": PrefixInfo, "description": "Registered for the first time"},
            **WRITE_ERRORS,
        },
    )
    def put_prefix(
        prefix_id: PrefixIdPath, body: PrefixRegistration, response: Response
    ) -> PrefixInfo:
        """Register (or replace) a variant's metadata, e.g. before traffic reaches it."""
        created, _ = registry.register_prefix(store, prefix_id, body)
        response.status_code = 201 if created else 200
        info = registry.get_prefix(store, prefix_id)
        if info is None:  # pragma: no cover - just written
            raise NotFound(f"prefix {prefix_id!r} vanished")
        return info

    @router.get(
        "/traces/{trace_id}",
        response_model=TraceView,
        dependencies=read,
        tags=["traces"],
        responses=NOT_FOUND,
    )
    def get_trace(trace_id: TraceIdPath) -> TraceView:
        """One trace as a span tree, with its scores and feedback."""
        view = traces.get_trace(store, trace_id)
        if view is None:
            raise NotFound(f"no spans, scores or feedback for trace {trace_id}")
        return view

    return router
