"""The SQL route: one read-only statement over the store, answered as JSON or exported as
Arrow, Parquet, CSV or NDJSON (the sandbox is :mod:`.sql_sandbox`)."""

from __future__ import annotations

import itertools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import StreamingResponse

from prefixscope.errors import BadRequest

from . import sql_formats
from .deps import ApiState
from .models import COMMON_ERRORS, ErrorBody, SqlRequest, SqlResponse


def sql_routes(state: ApiState) -> APIRouter:
    read = [Depends(state.require_read())]
    router = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)

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

    return router


def _answer_headers(truncated: bool, rows: int) -> dict[str, str]:
    return {
        "X-PrefixScope-Truncated": "true" if truncated else "false",
        "X-PrefixScope-Rows": str(rows),
    }
