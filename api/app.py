"""The API entry points the server uses: ``build_router`` and ``install_error_handlers``.

``build_router(ctx)`` returns every ``/api/v1/*`` route, the dashboard (``GET /``) and its
static files. Auth: when tokens are configured every ``/api/*`` route requires
``Authorization: Bearer`` (read or write scope, see :class:`ApiContext`); the dashboard shell
and its static files carry no data and stay open, and the page sends the token the user
enters (kept in ``sessionStorage``) on its own ``/api`` calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from prefixscope import errors
from prefixscope.collector.storage.lake_registry import LakeRegistry
from prefixscope.config import Settings
from prefixscope.errors import PrefixScopeError, Unprocessable, http_error_body

from .apidocs import docs_routes
from .context import ApiContext
from .dashboard import dashboard_routes
from .deps import ApiState, Guards
from .detect import PeriodicDetector
from .evaluate import PeriodicEvaluator
from .lake_routes import lake_routes
from .routes_advice import advice_routes
from .routes_alerts import alert_routes
from .routes_analysis import analysis_routes
from .routes_annotations import annotation_routes
from .routes_data import data_routes
from .routes_sql import sql_routes

log = logging.getLogger(__name__)


def build_router(ctx: ApiContext) -> APIRouter:
    state = ApiState(ctx)
    if ctx.settings.detect_interval_s > 0:
        s = ctx.settings
        mode: Literal["windows", "msprt"] = "msprt" if s.detect_sequential == "msprt" else "windows"
        detector = PeriodicDetector(state, s.detect_interval_s, s.detect_window, mode).start()
        ctx.on_close(detector.close)
    if ctx.settings.evaluate_every:
        s = ctx.settings
        evaluator = PeriodicEvaluator(
            state, s.evaluate_every, s.evaluators, s.evaluate_sample
        ).start()
        ctx.on_close(evaluator.close)
    router = APIRouter()
    router.include_router(annotation_routes(state))
    router.include_router(sql_routes(state))
    router.include_router(data_routes(state))
    router.include_router(analysis_routes(state))
    router.include_router(advice_routes(state))
    router.include_router(alert_routes(state))
    router.include_router(dashboard_routes(state))
    router.include_router(docs_routes(state.require_read()))
    return router


def build_lake_router(
    settings: Settings,
    lake_url: str,
    registry: LakeRegistry,
    storage_options: dict[str, Any] | None = None,
) -> APIRouter:
    """A lake collector's routes (``lake_routes.py``) and its ``/docs``."""
    router = APIRouter()
    router.include_router(lake_routes(settings, lake_url, registry, storage_options))
    router.include_router(docs_routes(Guards(settings).require_read()))
    return router


def _location(loc: Sequence[object]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def install_error_handlers(app: FastAPI) -> None:
    """One mapping from errors to responses: PrefixScopeError → its status and JSON body."""

    async def on_prefixscope_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PrefixScopeError)
        if exc.http_status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return JSONResponse(
            http_error_body(exc), status_code=exc.http_status, headers=exc.headers()
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        err = Unprocessable(f"{_location(first['loc'])}: {first['msg']}{more}")
        return JSONResponse(
            {**http_error_body(err), "detail": errors},
            status_code=err.http_status,
            headers=err.headers(),
        )

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        """Framework errors (unknown route, unparsable body, ...) in the same JSON shape."""
        assert isinstance(exc, HTTPException)
        err = _FRAMEWORK_ERRORS.get(exc.status_code)
        if err is not None:
            return await on_prefixscope_error(request, err(str(exc.detail)))
        body = {"error": "http_error", "message": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(PrefixScopeError, on_prefixscope_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_exception)


#: Starlette/FastAPI raise HTTPException with a status; the taxonomy class that status means.
_FRAMEWORK_ERRORS: dict[int, type[PrefixScopeError]] = {
    cls.http_status: cls
    for cls in (
        errors.BadRequest,
        errors.Unauthorized,
        errors.Forbidden,
        errors.NotFound,
        errors.NotAcceptable,
        errors.PayloadTooLarge,
        errors.UnsupportedMediaType,
        errors.Unprocessable,
    )
}
