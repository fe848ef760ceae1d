"""The project's reference OTLP workload, the one every benchmark and figure here uses.

``make_request(n_spans=512, seed=k)`` builds one ``ExportTraceServiceRequest`` shaped like a
busy LLM gateway: one resource with 6 attributes, one instrumentation scope, traces of 8
spans (an ``agent.run`` root and 7 ``ChatCompletion`` children), 15 attributes per span
(``prefix.id`` over 200 prefixes, ``base_model``, ``route``, ``prompt.version``, token counts
in both the OpenInference and the GenAI spellings, a cohort, a user id, ...), about 536 bytes
per span on the wire, 2 % error status. Distinct seeds give distinct trace and span ids; the
same seed gives the same bytes. It is equivalent to the workload behind the figures quoted in
the project's issues (same shape, sizes and distributions), so figures measured with either
compare.

Usage (from the repository root, which the bench scripts put on ``sys.path``)::

    from bench.workload import make_request, make_payloads
"""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

SPANS_PER_REQUEST = 512
SPANS_PER_TRACE = 8
N_PREFIXES = 200
ROUTES = ("/chat", "/summarize", "/classify", "/extract", "/rag/answer", "/agent/step",
          "/embed", "/rerank")  # fmt: skip
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b", "mistral-large")
PROMPT_VERSIONS = tuple(f"v{i}" for i in range(1, 13))
COHORTS = ("control", "treatment-a", "treatment-b")
#: First span start of seed 0; each seed starts one second later.
T0_NS = 1_700_000_000_000_000_000


def _attr(key: str, value: str | int | float) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def _resource_attributes(seed: int) -> list[KeyValue]:
    return [
        _attr("service.name", "llm-gateway"),
        _attr("service.version", "1.42.0"),
        _attr("deployment.environment", "prod"),
        _attr("host.name", f"gw-{seed % 16:02d}"),
        _attr("telemetry.sdk.language", "python"),
        _attr("telemetry.sdk.version", "1.45.2"),
    ]


def _span_attributes(rnd: random.Random, root: bool) -> list[KeyValue]:
    prompt = rnd.randint(50, 4000)
    completion = rnd.randint(10, 1200)
    return [
        _attr("prefix.id", f"pfx-{rnd.randrange(N_PREFIXES):04d}"),
        _attr("base_model", rnd.choice(MODELS)),
        _attr("route", rnd.choice(ROUTES)),
        _attr("prompt.version", rnd.choice(PROMPT_VERSIONS)),
        _attr("llm.token_count.prompt", prompt),
        _attr("llm.token_count.completion", completion),
        _attr("llm.token_count.total", prompt + completion),
        _attr("gen_ai.usage.input_tokens", prompt),
        _attr("gen_ai.usage.output_tokens", completion),
        _attr("gen_ai.system", "openai"),
        _attr("gen_ai.request.model", rnd.choice(MODELS)),
        _attr("gen_ai.request.temperature", 0.7),
        _attr("openinference.span.kind", "AGENT" if root else "LLM"),
        _attr("cohort.segment", rnd.choice(COHORTS)),
        _attr("user.id", f"user-{rnd.randrange(100000)}"),
    ]


def make_request(
    n_spans: int = SPANS_PER_REQUEST, seed: int = 0, t0_ns: int | None = None
) -> ExportTraceServiceRequest:
    """One request of ``n_spans`` spans (one resource, one scope), deterministic in ``seed``."""
    rnd = random.Random(seed)
    start0 = T0_NS + seed * 1_000_000_000 if t0_ns is None else t0_ns
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(_resource_attributes(seed))
    scope_spans = rs.scope_spans.add()
    scope_spans.scope.name = "openinference.instrumentation.openai"
    scope_spans.scope.version = "0.1.0"
    trace_id = b""
    root_id = b""
    for i in range(n_spans):
        root = i % SPANS_PER_TRACE == 0
        if root:
            trace_id = rnd.getrandbits(128).to_bytes(16, "big")
        span = scope_spans.spans.add()
        span.trace_id = trace_id
        span.span_id = rnd.getrandbits(64).to_bytes(8, "big")
        if root:
            root_id = span.span_id
        else:
            span.parent_span_id = root_id
        span.name = "agent.run" if root else "ChatCompletion"
        span.kind = Span.SPAN_KIND_INTERNAL if root else Span.SPAN_KIND_CLIENT
        start = start0 + i * 1_000_000
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + int(rnd.lognormvariate(19.5, 0.8))  # ~300 ms median
        span.attributes.extend(_span_attributes(rnd, root))
        ok = rnd.random() > 0.02
        span.status.code = Status.STATUS_CODE_OK if ok else Status.STATUS_CODE_ERROR
    return req


def make_payloads(n_requests: int, n_spans: int = SPANS_PER_REQUEST, seed0: int = 0) -> list[bytes]:
    """``n_requests`` serialized requests with seeds ``seed0 ..``."""
    return [make_request(n_spans, seed=seed0 + k).SerializeToString() for k in range(n_requests)]
