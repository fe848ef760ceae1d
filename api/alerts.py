"""The API's view of the ``alerts`` table.

Reading and acknowledging go through :mod:`prefixscope.analytics.alerts`, which also writes the
alerts (one definition of the alert object and its filters); this module turns its
:class:`~prefixscope.analytics.alert_record.AlertRecord` objects into :class:`Alert` models and
storage problems into HTTP errors.
"""

from __future__ import annotations

from typing import Any

import duckdb

from prefixscope.analytics import alerts as analytics_alerts
from prefixscope.analytics.alert_record import AlertRecord
from prefixscope.collector.storage.store import Store
from prefixscope.errors import NotFound, Unavailable

from .models import Alert


def alert_model(rec: AlertRecord) -> Alert:
    """An alert record as the API model (the record's fields, less the dedupe key)."""
    return Alert.model_validate(rec, from_attributes=True)


def _alerts(store: Store, **kw: Any) -> list[Alert]:
    cur = store.read_cursor()
    try:
        rows = analytics_alerts.list_alerts(cur, **kw)
    finally:
        cur.close()
    return [alert_model(r) for r in rows]


def list_alerts(
    store: Store,
    *,
    status: str | None = None,
    prefix_id: str | None = None,
    metric: str | None = None,
    limit: int = 500,
) -> list[Alert]:
    """Alerts, most severe and most significant first."""
    return _alerts(
        store, status=status, prefix_id=prefix_id, metric=metric, order="severity", limit=limit
    )


def get_alert(store: Store, alert_id: str) -> Alert:
    found = _alerts(store, ids=[alert_id], limit=1)
    if not found:
        raise NotFound(f"no alert with id {alert_id!r}")
    return found[0]


def get_alerts(store: Store, ids: list[str]) -> list[Alert]:
    return _alerts(store, ids=ids, limit=max(len(ids), 1)) if ids else []


def ack_alert(store: Store, alert_id: str) -> tuple[Alert, bool]:
    """Mark an open alert acked; returns (alert, changed). Acking twice is a no-op."""
    cur = store.read_cursor()
    try:
        found, changed = analytics_alerts.acknowledge(cur, alert_id)
    except duckdb.Error as exc:
        raise Unavailable(f"could not ack alert: {exc}", retry_after_s=1) from None
    finally:
        cur.close()
    if found is None:
        raise NotFound(f"no alert with id {alert_id!r}")
    return alert_model(found), changed
