"""OTLP/HTTP ``POST /v1/traces`` and ``/v1/logs``, ``/healthz`` and ``/metrics`` as Starlette
routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from prefixscope.auth import AccessPolicy, Scope
from prefixscope.errors import BadRequest, PayloadTooLarge, PrefixScopeError, http_error_body
from prefixscope.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

from ..decoding import media_type, media_type_lenient
from ..pipeline.ingest import IngestPipeline
from ..pipeline.logs import LogPipeline
from .responses import error_response, export_response, logs_response

log = logging.getLogger(__name__)

#: A request body must arrive within this time: a slow sender cannot hold a slot for long.
BODY_TIMEOUT_S = 30.0


async def read_body_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(
                    f"body of {declared} bytes exceeds the limit of {limit} bytes"
                )
        except ValueError:
            raise BadRequest("invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("client disconnected before the body was complete") from None
    return b"".join(chunks)


def ingest_routes(
    pipeline: IngestPipeline,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    logs: LogPipeline | None = None,
) -> list[Route]:
    settings = pipeline.settings
    metrics = pipeline.metrics
    access = AccessPolicy.from_settings(settings)

    async def receive(request: Request) -> bytes:
        """The body, under the size limit and the time limit; a slow body holds a receive
        slot, not a decode slot."""
        with pipeline.receiving():
            try:
                return await asyncio.wait_for(
                    read_body_limited(request, settings.max_body_bytes), BODY_TIMEOUT_S
                )
            except TimeoutError:
                raise BadRequest(f"request body not received within {BODY_TIMEOUT_S:g} s") from None

    async def otlp_traces(request: Request) -> Response:
        # Errors are encoded like the request (protobuf Status / JSON), even the early ones.
        mtype: str | None = media_type_lenient(request.headers.get("content-type"))
        try:
            access.check(request.headers, Scope.INGEST)
            mtype = media_type(request.headers.get("content-type"))
            exported = pipeline.export(
                await receive(request), mtype, request.headers.get("content-encoding"), "http"
            )
            decoded = await asyncio.wrap_future(exported)
        except PrefixScopeError as err:
            metrics.requests.labels("http", str(err.http_status)).inc()
            return error_response(err, mtype)
        metrics.requests.labels("http", "200").inc()
        return export_response(mtype, decoded)

    async def otlp_logs(request: Request) -> Response:
        mtype: str | None = media_type_lenient(request.headers.get("content-type"))
        try:
            access.check(request.headers, Scope.INGEST)
            mtype = media_type(request.headers.get("content-type"))
            if logs is None:
                raise BadRequest("this server does not receive OTLP logs")
            # the logs' own budget, before the body is read; trace admission is not touched
            with logs.admitted():
                exported = logs.export(
                    await receive(request), mtype, request.headers.get("content-encoding")
                )
                await asyncio.wrap_future(exported)
        except PrefixScopeError as err:
            metrics.requests.labels("http_logs", str(err.http_status)).inc()
            return error_response(err, mtype)
        metrics.requests.labels("http_logs", "200").inc()
        content, ctype = logs_response(mtype)
        return Response(content, media_type=ctype)

    async def healthz(request: Request) -> Response:
        ok, detail = health()
        return JSONResponse(detail, status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        try:
            access.check(request.headers, Scope.METRICS)
        except PrefixScopeError as err:
            return JSONResponse(http_error_body(err), err.http_status, headers=err.headers())
        # off the event loop: ingest requests keep being served while a scrape renders
        body = await run_in_threadpool(metrics.render)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    return [
        Route("/v1/traces", otlp_traces, methods=["POST"]),
        Route("/v1/logs", otlp_logs, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
