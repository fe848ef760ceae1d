"""Requests from the shapes third-party instrumentors really send.

``tests/fixtures/otlp/instrumentors/`` holds real exports of 22 instrumentor setups
(OpenInference, OpenLLMetry, the official GenAI instrumentation, Logfire, LiteLLM, Langfuse,
MLflow, Pydantic AI, traceAI, the Vercel AI SDK; LangChain chains and agents, two
instrumentors at once, clients over a model server), each calling a stub server a known number
of times (``MANIFEST.json``: the ground truth of each recording). Each is posted to the real
server; its requests, read back through the SQL endpoint, must be exactly the calls made:
no chain, agent, tool or wrapper span counted, no call counted twice, a streamed call that
Logfire records as two spans counted once with the stream's latency.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.paths import FIXTURES as FIXTURES_DIR
from tests.support.serverproc import ServerProcess

FIXTURES = FIXTURES_DIR / "otlp" / "instrumentors"
MANIFEST = json.loads((FIXTURES / "MANIFEST.json").read_text())["fixtures"]


def _trace_ids(body: bytes) -> list[str]:
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    return sorted(
        {
            span.trace_id.hex()
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        }
    )


def _sql(srv: ServerProcess, sql: str) -> list[list[object]]:
    resp = httpx.post(f"{srv.base_url}/api/v1/sql", json={"sql": sql}, timeout=60)
    assert resp.status_code == 200, resp.text
    rows: list[list[object]] = resp.json()["rows"]
    return rows


def test_every_recording_is_listed() -> None:
    recorded = {p.name.removesuffix(".traces.pb") for p in FIXTURES.glob("*.traces.pb")}
    assert recorded == set(MANIFEST)


def test_recorded_instrumentor_shapes_count_their_calls(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server()
    failures = []
    for name, want in sorted(MANIFEST.items()):
        body = (FIXTURES / f"{name}.traces.pb").read_bytes()
        for kind in ("logs", "traces"):
            path = FIXTURES / f"{name}.{kind}.pb"
            if path.exists():
                resp = httpx.post(
                    f"{srv.base_url}/v1/{kind}",
                    content=path.read_bytes(),
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=30,
                )
                assert resp.status_code == 200, resp.text
        ids = ", ".join(f"'{t}'" for t in _trace_ids(body))
        (row,) = _sql(
            srv,
            "SELECT count(*), count(*) FILTER (WHERE error), "
            "count(*) FILTER (WHERE input_tokens = 12 AND output_tokens = 7), "
            "count(*) FILTER (WHERE cached_tokens = 8), "
            "count(*) FILTER (WHERE ttft_ms >= 40) "
            f"FROM requests WHERE trace_id IN ({ids})",
        )
        got = dict(zip(("requests", "errors", "with_tokens", "with_cache", "with_ttft"), row))
        expected = {k: want[k] for k in got}
        if got != expected:
            failures.append(f"{name}: got {got}, recorded {expected}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("name", "minimum_ms"),
    [("logfire-openai", 90.0), ("openinference-langchain-dual", 50.0)],
)
def test_streamed_call_latency_covers_the_stream(
    start_server: Callable[..., ServerProcess], name: str, minimum_ms: float
) -> None:
    """The stub waits 50 ms before the first chunk and 10 ms between the rest: the streamed
    call's request lasts the whole stream, also where Logfire ends its request span when the
    response headers arrive (its stream-end record, in another trace, completes it)."""
    srv = start_server()
    body = (FIXTURES / f"{name}.traces.pb").read_bytes()
    resp = httpx.post(
        f"{srv.base_url}/v1/traces",
        content=body,
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    rows = _sql(srv, "SELECT max(latency_ms) FROM requests WHERE request_model = 'radiology'")
    assert float(rows[0][0]) >= minimum_ms  # type: ignore[arg-type]
