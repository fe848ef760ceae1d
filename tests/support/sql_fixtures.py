"""Known traffic for the SQL-format, client and CLI tests, and the truth to check answers by.

Each trace is an HTTP root span and one model call below it (OTel GenAI ``chat``), so it is
one request whose ``span_ids`` are both spans. Variants, errors, token counts, a text
attribute with quotes, control characters and non-ASCII letters, scores on the call and
trace-level feedback are all functions of the trace's number, so a test can say what every
row must hold without asking the code under test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.api_fixtures import otlp_request, otlp_span

N_TRACES = 24
BASE_MODEL = "llama-3-8b"
START = dt.datetime(2026, 1, 15, 12, 0, 0)
NOTE = 'she said "hi"\n\ttab, comma; ünïcødé \\ back\x01slash'


@dataclass(frozen=True)
class Trace:
    k: int

    @property
    def trace_id(self) -> str:
        return f"{self.k + 1:032x}"

    @property
    def root_id(self) -> str:
        return f"{self.k + 1:08x}{1:08x}"

    @property
    def call_id(self) -> str:
        return f"{self.k + 1:08x}{2:08x}"

    @property
    def prefix_id(self) -> str | None:
        return ("radiology", "cardio", None)[self.k % 3]

    @property
    def specialty(self) -> str:
        return ("chest", "heart")[self.k % 2]

    @property
    def start(self) -> dt.datetime:
        return START + dt.timedelta(minutes=self.k, microseconds=250_000 * (self.k % 4))

    @property
    def duration_ms(self) -> float:
        return 100.0 + 10 * self.k

    @property
    def error(self) -> bool:
        return self.k % 5 == 0

    @property
    def input_tokens(self) -> int:
        return 10 + self.k

    @property
    def output_tokens(self) -> int | None:
        return None if self.k % 6 == 0 else 2 * self.k

    @property
    def score(self) -> float | None:
        """Groundedness on the model call."""
        return self.k / 100 if self.k % 2 == 0 else None

    @property
    def thumbs_down(self) -> bool:
        """Trace-level thumbs-down (no span id)."""
        return self.k % 4 == 1


TRACES = [Trace(k) for k in range(N_TRACES)]


def _spans(t: Trace) -> list[dict[str, Any]]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": BASE_MODEL,
        "base_model": BASE_MODEL,
        "route": "imaging",
        "cohort.specialty": t.specialty,
        "gen_ai.usage.input_tokens": t.input_tokens,
        "note": NOTE,
    }
    if t.output_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = t.output_tokens
    if t.prefix_id is not None:
        attrs |= {"prefix.id": t.prefix_id, "prefix.version": "3"}
    root = otlp_span(t.trace_id, t.root_id, "GET /ask", start=t.start, duration_ms=t.duration_ms)
    call = otlp_span(
        t.trace_id,
        t.call_id,
        "chat llama",
        parent=t.root_id,
        start=t.start + dt.timedelta(milliseconds=5),
        duration_ms=t.duration_ms - 10,
        attrs=attrs,
        error=t.error,
    )
    return [root, call]


def seed(base_url: str, token: str | None = None) -> None:
    """Send the traces over OTLP/HTTP JSON, then their scores and feedback (all durable when
    this returns)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as c:
        spans = [s for t in TRACES for s in _spans(t)]
        resp = c.post("/v1/traces", json=otlp_request(spans))
        assert resp.status_code == 200, resp.text
        scores = [
            {"trace_id": t.trace_id, "span_id": t.call_id, "name": "Groundedness", "value": t.score}
            for t in TRACES
            if t.score is not None
        ]
        resp = c.post("/api/v1/scores", json=scores)
        assert resp.status_code == 200, resp.text
        feedback = [
            {"trace_id": t.trace_id, "kind": "thumbs_down"} for t in TRACES if t.thumbs_down
        ]
        resp = c.post("/api/v1/feedback", json=feedback)
        assert resp.status_code == 200, resp.text


def expected_request(t: Trace) -> dict[str, Any]:
    """What the ``requests`` view must hold for trace ``t`` (docs/requests.md)."""
    return {
        "trace_id": t.trace_id,
        "span_id": t.call_id,
        "prefix_id": t.prefix_id,
        "base_model": BASE_MODEL,
        "route": "imaging",
        "error": t.error,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "span_ids": sorted([t.root_id, t.call_id]),
        "scores": None if t.score is None else {"Groundedness": t.score},
        "feedback": {"thumbs_down": 1} if t.thumbs_down else None,
        "cohort": {"specialty": t.specialty},
    }
