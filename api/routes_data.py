"""Routes over stored data: scores, feedback, sandboxed SQL, the prefix registry, traces."""

from __future__ import annotations

import itertools
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from fastapi.responses import StreamingResponse

from prefixscope.errors import BadRequest, NotFound

from . import annotation_store, registry, sql_formats, traces
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
            200: {
                "description": "The answer, in the format that Accept or format= chose; "
                "X-PrefixScope-Truncated and X-PrefixScope-Rows say whether a limit cut it",
                "content": {
                    f.media_type: {"schema": {"type": "string", "format": "binary"}}
                    for f in sql_formats.FORMATS
                    if f is not sql_formats.JSON
                },
            },
            400: {
                "model": ErrorBody,
                "description": "Syntax error (with position), forbidden "
                "statement, multiple statements, or an error raised by the query",
            },
            406: {"model": ErrorBody, "description": "No supported format is acceptable"},
            408: {"model": ErrorBody, "description": "The query ran past the time limit"},
            429: {"model": ErrorBody, "description": "Too many concurrent queries"},
        },
    )
    def post_sql(
        body: SqlRequest,
        response: Response,
        format: Annotated[
            str | None,
            Query(
                max_length=100,
                description="json, arrow, parquet, csv or ndjson (or a media type)",
            ),
        ] = None,
        accept: Annotated[str | None, Header(max_length=1000)] = None,
    ) -> Any:
        """Run one read-only SQL statement over the store (sandboxed, time- and row-limited).

        The answer's format follows ``format`` (query or body) or the ``Accept`` header:
        JSON (default; at most ``--sql-max-rows`` rows and ``--sql-max-result-mb``), or
        Arrow IPC stream, Parquet, CSV, NDJSON (at most ``--sql-export-max-rows`` rows and
        ``--sql-export-max-mb`` of Arrow data). Beyond a limit the answer is cut:
        ``truncated: true`` in JSON, the header ``X-PrefixScope-Truncated: true`` in every
        format."""
        if format and body.format and format.strip().lower() != body.format.strip().lower():
            raise BadRequest(f"format given twice: {format!r} (query) and {body.format!r} (body)")
        fmt = sql_formats.negotiate(accept, format or body.format)
        if fmt is sql_formats.JSON:
            result = state.sandbox.run(body.sql)
            response.headers.update(_answer_headers(result.truncated, len(result.rows)))
            if result.truncated:
                by = "rows" if len(result.rows) >= state.sandbox.max_rows else "bytes"
                response.headers["X-PrefixScope-Truncated-By"] = by
            return SqlResponse(
                columns=result.columns,
                types=result.types,
                rows=result.rows,
                truncated=result.truncated,
                elapsed_ms=result.elapsed_ms,
            )
        s = state.ctx.settings
        answer = state.sandbox.run_arrow(
            body.sql, max_rows=s.sql_export_max_rows, max_bytes=s.sql_export_bytes
        )
        headers = _answer_headers(answer.truncated, answer.num_rows)
        if answer.truncated_by:
            headers["X-PrefixScope-Truncated-By"] = answer.truncated_by
        headers["X-PrefixScope-Elapsed-Ms"] = f"{answer.elapsed_ms:.1f}"
        if fmt in (sql_formats.PARQUET, sql_formats.CSV):
            headers["Content-Disposition"] = f'attachment; filename="result.{fmt.extension}"'
        body_chunks = sql_formats.WRITERS[fmt.name](answer.schema, answer.batches)
        # the first chunk here, so that a failure to encode is an error response, not a cut
        # stream (the Arrow writers check the schema and the first batch in it)
        first = next(body_chunks, b"")
        media = fmt.media_type
        if fmt in (sql_formats.CSV, sql_formats.NDJSON):
            media += "; charset=utf-8"
        return StreamingResponse(
            itertools.chain([first], body_chunks), media_type=media, headers=headers
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


def _answer_headers(truncated: bool, rows: int) -> dict[str, str]:
    return {
        "X-PrefixScope-Truncated": "true" if truncated else "false",
        "X-PrefixScope-Rows": str(rows),
    }
