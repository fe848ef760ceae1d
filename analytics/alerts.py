"""Alerts: write detection results to the ``alerts`` table, de-duplicated and self-resolving.

An alert's *fingerprint* is (prefix_id, prefix_version, route, cohort, metric, baseline,
base model); its cohort is the slice named as the regression's cause (``slices.py``).
A run that names a fingerprint with an open (or acked) alert updates that alert's evidence
(``updated_at``) instead of adding a row; a run that tests the fingerprint and no longer
names it (cleared, or now the evidence of another slice's alert) closes the alert
(``status = 'resolved'``, ``resolved_at``). A comparison that was
not tested in a run (too little data in its window) leaves the alert as it is.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb
import orjson

from .alert_record import COLUMNS, AlertRecord
from .comparison import Comparison, DetectionResult
from .detection import detection_window, run_detection
from .detection_config import DetectionConfig
from .engines import Engine
from .examples import example_trace_ids
from .sequence import SequenceLook

#: The alert lifecycle: open → (acked) → resolved; a resolved fingerprint that regresses again
#: opens a new alert.
OPEN, ACKED, RESOLVED = "open", "acked", "resolved"
ACTIVE = (OPEN, ACKED)
_ACTIVE_SQL = "status IN ('open', 'acked')"
#: most severe first; the detector writes critical/major/minor, older rows and other writers
#: may use high/medium/low
SEVERITY_RANK = {"critical": 0, "major": 1, "high": 1, "minor": 2, "medium": 2, "low": 3}
_SEVERITY_SQL = (
    "CASE severity "
    + " ".join(f"WHEN '{k}' THEN {v}" for k, v in SEVERITY_RANK.items())
    + f" ELSE {max(SEVERITY_RANK.values()) + 1} END"
)
_ORDER = {
    "recent": "created_at DESC, id",
    "severity": f"{_SEVERITY_SQL}, coalesce(q_value, 1), created_at DESC, id",
}


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _details(c: Comparison, result: DetectionResult) -> dict[str, Any]:
    """An alert's ``details``."""
    cfg = result.config
    details: dict[str, Any] = {
        "relative": c.relative,
        "p_fixed": c.p_fixed,
        "window": result.window.to_dict(),
        "alpha": cfg.alpha,
        "min_effect": cfg.effect_floor(c.metric),
        "base_model": c.base_model,
    }
    if c.family_q is not None:
        # the slice tree around the cause: the flagged slices that contain it or lie in it
        details["family_q"] = c.family_q
        details["slices"] = [_slice_summary(e) for e in c.evidence]
    if cfg.sequential == "windows":
        # the completed evaluation window this run tested, [start, end) of span start time
        details["evaluation_window"] = {
            **result.window.to_dict(),
            "length_s": cfg.window.total_seconds(),
            "delay_s": cfg.window_delay.total_seconds(),
        }
    return details


def _slice_summary(c: Comparison) -> dict[str, Any]:
    return {
        "cohort": c.cohort,
        "value": c.value,
        "baseline_value": c.baseline_value,
        "delta": c.delta,
        "relative": c.relative,
        "ci_low": c.ci_low,
        "ci_high": c.ci_high,
        "n": c.n,
        "n_baseline": c.n_baseline,
        "p_value": c.p_value,
        "q_value": c.q_value,
    }


def alert_objects(
    source: duckdb.DuckDBPyConnection | Engine,
    result: DetectionResult,
    now: datetime | None = None,
) -> list[AlertRecord]:
    """The run's flagged regressions as alerts, without a store (lake-only runs).

    ``id`` is the fingerprint (stable across runs); ``status`` is ``open``.
    """
    created = now or _now()
    flagged = result.regressions
    examples = example_trace_ids(source, flagged, result.window)
    return [_record(c, ex, created, result) for c, ex in zip(flagged, examples, strict=True)]


def _record(
    c: Comparison, examples: list[str], created: datetime, result: DetectionResult
) -> AlertRecord:
    """A flagged comparison as an open alert whose id is its fingerprint."""
    fp = c.fingerprint()
    return AlertRecord(
        id=fp,
        prefix_id=c.prefix_id,
        prefix_version=c.prefix_version,
        route=c.route,
        cohort=c.cohort,
        metric=c.metric,
        baseline=c.baseline,
        baseline_value=c.baseline_value,
        value=c.value,
        delta=c.delta,
        ci_low=c.ci_low,
        ci_high=c.ci_high,
        p_value=c.p_value,
        q_value=c.q_value,
        n=c.n,
        n_baseline=c.n_baseline,
        direction="worse",
        severity=c.severity,
        status=OPEN,
        example_trace_ids=examples,
        created_at=created,
        fingerprint=fp,
        method=c.method,
        details=_details(c, result),
    )


def save_alerts(
    con: duckdb.DuckDBPyConnection,
    result: DetectionResult,
    now: datetime | None = None,
    *,
    source: duckdb.DuckDBPyConnection | Engine | None = None,
) -> list[AlertRecord]:
    """Upsert flagged regressions, resolve cleared ones; return the run's active alerts.

    ``con`` holds the ``alerts`` table; ``source`` is where the spans are, for example traces
    (default ``con``; e.g. a Spark engine over the lake).
    """
    now = now or _now()
    source = con if source is None else source
    active = {
        r[0]: r[1]
        for r in con.execute(f"SELECT fingerprint, id FROM alerts WHERE {_ACTIVE_SQL}").fetchall()
    }
    touched: list[str] = []
    causes = [c for c in result.comparisons if c.cause]
    found = dict(
        zip(map(id, causes), example_trace_ids(source, causes, result.window), strict=True)
    )
    for c in result.comparisons:
        fp = c.fingerprint()
        if not c.cause:  # cleared, or now the evidence of another slice's alert
            if fp in active:
                con.execute(
                    "UPDATE alerts SET status = ?, resolved_at = ?, updated_at = ? WHERE id = ?",
                    [RESOLVED, now, now, active[fp]],
                )
            continue
        examples = orjson.dumps(found[id(c)]).decode()
        details = orjson.dumps(_details(c, result)).decode()
        values = [
            c.baseline_value,
            c.value,
            c.delta,
            c.ci_low,
            c.ci_high,
            c.p_value,
            c.q_value,
            c.n,
            c.n_baseline,
            c.severity,
            examples,
            now,
            c.method,
            details,
        ]
        if fp in active:
            con.execute(
                """UPDATE alerts SET baseline_value = ?, value = ?, delta = ?, ci_low = ?,
  ci_high = ?, p_value = ?, q_value = ?, n = ?, n_baseline = ?, severity = ?,
  example_trace_ids = ?, updated_at = ?, method = ?, details = ? WHERE id = ?""",
                [*values, active[fp]],
            )
            touched.append(active[fp])
        else:
            aid = uuid.uuid4().hex
            con.execute(
                """INSERT INTO alerts (id, prefix_id, prefix_version, route, cohort, metric,
  baseline, baseline_value, value, delta, ci_low, ci_high, p_value, q_value, n, n_baseline,
  severity, example_trace_ids, updated_at, method, details, direction, status, created_at,
  fingerprint)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'worse', ?, ?, ?)""",
                [
                    aid,
                    c.prefix_id,
                    c.prefix_version,
                    c.route,
                    orjson.dumps(c.cohort).decode(),
                    c.metric,
                    c.baseline,
                    *values,
                    OPEN,
                    now,
                    fp,
                ],
            )
            active[fp] = aid
            touched.append(aid)
    if not touched:
        return []
    return list_alerts(con, ids=touched)


def detect_and_alert(
    con: duckdb.DuckDBPyConnection,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    config: DetectionConfig | None = None,
) -> tuple[DetectionResult, list[AlertRecord]]:
    """One regression run: detect over the window (continuing the window's sequence of
    looks in mSPRT mode) and persist alerts and the sequence's state."""
    config = (config or DetectionConfig()).validate()
    look = SequenceLook.open(con, detection_window(since, until, config), config)
    result = run_detection(con, since, until, config, prior=look.prior(con))
    look.save(con, result)
    return result, save_alerts(con, result)


@dataclass(slots=True)
class RunDiff:
    """What one regression run changed: the alerts it opened, the active ones whose evidence
    it refreshed, and the ones it closed."""

    result: DetectionResult
    new: list[AlertRecord]
    updated: list[AlertRecord]
    resolved: list[AlertRecord]

    @property
    def active(self) -> list[AlertRecord]:
        """The run's alerts that are open or acked: new, then updated."""
        return [*self.new, *self.updated]


class RunConflict(RuntimeError):
    """Another writer changed the alerts during the run; nothing was committed (retry)."""


def run_and_diff(
    con: duckdb.DuckDBPyConnection,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    config: DetectionConfig | None = None,
) -> RunDiff:
    """The whole alert lifecycle of one run, in one transaction: snapshot the active alerts,
    detect and write, then diff. Callers render and notify; they never touch ``alerts``.
    Raises :class:`RunConflict` when a concurrent writer made the transaction fail."""
    con.execute("BEGIN TRANSACTION")
    try:
        before = {
            r[0] for r in con.execute(f"SELECT id FROM alerts WHERE {_ACTIVE_SQL}").fetchall()
        }
        result, touched = detect_and_alert(con, since, until, config)
        resolved = (
            list_alerts(con, status=RESOLVED, ids=sorted(before), limit=len(before))
            if before
            else []
        )
        con.execute("COMMIT")
    except duckdb.TransactionException as exc:
        _rollback(con)
        raise RunConflict(str(exc)) from None
    except BaseException:
        _rollback(con)
        raise
    return RunDiff(
        result=result,
        new=[a for a in touched if a.id not in before],
        updated=[a for a in touched if a.id in before],
        resolved=resolved,
    )


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def list_alerts(
    con: duckdb.DuckDBPyConnection,
    status: str | None = None,
    *,
    ids: list[str] | None = None,
    prefix_id: str | None = None,
    metric: str | None = None,
    order: Literal["recent", "severity"] = "recent",
    limit: int = 1000,
) -> list[AlertRecord]:
    """Alerts with every field of the DESIGN.md alert object (plus extensions).

    ``order``: ``recent`` (newest first) or ``severity`` (most severe, then most significant,
    then newest first; the HTTP API's order).
    """
    conds: list[str] = ["TRUE"]
    params: list[Any] = []
    for column, value in (("status", status), ("prefix_id", prefix_id), ("metric", metric)):
        if value is not None:
            conds.append(f"{column} = ?")
            params.append(value)
    if ids is not None:
        conds.append("list_contains(?, id)")
        params.append(list(ids))
    rows = con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM alerts WHERE {' AND '.join(conds)} "
        f"ORDER BY {_ORDER[order]} LIMIT ?",
        [*params, int(limit)],
    ).fetchall()
    return [AlertRecord.from_row(r) for r in rows]


def acknowledge(con: duckdb.DuckDBPyConnection, alert_id: str) -> tuple[AlertRecord | None, bool]:
    """Mark an open alert acked: ``(alert, changed)``, ``(None, False)`` when there is no such
    alert. Acking an acked or resolved alert changes nothing. The check and the change are one
    statement, so two concurrent acks change the alert once."""
    changed = bool(
        con.execute(
            "UPDATE alerts SET status = ?, updated_at = ? WHERE id = ? AND status = ? RETURNING id",
            [ACKED, _now(), alert_id, OPEN],
        ).fetchall()
    )
    found = list_alerts(con, ids=[alert_id])
    return (found[0] if found else None), changed


def ack_alert(con: duckdb.DuckDBPyConnection, alert_id: str) -> AlertRecord | None:
    """Mark an open alert acknowledged; return it (None when no such alert)."""
    return acknowledge(con, alert_id)[0]


__all__ = [
    "RunConflict",
    "RunDiff",
    "ack_alert",
    "acknowledge",
    "alert_objects",
    "detect_and_alert",
    "list_alerts",
    "run_and_diff",
    "save_alerts",
]
