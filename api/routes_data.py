"""Routes over the registry and stored traces: the variants, one variant (read and
register), one trace as a span tree (scores and feedback: :mod:`.routes_annotations`; SQL:
:mod:`.routes_sql`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from prefixscope.errors import NotFound

from . import registry, traces
from .deps import ApiState
from .models import (
    COMMON_ERRORS,
    NOT_FOUND,
    WRITE_ERRORS,
    PrefixIdPath,
    PrefixInfo,
    PrefixList,
    PrefixRegistration,
    TraceView,
)

TraceIdPath = Annotated[str, Path(pattern=r"^[0-9a-fA-F]{32}$")]


def data_routes(state: ApiState) -> APIRouter:
    read = [Depends(state.require_read())]
    write = [Depends(state.require_write())]
    store = state.ctx.store
    router = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)

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
