"""Online evaluation from the API: ``POST /api/v1/evaluations/run`` and ``serve
--evaluate-every`` (see :mod:`prefixscope.analytics.online`)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from prefixscope.analytics.online import (
    OnlineReport,
    SpanFilter,
    builtin_evaluators,
    resolve_evaluators,
    run_online,
)
from prefixscope.analytics.query import parse_duration
from prefixscope.errors import BadRequest

from .analysis import with_cursor
from .deps import ApiState
from .models import EvaluationRunRequest

log = logging.getLogger(__name__)


def run_evaluations(state: ApiState, req: EvaluationRunRequest) -> OnlineReport:
    # The API runs built-in evaluators only: importing code named in a request is not safe.
    unknown = [n for n in req.evaluators if n not in builtin_evaluators()]
    if unknown:
        raise BadRequest(
            f"unknown evaluators {unknown}: use {sorted(builtin_evaluators())} (your own "
            "evaluators run with the prefixscope evaluate CLI)"
        )
    evs = resolve_evaluators(req.evaluators)
    flt = SpanFilter(**req.filter.model_dump())
    report = with_cursor(
        state.ctx.store,
        lambda con: run_online(
            con, evs, since=req.since, until=req.until, span_filter=flt, sample=req.sample
        ),
    )
    _count(state, report)
    return report


def _count(state: ApiState, report: OnlineReport) -> None:
    state.ctx.metrics.online_scores.labels("scored").inc(report.scored_total)
    state.ctx.metrics.online_scores.labels("skipped").inc(report.skipped_total)


class PeriodicEvaluator:
    """Every ``every``, scores the spans that started since the previous run's window (with
    an overlap of one period: late spans are caught, and already scored pairs cost nothing)."""

    def __init__(
        self, state: ApiState, every: str, evaluators: list[str], sample: float = 1.0
    ) -> None:
        self.state = state
        self.period = parse_duration(every)
        self.evaluators = resolve_evaluators(evaluators)
        self.sample = sample
        self._since: datetime | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefixscope-evaluate", daemon=True)

    def start(self) -> PeriodicEvaluator:
        self._thread.start()
        return self

    def run_once(self) -> OnlineReport:
        now = datetime.now(UTC).replace(tzinfo=None)
        since = self._since
        report = with_cursor(
            self.state.ctx.store,
            lambda con: run_online(con, self.evaluators, since=since, sample=self.sample),
        )
        self._since = now - self.period
        _count(self.state, report)
        return report

    def _run(self) -> None:
        seconds = max(1.0, self.period.total_seconds())
        while not self._stop.wait(seconds):
            try:
                r = self.run_once()
                log.info(
                    "online evaluation: %d scored, %d skipped %s",
                    r.scored_total,
                    r.skipped_total,
                    r.skipped or "",
                )
            except Exception:
                log.exception("online evaluation failed; will retry next interval")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
