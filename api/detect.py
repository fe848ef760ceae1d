"""Regression runs (on demand and every ``detect_interval_s``), and their webhook events.

The alert lifecycle lives in :func:`prefixscope.analytics.alerts.run_and_diff` (one
transaction: snapshot the active alerts, detect and write, diff into new / updated /
resolved). This module only turns its result into API models and queues the webhooks, after
the commit, so detection never waits on a receiver and receivers never hear about a run that
rolled back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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
    from prefixscope.analytics.alerts import RunConflict, run_and_diff
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
    cur = state.ctx.store.cursor()
    try:
        with analytics_errors():
            diff = run_and_diff(cur, since, until, config)
    except RunConflict as exc:
        raise Unavailable(
            f"regression run conflicted with another writer: {exc}", retry_after_s=1
        ) from None
    finally:
        cur.close()
    new = [alerts.alert_from_row(a) for a in diff.new]
    updated = [alerts.alert_from_row(a) for a in diff.updated]
    outcome = RunOutcome(
        alerts=[*new, *updated],
        new=new,
        updated=updated,
        resolved=[alerts.alert_from_row(a) for a in diff.resolved],
        comparisons=len(diff.result.comparisons),
        flagged=len(diff.result.regressions),
    )
    for event, items in (
        ("new", outcome.new),
        ("updated", outcome.updated),
        ("resolved", outcome.resolved),
    ):
        if items:
            state.webhooks.notify(event, items)
    return outcome


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
