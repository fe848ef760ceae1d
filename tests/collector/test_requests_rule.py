"""The request rule (``collector/spans/requests.py``) on hand-built traces: each shape states what
its requests are, and the test compares with that, not with another query."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from prefixscope.collector.spans.model import SPAN_ARROW_SCHEMA
from prefixscope.collector.spans.request_columns import SKELETON_COLUMNS
from prefixscope.collector.spans.requests import resolve

T0 = dt.datetime(2026, 1, 1)


def span(
    trace: str, sid: str, parent: str | None = None, start: float = 0, end: float = 10, **kw: Any
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SKELETON_COLUMNS)
    row.update(
        trace_id=trace,
        span_id=sid,
        parent_span_id=parent,
        name=sid,
        kind="INTERNAL",
        service_name="app",
        scope_name="app",
        start_time=T0 + dt.timedelta(milliseconds=start),
        end_time=T0 + dt.timedelta(milliseconds=end),
        duration_ms=float(end - start),
        status_code="UNSET",
    )
    row.update(kw)
    return row


def requests_of(*rows: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schema = pa.schema([SPAN_ARROW_SCHEMA.field(c) for c in SKELETON_COLUMNS])
    out = resolve(pa.Table.from_pylist(list(rows), schema=schema)).to_pylist()
    return {r["span_id"]: r for r in out}


def test_sdk_route_scope_and_its_call_are_one_request() -> None:
    """HTTP root (base_model from the SDK defaults) > route span opening a variant scope >
    DB span + the model call: one request, the call's latency, the route's as route latency,
    the cohort from the scope, every span judged for it."""
    scope = {"variant_scope": "s1", "prefix_id": "p1", "route": "/r", "base_model": "m"}
    got = requests_of(
        span("t", "http", None, 0, 100, base_model="m"),
        span("t", "route", "http", 5, 95, cohort='{"k": "v"}', **scope),
        span("t", "db", "route", 6, 10, **scope),
        span("t", "call", "route", 10, 90, operation="text_completion", input_tokens=5, **scope),
    )
    assert list(got) == ["call"]
    r = got["call"]
    assert (r["latency_ms"], r["route_latency_ms"], r["scope_span_id"]) == (80.0, 90.0, "route")
    assert (r["prefix_id"], r["route"], r["cohort"], r["input_tokens"]) == (
        "p1",
        "/r",
        '{"k": "v"}',
        5,
    )
    assert sorted(r["span_ids"]) == ["call", "db", "http", "route"]
    assert r["last_in_trace"] is True


def test_spans_without_a_model_call_are_no_requests() -> None:
    """An HTTP handler and a DB span carrying base_model (resource, SDK defaults), and a
    chain with summed tokens: nothing is a request."""
    got = requests_of(
        span("t", "http", None, 0, 10, base_model="m", prefix_id="p"),
        span("t", "db", "http", 1, 2, base_model="m"),
        span("u", "agent", None, 0, 10, operation="AGENT", input_tokens=30, request_model="m"),
        span("u", "tool", "agent", 1, 2, operation="TOOL"),
    )
    assert got == {}


def test_client_over_server_span_is_one_request() -> None:
    got = requests_of(
        span("t", "client", None, 0, 50, operation="chat", request_model="m", kind="CLIENT"),
        span("t", "server", "client", 2, 48, kind="SERVER", input_tokens=7, ttft_ms=4.0),
    )
    assert list(got) == ["client"]
    assert (got["client"]["latency_ms"], got["client"]["input_tokens"]) == (50.0, 7)
    assert got["client"]["ttft_ms"] == 4.0


def test_a_batch_container_is_no_request_but_its_calls_are() -> None:
    got = requests_of(
        span("t", "batch", None, 0, 50, operation="text_completion", input_tokens=30),
        *(span("t", f"c{i}", "batch", 0, 20 + i, operation="text_completion") for i in range(3)),
    )
    assert sorted(got) == ["c0", "c1", "c2"]


def test_failed_attempts_below_a_call_are_one_request() -> None:
    """A retry wrapper (OpenInference LiteLLM ``completion_with_retries``): sequential calls
    of one model, all but the last failed."""
    got = requests_of(
        span("t", "retry", None, 0, 100, operation="LLM", request_model="m"),
        span("t", "a1", "retry", 0, 20, operation="LLM", request_model="m", status_code="ERROR"),
        span("t", "a2", "retry", 30, 90, operation="LLM", request_model="m", input_tokens=4),
    )
    assert list(got) == ["retry"]
    assert got["retry"]["input_tokens"] == 4


def test_scope_without_an_instrumented_call_is_one_request() -> None:
    got = requests_of(
        span("t", "handler", None, 0, 30, route="/x", variant_scope="s9"),
        span("t", "q", "handler", 1, 2, route="/x", variant_scope="s9"),
    )
    assert list(got) == ["handler"]
    assert (got["handler"]["latency_ms"], got["handler"]["route_latency_ms"]) == (30.0, 30.0)


def test_scope_with_several_calls_gives_its_latency_and_judgements_to_the_last() -> None:
    s = {"variant_scope": "s", "prefix_id": "p"}
    got = requests_of(
        span("t", "route", None, 0, 100, **s),
        span("t", "c1", "route", 1, 40, operation="chat", **s),
        span("t", "c2", "route", 50, 90, operation="chat", **s),
    )
    assert sorted(got) == ["c1", "c2"]
    assert got["c1"]["route_latency_ms"] is None and got["c2"]["route_latency_ms"] == 100.0
    assert got["c1"]["span_ids"] == ["c1"]
    assert sorted(got["c2"]["span_ids"]) == ["c2", "route"]


def test_agent_with_two_prefixes_holds_two_requests() -> None:
    got = requests_of(
        span("t", "agent", None, 0, 100, operation="invoke_agent", request_model="m"),
        span("t", "plan", "agent", 0, 40, prefix_id="A", variant_scope="a"),
        span("t", "pcall", "plan", 1, 39, prefix_id="A", variant_scope="a", operation="chat"),
        span("t", "resp", "agent", 50, 99, prefix_id="B", variant_scope="b"),
        span("t", "rcall", "resp", 51, 98, prefix_id="B", variant_scope="b", operation="chat"),
    )
    assert {k: v["prefix_id"] for k, v in got.items()} == {"pcall": "A", "rcall": "B"}
    # the agent span is judged for the trace's last request
    assert "agent" in got["rcall"]["span_ids"] and got["rcall"]["last_in_trace"]
    assert not got["pcall"]["last_in_trace"]


def test_chain_over_llm_counts_the_llm() -> None:
    got = requests_of(
        span("t", "chain", None, 0, 20, operation="CHAIN", input_tokens=9),
        span("t", "llm", "chain", 1, 19, operation="LLM", input_tokens=9),
        span("t", "llm", "chain", 1, 19, operation="LLM", input_tokens=9),  # a retried export
    )
    assert list(got) == ["llm"]


def test_explicit_request_mark_wins_over_a_container() -> None:
    got = requests_of(
        span("t", "mine", None, 0, 100, operation="request"),
        span("t", "c1", "mine", 1, 40, operation="chat"),
        span("t", "c2", "mine", 30, 90, operation="chat"),
    )
    assert list(got) == ["mine"]


def test_logfire_stream_record_completes_its_request() -> None:
    """The request span ends at the headers; the stream's end record (another trace) carries
    the usage: one request, latency to the stream's end."""
    lf = {"service_name": "svc", "scope_name": "logfire.openai", "request_model": "m"}
    got = requests_of(
        span("t1", "req", None, 0, 2, operation="chat", **lf),
        span(
            "t2",
            "end",
            None,
            95,
            95,
            name="streaming response from {request_data[model]!r} took {duration:.2f}s",
            operation="log",
            input_tokens=12,
            **lf,
        ),
    )
    assert list(got) == ["req"]
    assert (got["req"]["latency_ms"], got["req"]["input_tokens"]) == (95.0, 12)


def test_a_call_recorded_twice_in_two_traces_is_one_request() -> None:
    """OpenInference LangChain does not enter its spans' context: the OpenAI client span of
    the same call starts a trace of its own (other scope, inside it in time)."""
    got = requests_of(
        span("t1", "lc", None, 0, 33, operation="LLM", request_model="m", scope_name="oi.lc"),
        span(
            "t2",
            "oai",
            None,
            5,
            28,
            operation="LLM",
            request_model="m",
            scope_name="oi.openai",
            ttft_ms=9.0,
        ),
    )
    assert list(got) == ["lc"]
    assert got["lc"]["ttft_ms"] == 9.0


def test_a_model_servers_span_without_the_clients_context_is_the_clients_call() -> None:
    got = requests_of(
        span(
            "t1",
            "client",
            None,
            0,
            100,
            operation="chat",
            request_model="m",
            kind="CLIENT",
            input_tokens=12,
            output_tokens=7,
        ),
        span(
            "t2",
            "server",
            None,
            3,
            95,
            service_name="vllm",
            kind="SERVER",
            input_tokens=12,
            output_tokens=7,
            ttft_ms=40.0,
        ),
    )
    assert list(got) == ["client"]
    assert got["client"]["ttft_ms"] == 40.0


@pytest.mark.parametrize("cycle", [True, False])
def test_hostile_parent_links_do_not_hang(cycle: bool) -> None:
    rows = [span("t", "a", "b" if cycle else "a", 0, 5, operation="chat"), span("t", "b", "a")]
    got = requests_of(*rows)
    assert len(got) <= 2
