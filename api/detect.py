"""Regression runs (on demand and every ``detect_interval_s``), and their webhook events.

A run is one transaction: snapshot the active alerts, let analytics detect and write alerts
(:func:`prefixscope.analytics.alerts.detect_and_alert`), compare, commit. Alerts that did not
exist before are ``new``, active ones the run touched are ``updated``, active ones it closed
are ``resolved``; webhooks are only queued after the commit, so detection never waits on a
receiver and receivers never hear about a run that rolled back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import duckdb

from prefixscope.analytics.query import parse_duration
from prefixscope.errors import Unavailable

from . import alerts
from .analysis import analytics_errors
from .deps import ApiState
from .models import Alert

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunOutcome:
    alerts: list[Alert]
    new: list[Alert]
    updated: list[Alert]
    resolved: list[Alert]
    comparisons: int
    flagged: int


def run_regressions(
    state: ApiState,
    since: str | None,
    until: str | None,
    *,
    alpha: float | None = None,
    min_n: int | None = None,
    metrics: Sequence[str] | None = None,
    sequential: Literal["msprt", "fixed", "windows"] | None = None,
    window: str | None = None,
    window_delay: str | None = None,
) -> RunOutcome:
    from prefixscope.analytics.alerts import detect_and_alert
    from prefixscope.analytics.detection import DetectionConfig

    config = DetectionConfig()
    if alpha is not None:
        config.alpha = alpha
    if min_n is not None:
        config.min_n = min_n
    if metrics:
        config.metrics = list(metrics)
    if sequential is not None:
        config.sequential = sequential
    with analytics_errors():
        if window is not None:
            config.window = parse_duration(window)
        if window_delay is not None:
            config.window_delay = parse_duration(window_delay)
        config.validate()
    store = state.ctx.store
    cur = store.cursor()
    try:
        cur.execute("BEGIN TRANSACTION")
        before = {
            r[0]: r[1]
            for r in cur.execute(
                "SELECT id, status FROM alerts WHERE status IN ('open', 'acked')"
            ).fetchall()
        }
        with analytics_errors():
            result, touched = detect_and_alert(cur, since, until, config)
        touched_ids = [str(a["id"]) for a in touched]
        resolved_ids = [
            r[0]
            for r in cur.execute(
                "SELECT id FROM alerts WHERE status = 'resolved' AND list_contains(?, id)",
                [list(before)],
            ).fetchall()
        ]
        cur.execute("COMMIT")
    except duckdb.TransactionException as exc:
        _rollback(cur)
        raise Unavailable(
            f"regression run conflicted with another writer: {exc}", retry_after_s=1
        ) from None
    except BaseException:
        _rollback(cur)
        raise
    finally:
        cur.close()
    by_id = {a.id: a for a in alerts.get_alerts(store, [*touched_ids, *resolved_ids])}
    run_alerts = [by_id[i] for i in touched_ids if i in by_id]
    outcome = RunOutcome(
        alerts=run_alerts,
        new=[a for a in run_alerts if a.id not in before],
        updated=[a for a in run_alerts if a.id in before],
        resolved=[by_id[i] for i in resolved_ids if i in by_id],
        comparisons=len(result.comparisons),
        flagged=len(result.regressions),
    )
    for event, items in (
        ("new", outcome.new),
        ("updated", outcome.updated),
        ("resolved", outcome.resolved),
    ):
        if items:
            state.webhooks.notify(event, items)
    return outcome


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        cur.execute("ROLLBACK")


class PeriodicDetector:
    """Runs detection every ``interval_s`` (a daemon thread).

    ``windows``: each run tests the latest completed evaluation window of length ``window``;
    runs until the next window completes repeat the same answer, so repetition adds no false
    alerts. ``msprt``: always-valid tests over the trailing ``window``.
    """

    def __init__(
        self,
        state: ApiState,
        interval_s: float,
        window: str = "1d",
        sequential: Literal["windows", "msprt"] = "windows",
    ) -> None:
        self.state = state
        self.interval_s = interval_s
        self.window = window
        self.sequential = sequential
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefixscope-detect", daemon=True)

    def start(self) -> PeriodicDetector:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.sequential == "windows":
                    out = run_regressions(
                        self.state, None, None, sequential="windows", window=self.window
                    )
                else:
                    out = run_regressions(self.state, self.window, None, sequential="msprt")
                log.info(
                    "periodic detection: %d comparisons, %d flagged, %d new, %d resolved",
                    out.comparisons,
                    out.flagged,
                    len(out.new),
                    len(out.resolved),
                )
            except Exception:
                log.exception("periodic regression detection failed; will retry next interval")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
