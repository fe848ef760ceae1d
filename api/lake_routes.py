"""The API of a lake collector (``serve --store lake``): annotations and the registry.

A stateless collector holds no store to query, so it serves only what writes into the lake:

* ``POST /api/v1/scores`` and ``POST /api/v1/feedback``: the embedded server's bodies,
  validation, limits, auth scopes and record ids; the records are published as Parquet
  segments of the lake's ``scores``/``feedback`` tables before the 200
  (:func:`.annotation_store.write_lake`);
* ``PUT /api/v1/prefixes/{id}`` and ``GET /api/v1/prefixes/{id}``: the variant registry in the
  lake's ``prefixes``/``served_models`` tables (``collector/storage/lake_registry.py``), which
  the lake engines apply as the embedded views do.

Reads of traffic (scorecards, alerts, SQL) are the analytics engines' job over the lake
(``prefixscope analytics run --lake-path``); a lake collector does not count traffic, so a
variant's ``n``, ``first_seen`` and ``last_seen`` here are 0 and null.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response

from prefixscope.collector.storage.lake_registry import LakeRegistry, Registration
from prefixscope.config import Settings
from prefixscope.errors import NotFound, Unavailable

from . import annotation_store
from .deps import Guards
from .models import (
    COMMON_ERRORS,
    NOT_FOUND,
    WRITE_ERRORS,
    PrefixIdPath,
    PrefixInfo,
    PrefixRegistration,
    WriteResult,
)
from .routes_annotations import FeedbackBody, ScoreBody


def prefix_info(prefix_id: str, reg: Registration) -> PrefixInfo:
    """A registration as the API shows it, with no traffic counted."""
    values: dict[str, Any] = dict(reg.values)
    values.pop("prefix_id", None)
    meta = values.pop("metadata", None)
    version = values.get("version")
    return PrefixInfo(
        prefix_id=prefix_id,
        registered=True,
        base_models=[values["base_model"]] if values.get("base_model") else [],
        prefix_types=[values["prefix_type"]] if values.get("prefix_type") else [],
        versions=[version] if version else [],
        first_seen=None,
        last_seen=None,
        n=0,
        metadata=json.loads(meta) if isinstance(meta, str) else (meta or {}),
        served_model_names=reg.served_model_names,
        **values,
    )


def lake_routes(
    settings: Settings,
    lake_url: str,
    registry: LakeRegistry,
    storage_options: dict[str, Any] | None = None,
) -> APIRouter:
    guards = Guards(settings)
    read = [Depends(guards.require_read())]
    write = [Depends(guards.require_write())]
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
        """Publish evaluator scores (value in [0, 1]) to the lake before the response.

        Idempotent ids as on the embedded server; a re-sent record is removed by readers and
        by ``prefixscope lake compact``."""
        items = body if isinstance(body, list) else [body]
        return annotation_store.write_lake(
            lake_url, "scores", items, idempotency_key, storage_options=storage_options
        )

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
        """Publish user feedback to the lake before the response (ids as for scores)."""
        items = body if isinstance(body, list) else [body]
        return annotation_store.write_lake(
            lake_url, "feedback", items, idempotency_key, storage_options=storage_options
        )

    @router.get(
        "/prefixes/{prefix_id}",
        response_model=PrefixInfo,
        dependencies=read,
        tags=["prefixes"],
        responses=NOT_FOUND,
    )
    def get_prefix(prefix_id: PrefixIdPath) -> PrefixInfo:
        """A variant's registration in the lake (traffic is not counted here: n is 0)."""
        reg = _call(lambda: registry.get(prefix_id))
        if reg is None:
            raise NotFound(f"prefix {prefix_id!r} is not registered in the lake")
        return prefix_info(prefix_id, reg)

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
        """Register (or replace) a variant in the lake's registry, published before the
        response; its served_model_names attribute spans as on the embedded server."""
        created, reg = _call(lambda: registry.register(prefix_id, body.model_dump()))
        response.status_code = 201 if created else 200
        return prefix_info(prefix_id, reg)

    return router


def _call(fn: Any) -> Any:
    """The lake unreachable (a full disk, the object store down): 503, retry later."""
    try:
        return fn()
    except OSError as exc:
        raise Unavailable(f"the lake's registry is unavailable: {exc}", retry_after_s=1) from None
