"""Regression runs (on demand and every ``detect_interval_s``), and their webhook events.

The alert lifecycle lives in :func:`prefixscope.analytics.alerts.run_and_diff` (one
transaction: snapshot the active alerts, detect and write, diff into new / updated /
resolved). This module only turns its result into API models and queues the webhooks, after
the commit, so detection never waits on a receiver and receivers never hear about a run that
rolled back.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal

from prefixscope.analytics.detection_config import DetectionConfig
from prefixscope.analytics.query import Window, is_relative, parse_time
from prefixscope.config import duration
from prefixscope.errors import Unavailable

from . import alerts
from .analysis import analytics_errors
from .deps import ApiState
from .models import Alert, RegressionRunRequest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunOutcome:
    alerts: list[Alert]
    new: list[Alert]
    updated: list[Alert]
    resolved: list[Alert]
    comparisons: int
    flagged: int
    sequential: Literal["msprt", "fixed", "windows"]
    window: Window


def detection_config(req: RegressionRunRequest) -> DetectionConfig:
    """The detection settings of a run request (defaults: :class:`DetectionConfig`)."""
    with analytics_errors():
        return DetectionConfig.from_options(
            alpha=req.alpha,
            min_n=req.min_n,
            metrics=req.metrics,
            sequential=req.sequential,
            window=req.window,
            window_delay=req.window_delay,
            slice_depth=req.slice_depth,
            max_slices=req.max_slices,
            full_slices=bool(req.full_slices),
        )


def run_regressions(state: ApiState, req: RegressionRunRequest) -> RunOutcome:
    """One regression run (the alert lifecycle), then its webhook events."""
    from prefixscope.analytics.alerts import RunConflict, run_and_diff

    config = detection_config(req)
    since, until = _since(state, req, config), req.until
    cur = state.ctx.store.read_cursor()
    try:
        with analytics_errors():
            diff = run_and_diff(cur, since, until, config)
    except RunConflict as exc:
        raise Unavailable(
            f"regression run conflicted with another writer: {exc}", retry_after_s=1
        ) from None
    finally:
        cur.close()
    new = [alerts.alert_model(a) for a in diff.new]
    updated = [alerts.alert_model(a) for a in diff.updated]
    outcome = RunOutcome(
        alerts=[*new, *updated],
        new=new,
        updated=updated,
        resolved=[alerts.alert_model(a) for a in diff.resolved],
        comparisons=len(diff.result.comparisons),
        flagged=len(diff.result.regressions),
        sequential=config.sequential,
        window=diff.result.window,
    )
    for event, items in (
        ("new", outcome.new),
        ("updated", outcome.updated),
        ("resolved", outcome.resolved),
    ):
        if items:
            state.webhooks.notify(event, items)
    return outcome


def _since(state: ApiState, req: RegressionRunRequest, config: DetectionConfig) -> str | None:
    """The run's window start: as asked, except that under ``--retention`` an mSPRT window
    starts no earlier than :func:`retained_since`."""
    since = req.since
    retention = state.ctx.settings.retention
    if config.sequential == "msprt" and retention and not is_relative(since):
        # the data before a start is not a growing window when retention drops its oldest days
        start = retained_since(duration(retention))
        with analytics_errors():
            asked = parse_time(since)
        if asked is None or asked < start:
            since = start.isoformat()
    return since


def retained_since(retention: dt.timedelta, now: dt.datetime | None = None) -> dt.datetime:
    """The start of an mSPRT sequence's growing window under ``--retention``: the first whole
    UTC day the retention keeps. No data at or after it is dropped while it is the start, and
    once retention reaches it (the next day) the start moves on and a new sequence begins:
    its anchor is another (``sequence.sequence_anchor``), so it never continues from looks at
    data that is gone. Each sequence is then valid on its own growing window."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    cutoff = now - retention
    return cutoff.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)


def slice_tree(
    state: ApiState,
    req: RegressionRunRequest,
    prefix_id: str,
    metric: str | None,
    prefix_version: str | None,
    route: str | None,
) -> tuple[Window, list[dict[str, Any]]]:
    """The slice tree the run would test now, with the sequence's earlier looks (the same
    p-values as a run), written nowhere."""
    from prefixscope.analytics.causes import slice_tree as tree
    from prefixscope.analytics.detection import detection_window, run_detection
    from prefixscope.analytics.sequence import SequenceLook

    config = detection_config(req)
    since, until = _since(state, req, config), req.until
    cur = state.ctx.store.read_cursor()
    try:
        with analytics_errors():
            look = SequenceLook.open(cur, detection_window(since, until, config), config)
            result = run_detection(cur, since, until, config, prior=look.prior(cur))
    finally:
        cur.close()
    return result.window, tree(result, prefix_id, metric, prefix_version, route)


class PeriodicDetector:
    """Runs detection every ``interval_s`` (a daemon thread).

    ``windows``: each run tests the latest completed evaluation window of length ``window``;
    runs until the next window completes repeat the same answer, so repetition adds no false
    alerts. ``msprt``: always-valid tests over all the data (a growing window; the p-values
    are running minima over the runs).
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
                    req = RegressionRunRequest(sequential="windows", window=self.window)
                else:
                    req = RegressionRunRequest(sequential="msprt")
                out = run_regressions(self.state, req)
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
