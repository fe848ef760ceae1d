"""Annotation routes: scores and user feedback, one record or a batch, idempotent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header

from . import annotation_store
from .deps import ApiState
from .models import COMMON_ERRORS, WRITE_ERRORS, FeedbackIn, ScoreIn, WriteResult

MAX_BATCH = 10_000
ScoreBody = Annotated[
    ScoreIn | Annotated[list[ScoreIn], Body(min_length=1, max_length=MAX_BATCH)],
    Body(description="One score or a list of up to 10000"),
]
FeedbackBody = Annotated[
    FeedbackIn | Annotated[list[FeedbackIn], Body(min_length=1, max_length=MAX_BATCH)],
    Body(description="One feedback record or a list of up to 10000"),
]


def annotation_routes(state: ApiState) -> APIRouter:
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

    return router
