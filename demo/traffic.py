"""Simulated production traffic for ``prefixscope demo``: a router in front of the variants.

Every request is a real generation by the real (tiny) model under the real instrumentation,
exported over OTLP. The router sends each specialty route to its prefix; some notes arrive on
the wrong route (mis-routed), a holdout share is served by the base model as the control,
some requests fall back to the base with a reason, the radiology prefix is rolled out in a
second version on part of its route, and a multi-step agent uses planner/tool/response steps.
Online scores (TaskCompletion, JSONValidation) and user feedback (thumbs-down, escalation)
go to the server through its REST API, joined to the traces by their ids.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

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
V2_SHARE = 0.5  # share of radiology-prefix traffic on the new radiology version
#: requests per route (quick, full): /radiology carries the v2 rollout, whose comparison with
#: v1 on the radiology cohort needs ~80 scored requests a side to survive the BH family
PER_ROUTE = {
    True: {"/cardiology": 120, "/radiology": 360, "/dermatology": 120},
    False: {"/cardiology": 400, "/radiology": 800, "/dermatology": 400},
}
DEPLOYMENTS = ("deploy-a", "deploy-b")


@dataclass(slots=True)
class TrafficReport:
    requests: int = 0
    misrouted: int = 0
    fallbacks: int = 0
    agent_traces: int = 0
    scores: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)


class Router:
    """Chooses the variant for a request and runs it under ``variant(...)``."""

    def __init__(self, generate: Generate, rng: random.Random, versions: dict[str, str]) -> None:
        self.generate = generate
        self.rng = rng
        self.versions = versions  # prefix id -> current version string

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
        elif chosen == "radiology" and rng.random() < V2_SHARE:
            version, adapter = "2", "radiology-v2"
        attrs: dict[str, Any] = {semconv.DEPLOYMENT_ID: rng.choice(DEPLOYMENTS)}
        if step:
            attrs[semconv.AGENT_STEP] = step

        @trace(name=f"route {route}" if not step else f"agent.{step}")
        def handle() -> tuple[str, Any]:
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
        report.misrouted += note_spec != route.strip("/") and not step
        report.fallbacks += fallback is not None
        if ids is None:
            return
        for ev, kw in (
            (TaskCompletion(mode="codes"), {"expected": code}),
            (JSONValidation(schema=ICD_SCHEMA), {}),
        ):
            res = ev.evaluate(input=note, output=output, **kw)
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


ICD_SCHEMA = {
    "type": "object",
    "required": ["icd10"],
    "properties": {"icd10": {"type": "string", "pattern": "^[A-Z][0-9]{2}(\\.[0-9A-Z]{1,4})?$"}},
}


def simulate(
    router: Router, per_route: Mapping[str, int], agents: int, progress: Any
) -> TrafficReport:
    """Route ``per_route[route]`` requests on each route and run ``agents`` agent traces."""
    rng = router.rng
    report = TrafficReport()
    total = sum(per_route.get(r, 0) for r in ROUTE_MIX) + agents
    task = progress.add_task("production traffic", total=total)
    for route, mix in ROUTE_MIX.items():
        specs, weights = list(mix), list(mix.values())
        session = uuid.uuid4().hex[:12]
        for i in range(per_route.get(route, 0)):
            if i % 4 == 0:
                session = uuid.uuid4().hex[:12]
            spec = rng.choices(specs, weights)[0]
            cond = rng.choice(demo_data.CONDITIONS[spec])
            router.serve(route, spec, demo_data.note_for(cond, rng), cond.code, session, report)
            progress.advance(task)
    for _ in range(agents):
        spec = rng.choice(demo_data.SPECIALTIES)
        cond = rng.choice(demo_data.CONDITIONS[spec])
        note = demo_data.note_for(cond, rng)
        session = uuid.uuid4().hex[:12]
        tool = spec if rng.random() < 0.8 else rng.choice(demo_data.SPECIALTIES)

        run_agent(router, report, spec, cond.code, note, session, tool)
        report.agent_traces += 1
        progress.advance(task)
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
