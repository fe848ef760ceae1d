"""Simulated production traffic for ``prefixscope demo``: a router in front of the variants.

Every request is a real generation by the real (tiny) model under the real instrumentation,
exported over OTLP. The router sends each specialty route to its prefix; some notes arrive on
the wrong route (mis-routed), a holdout share is served by the base model as the control,
some requests fall back to the base with a reason, the radiology prefix is rolled out in a
second version on part of its route, and a multi-step agent uses planner/tool/response steps.
Online scores (TaskCompletion, JSONValidation) and user feedback (thumbs-down, escalation)
go to the server through its REST API, joined to the traces by their ids.

**Simulated time.** The generations take about a minute; the story they tell takes days. Each
request is given a time on a :class:`Timeline` (a golden-set evaluation day, then
:data:`DAYS` days of production traffic with the radiology v2 rollout a third of the way in),
and :class:`SimulatedClock` moves its trace's spans there on their way to the exporter: start,
end and event times shifted by one offset per trace, so durations, TTFT and the span tree are
the real ones. Everything else (OTLP, ingest, request resolution, analytics) is unchanged.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from prefixscope import semconv
from prefixscope.demo import data as demo_data

Generate = Callable[[str, str], str]

#: route -> (share of notes per true specialty). Off-diagonal shares are mis-routed notes.
ROUTE_MIX: dict[str, dict[str, float]] = {
    "/cardiology": {"cardiology": 0.75, "dermatology": 0.25},
    "/radiology": {"radiology": 0.6, "cardiology": 0.4},
    "/dermatology": {"dermatology": 0.9, "radiology": 0.1},
}
HOLDOUT = 0.3  # share of each route served by the base model as the control group
FALLBACK = 0.04  # requests that fall back to the base model (adapter not ready)
#: share of radiology-prefix traffic on the new radiology version once it is rolled out; the
#: rollout is at ROLLOUT_AT of the production days, so v1 and v2 serve about as many requests
#: over the whole run ((1 - 1/3) * 0.75 = 1/2) and the v2-vs-v1 comparison keeps its power
V2_SHARE = 0.75
ROLLOUT_AT = 1 / 3
DAYS = 6  # days of production traffic (within the dashboard's default 7-day window)
EVAL_HOURS = 12  # the golden-set evaluation before production traffic starts
#: requests per route (quick, full): /radiology carries the v2 rollout, whose comparison with
#: v1 on the radiology cohort needs ~80 scored requests a side to survive the BH family
PER_ROUTE = {
    True: {"/cardiology": 120, "/radiology": 360, "/dermatology": 120},
    False: {"/cardiology": 400, "/radiology": 800, "/dermatology": 400},
}
DEPLOYMENTS = ("deploy-a", "deploy-b")


@dataclass(frozen=True, slots=True)
class Timeline:
    """The demo's simulated days (naive UTC, as the store keeps times)."""

    evaluation: datetime  # the golden-set replays run from here ...
    launch: datetime  # ... until production traffic starts here
    rollout: datetime  # radiology v2 starts taking V2_SHARE of its prefix's traffic
    end: datetime  # the last production request, a little before the demo started

    @classmethod
    def ending(cls, end: datetime, days: float = DAYS) -> Timeline:
        launch = end - timedelta(days=days)
        return cls(
            evaluation=launch - timedelta(hours=EVAL_HOURS),
            launch=launch,
            rollout=launch + (end - launch) * ROLLOUT_AT,
            end=end,
        )

    @classmethod
    def before_now(cls, days: float = DAYS) -> Timeline:
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        return cls.ending(now - timedelta(minutes=10), days)

    def spread(self, n: int, rng: random.Random, start: datetime, end: datetime) -> list[datetime]:
        """``n`` sorted times in [start, end): evenly spaced, jittered within their slot."""
        step = (end - start) / max(n, 1)
        return [start + step * (i + rng.random()) for i in range(n)]

    def to_dict(self) -> dict[str, str]:
        return {k: getattr(self, k).isoformat() for k in ("evaluation", "launch", "rollout", "end")}


class SimulatedClock(SpanExporter):
    """An exporter in front of the OTLP one that moves each trace to its simulated time.

    :meth:`pin` gives the current trace its time (the first pin of a trace wins: an agent's
    steps share their trace's); its spans are exported shifted by (simulated - real) at the
    pin. Traces never pinned are exported as they are.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._offsets: dict[int, int] = {}
        self._lock = threading.Lock()

    def pin(self, when: datetime) -> None:
        from opentelemetry import trace as otel_trace

        ctx = otel_trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return
        offset = int(when.replace(tzinfo=UTC).timestamp() * 1e9) - time.time_ns()
        with self._lock:
            self._offsets.setdefault(ctx.trace_id, offset)

    def _shift(self, span: ReadableSpan) -> ReadableSpan:
        ctx = span.get_span_context()
        with self._lock:
            offset = self._offsets.get(ctx.trace_id) if ctx is not None else None
        if not offset:
            return span

        def at(t: int | None) -> int | None:
            return None if t is None else t + offset

        return ReadableSpan(
            name=span.name,
            context=ctx,
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes,
            events=[Event(e.name, e.attributes, at(e.timestamp)) for e in span.events],
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=at(span.start_time),
            end_time=at(span.end_time),
            instrumentation_scope=span.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self._shift(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass(slots=True)
class TrafficReport:
    requests: int = 0
    misrouted: int = 0
    fallbacks: int = 0
    agent_traces: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    #: the generator's own record: "route|prefix@version|note specialty|before or after the
    #: rollout" -> [requests, sum of their TaskCompletion scores]
    truth: dict[str, list[float]] = field(default_factory=dict)
    scores: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)


class Router:
    """Chooses the variant for a request and runs it under ``variant(...)``."""

    def __init__(
        self,
        generate: Generate,
        rng: random.Random,
        versions: dict[str, str],
        clock: SimulatedClock | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        self.generate = generate
        self.rng = rng
        self.versions = versions  # prefix id -> current version string
        self.clock = clock
        self.timeline = timeline
        self.now: datetime | None = None  # the simulated time of the request being served

    def serve(
        self,
        route: str,
        note_spec: str,
        note: str,
        code: str,
        session: str,
        report: TrafficReport,
        step: str | None = None,
        prefix: str | None = None,
    ) -> None:
        from prefixscope.analytics.evaluators import JSONValidation, TaskCompletion
        from prefixscope.instrumentation import current_ids, record_fallback, trace, variant

        rng = self.rng
        chosen = prefix or route.strip("/")
        version = self.versions.get(chosen)
        fallback = None
        adapter = chosen
        if prefix is None and rng.random() < HOLDOUT:
            chosen, version, adapter = semconv.BASE_PREFIX_ID, None, semconv.BASE_PREFIX_ID
        elif prefix is None and rng.random() < FALLBACK:
            fallback = "adapter_not_ready"
            chosen, version, adapter = semconv.BASE_PREFIX_ID, None, semconv.BASE_PREFIX_ID
        elif chosen == "radiology" and self.rolled_out() and rng.random() < V2_SHARE:
            version, adapter = "2", "radiology-v2"
        attrs: dict[str, Any] = {semconv.DEPLOYMENT_ID: rng.choice(DEPLOYMENTS)}
        if step:
            attrs[semconv.AGENT_STEP] = step

        @trace(name=f"route {route}" if not step else f"agent.{step}")
        def handle() -> tuple[str, Any]:
            if self.clock is not None and self.now is not None:
                self.clock.pin(self.now)
            if fallback:
                record_fallback(fallback)
            return self.generate(demo_data.prompt(note), adapter), current_ids()

        with variant(
            prefix_id=chosen,
            prefix_version=version,
            route=route,
            prompt_version="v1",
            session_id=session,
            cohort={"specialty": note_spec},
            attributes=attrs,
        ):
            output, ids = handle()
        report.requests += 1
        report.by_version[f"{chosen}@{version}" if version else chosen] += 1
        report.misrouted += note_spec != route.strip("/") and not step
        report.fallbacks += fallback is not None
        if ids is None:
            return
        for ev, kw in (
            (TaskCompletion(mode="codes"), {"expected": code}),
            (JSONValidation(schema=ICD_SCHEMA), {}),
        ):
            res = ev.evaluate(input=note, output=output, **kw)
            if ev.name == "TaskCompletion" and res.score is not None:
                phase = "after" if self.timeline is not None and self.rolled_out() else "before"
                cell = report.truth.setdefault(
                    f"{route}|{chosen}@{version or ''}|{note_spec}|{phase}", [0, 0.0]
                )
                cell[0] += 1
                cell[1] += float(res.score)
            report.scores.append(
                {
                    "trace_id": ids.trace_id,
                    "span_id": ids.span_id,
                    "name": ev.name,
                    "value": res.score,
                    "label": res.label,
                    "reason": res.reason,
                    "source": "online",
                }
            )
        wrong = code not in output
        if rng.random() < (0.45 if wrong else 0.04):
            report.feedback.append(
                {
                    "trace_id": ids.trace_id,
                    "kind": "thumbs_down",
                    "comment": "wrong code" if wrong else None,
                }
            )
        if wrong and rng.random() < 0.15:
            report.feedback.append(
                {"trace_id": ids.trace_id, "kind": "escalation", "comment": "sent to a human coder"}
            )

    def rolled_out(self) -> bool:
        """radiology v2 serves traffic: after the timeline's rollout (always without one)."""
        if self.timeline is None or self.now is None:
            return True
        return self.now >= self.timeline.rollout


ICD_SCHEMA = {
    "type": "object",
    "required": ["icd10"],
    "properties": {"icd10": {"type": "string", "pattern": "^[A-Z][0-9]{2}(\\.[0-9A-Z]{1,4})?$"}},
}


def simulate(
    router: Router, per_route: Mapping[str, int], agents: int, progress: Any
) -> TrafficReport:
    """Route ``per_route[route]`` requests on each route and run ``agents`` agent traces,
    interleaved in a random order over the router's timeline (when it has one)."""
    rng = router.rng
    report = TrafficReport()
    jobs: list[str | None] = [r for r in ROUTE_MIX for _ in range(per_route.get(r, 0))]
    jobs += [None] * agents  # None: an agent trace
    rng.shuffle(jobs)
    tl = router.timeline
    times = tl.spread(len(jobs), rng, tl.launch, tl.end) if tl is not None else []
    task = progress.add_task("production traffic", total=len(jobs))
    sessions: dict[str, tuple[str, int]] = {}
    for k, route in enumerate(jobs):
        router.now = times[k] if times else None
        if route is None:
            spec = rng.choice(demo_data.SPECIALTIES)
            cond = rng.choice(demo_data.CONDITIONS[spec])
            note = demo_data.note_for(cond, rng)
            tool = spec if rng.random() < 0.8 else rng.choice(demo_data.SPECIALTIES)
            run_agent(router, report, spec, cond.code, note, uuid.uuid4().hex[:12], tool)
            report.agent_traces += 1
        else:
            session, used = sessions.get(route, ("", 4))
            if used >= 4:  # four requests to a session
                session, used = uuid.uuid4().hex[:12], 0
            sessions[route] = (session, used + 1)
            mix = ROUTE_MIX[route]
            spec = rng.choices(list(mix), list(mix.values()))[0]
            cond = rng.choice(demo_data.CONDITIONS[spec])
            router.serve(route, spec, demo_data.note_for(cond, rng), cond.code, session, report)
        progress.advance(task)
    router.now = None
    return report


def run_agent(
    router: Router, report: TrafficReport, spec: str, code: str, note: str, session: str, tool: str
) -> None:
    """One agent trace: planner (base) -> tool (a specialty prefix) -> response (base)."""
    from prefixscope.instrumentation import trace

    @trace(name="agent.run")
    def _run() -> None:
        for step, prefix in (("planner", "base"), ("tool", tool), ("response", "base")):
            router.serve("/agent", spec, note, code, session, report, step, prefix)

    _run()


def post_in_batches(
    client: httpx.Client, path: str, rows: list[dict[str, Any]], size: int = 500
) -> int:
    sent = 0
    for i in range(0, len(rows), size):
        resp = client.post(path, json=rows[i : i + size])
        resp.raise_for_status()
        sent += len(rows[i : i + size])
    return sent
