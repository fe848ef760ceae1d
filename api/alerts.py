"""Reading and acknowledging rows of the ``alerts`` table (written by analytics)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

import duckdb
from prefixscope.analytics.alerts import ALERT_FIELDS, EXTRA_FIELDS
from prefixscope.collector.store import Store

from prefixscope.errors import NotFound, Unavailable

from .models import Alert

# The alert object's fields are defined once, with the detector that writes them.
ALERT_COLUMNS = (*ALERT_FIELDS, *(f for f in EXTRA_FIELDS if f != "fingerprint"))
_SEVERITY_ORDER = (
    "CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 "
    "WHEN 'low' THEN 3 ELSE 4 END"
)


def _parse_json(value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value


def alert_from_row(row: tuple[Any, ...] | dict[str, Any]) -> Alert:
    rec = dict(row) if isinstance(row, dict) else dict(zip(ALERT_COLUMNS, row, strict=True))
    rec["cohort"] = _parse_json(rec.get("cohort"), {}) or {}
    rec["example_trace_ids"] = [str(t) for t in _parse_json(rec.get("example_trace_ids"), [])]
    details = _parse_json(rec.get("details"), None)
    rec["details"] = details if isinstance(details, dict) else None
    return Alert.model_validate({k: rec.get(k) for k in ALERT_COLUMNS})


def list_alerts(
    store: Store,
    *,
    status: str | None = None,
    prefix_id: str | None = None,
    metric: str | None = None,
    limit: int = 500,
) -> list[Alert]:
    where, params = [], []
    for column, value in (("status", status), ("prefix_id", prefix_id), ("metric", metric)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {_SEVERITY_ORDER}, coalesce(q_value, 1), created_at DESC, id LIMIT ?"
    cur = store.cursor()
    try:
        rows = cur.execute(sql, [*params, limit]).fetchall()
    finally:
        cur.close()
    return [alert_from_row(r) for r in rows]


def get_alert(store: Store, alert_id: str) -> Alert:
    cur = store.cursor()
    try:
        row = cur.execute(
            f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE id = ?", [alert_id]
        ).fetchone()
    finally:
        cur.close()
    if row is None:
        raise NotFound(f"no alert with id {alert_id!r}")
    return alert_from_row(row)


def get_alerts(store: Store, ids: list[str]) -> list[Alert]:
    if not ids:
        return []
    cur = store.cursor()
    try:
        rows = cur.execute(
            f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE list_contains(?, id)", [ids]
        ).fetchall()
    finally:
        cur.close()
    return [alert_from_row(r) for r in rows]


def ack_alert(store: Store, alert_id: str) -> tuple[Alert, bool]:
    """Mark an open alert acked; returns (alert, changed). Acking twice is a no-op."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    cur = store.cursor()
    try:
        cur.execute("BEGIN TRANSACTION")
        row = cur.execute("SELECT status FROM alerts WHERE id = ?", [alert_id]).fetchone()
        if row is None:
            cur.execute("ROLLBACK")
            raise NotFound(f"no alert with id {alert_id!r}")
        changed = row[0] == "open"
        if changed:
            cur.execute(
                "UPDATE alerts SET status = 'acked', updated_at = ? WHERE id = ?", [now, alert_id]
            )
        cur.execute("COMMIT")
    except duckdb.Error as exc:
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        raise Unavailable(f"could not ack alert: {exc}", retry_after_s=1) from None
    finally:
        cur.close()
    return get_alert(store, alert_id), changed
