"""Alert routes: the list, one alert, its acknowledgement (webhooks get an ``updated``
event) and the evidence its page draws."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from . import alerts, analysis
from .deps import ApiState
from .models import COMMON_ERRORS, NOT_FOUND, WRITE_ERRORS, Alert, AlertEvidence, AlertList
from .params import AlertIdPath, Filter


def alert_routes(state: ApiState) -> APIRouter:
    read = [Depends(state.require_read())]
    write = [Depends(state.require_write())]
    store = state.ctx.store
    router = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)

    @router.get("/alerts", response_model=AlertList, dependencies=read, tags=["alerts"])
    def list_alerts(
        status: Annotated[str | None, Query(pattern=r"^[a-z_]{1,20}$", examples=["open"])] = None,
        prefix_id: Filter = None,
        metric: Filter = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> AlertList:
        """Alerts, most severe and most significant first; filter by status/prefix/metric."""
        return AlertList(
            alerts=alerts.list_alerts(
                store, status=status, prefix_id=prefix_id, metric=metric, limit=limit
            )
        )

    @router.get(
        "/alerts/{alert_id}",
        response_model=Alert,
        dependencies=read,
        tags=["alerts"],
        responses=NOT_FOUND,
    )
    def get_alert(alert_id: AlertIdPath) -> Alert:
        return alerts.get_alert(store, alert_id)

    @router.post(
        "/alerts/{alert_id}/ack",
        response_model=Alert,
        dependencies=write,
        tags=["alerts"],
        responses={**NOT_FOUND, **WRITE_ERRORS},
    )
    def ack_alert(alert_id: AlertIdPath) -> Alert:
        """Acknowledge an open alert (idempotent); webhooks get an ``updated`` event."""
        alert, changed = alerts.ack_alert(store, alert_id)
        if changed:
            state.webhooks.notify("updated", [alert])
        return alert

    @router.get(
        "/alerts/{alert_id}/evidence",
        response_model=AlertEvidence,
        dependencies=read,
        tags=["alerts"],
        responses=NOT_FOUND,
    )
    def get_alert_evidence(alert_id: AlertIdPath) -> AlertEvidence:
        """What the alert page draws: both sides' distributions, the effect against the
        minimum effect, and the metric's time series around the alert."""
        alert = alerts.get_alert(store, alert_id)
        return analysis.alert_evidence(store, alert, state.ctx.settings.public_url)

    return router
