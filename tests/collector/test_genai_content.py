"""Message text, span events and links, the OTLP logs receiver and online evaluation.

The real OTel SDK exporters (HTTP and gRPC) against the real server; hostile log bodies get a
precise 4xx; the message extraction is pinned per convention, envelope never used.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode

from prefixscope.collector.decoding.common import Limits
from prefixscope.collector.decoding.logs import decode_logs_json, decode_logs_protobuf
from prefixscope.collector.spans.messages import extract
from prefixscope.errors import BadRequest
from tests.support.api_fixtures import sql_dicts as _sql
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess

ROOT = REPO_ROOT
ANSWER = '{"icd10": "I21.9"}'


# -- message text, per convention ---------------------------------------------------------


def test_openinference_messages_beat_the_json_envelope() -> None:
    attrs = {
        "input.value": '{"model": "x", "messages": [...]}',
        "input.mime_type": "application/json",
        "output.value": '{"id": "chatcmpl-1", "choices": [{"message": {"content": "no"}}]}',
        "output.mime_type": "application/json",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "be brief",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "code this",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": ANSWER,
    }
    assert extract(attrs) == extract(attrs).__class__("code this", ANSWER, "openinference")
    # without the messages, a JSON envelope is never taken as the answer
    envelope_only = {k: v for k, v in attrs.items() if not k.startswith("llm.")}
    assert extract(envelope_only).output is None


def test_openinference_content_parts() -> None:
    attrs = {
        "llm.output_messages.0.message.contents.0.message_content.text": "part one",
        "llm.output_messages.0.message.contents.1.message_content.text": "part two",
    }
    assert extract(attrs).output == "part one\npart two"


def test_genai_structured_parts_as_text_or_structured_value() -> None:
    msgs = [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}]
    for value in (json.dumps(msgs), msgs):
        got = extract(
            {
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "q?"}]}]
                ),
                "gen_ai.output.messages": value,
            }
        )
        assert (got.input, got.output, got.source) == ("q?", ANSWER, "genai")


def test_openllmetry_legacy_indexed_prompt_and_completion() -> None:
    got = extract(
        {
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "first",
            "gen_ai.prompt.1.role": "assistant",
            "gen_ai.prompt.1.content": "reply",
            "gen_ai.prompt.2.role": "user",
            "gen_ai.prompt.2.content": "second",
            "gen_ai.completion.0.content": ANSWER,
        }
    )
    assert (got.input, got.output, got.source) == ("second", ANSWER, "openllmetry")


def test_log_events_and_own_plain_values() -> None:
    events = [
        ("gen_ai.system.message", {"content": "sys"}),
        ("gen_ai.user.message", {"content": "question"}),
        ("gen_ai.choice", {"index": 1, "message": {"content": "second choice"}}),
        ("gen_ai.choice", {"index": 0, "message": {"content": ANSWER}}),
    ]
    got = extract({}, events)
    assert (got.input, got.output, got.source) == ("question", ANSWER, "genai_log_events")
    own = extract({"input.value": "q", "output.value": "plain answer"})
    assert (own.input, own.output, own.source) == ("q", "plain answer", "value")
    assert extract({"output.value": "   "}).output is None


# -- span events, links and scope from the real SDK --------------------------------------


def test_sdk_events_links_exceptions_and_scope(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server()
    provider = TracerProvider(resource=Resource.create({"service.name": "events-test"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{srv.base_url}/v1/traces"))
    )
    tracer = provider.get_tracer("my.instrumentation", "1.2.3")
    with tracer.start_as_current_span("upstream") as up:
        up_ctx = up.get_span_context()
    with tracer.start_as_current_span("generate", links=[Link(up_ctx, {"why": "batch"})]) as sp:
        sp.set_attribute("gen_ai.request.model", "m")
        sp.add_event("First Token Stream Event")
        try:
            raise ValueError("adapter weights missing")
        except ValueError as exc:
            sp.record_exception(exc)
            sp.set_status(Status(StatusCode.ERROR, "adapter weights missing"))
    provider.shutdown()
    rows = _sql(
        srv,
        "SELECT trace_id, span_id, events, links, scope_name, scope_version, ttft_ms, "
        "status_code FROM spans WHERE name = 'generate'",
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["scope_name"], row["scope_version"]) == ("my.instrumentation", "1.2.3")
    events = json.loads(row["events"])
    assert [e["name"] for e in events] == ["First Token Stream Event", "exception"]
    exc = events[1]["attributes"]
    assert exc["exception.type"] == "ValueError"
    assert exc["exception.message"] == "adapter weights missing"
    assert events[0]["time"].endswith("Z") and row["ttft_ms"] is not None
    assert row["ttft_ms"] >= 0
    links = json.loads(row["links"])
    assert links == [
        {
            "trace_id": f"{up_ctx.trace_id:032x}",
            "span_id": f"{up_ctx.span_id:016x}",
            "attributes": {"why": "batch"},
        }
    ]
    # the trace view shows the exception event
    html = httpx.get(f"{srv.base_url}/api/v1/dashboard/trace/{row['trace_id']}", timeout=30)
    assert html.status_code == 200
    assert "event: exception" in html.text and "adapter weights missing" in html.text


# -- the OTLP logs receiver ---------------------------------------------------------------


def _log_request(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "app"}}]
                },
                "scopeLogs": [{"scope": {"name": "s"}, "logRecords": records}],
            }
        ]
    }


def _record(event: str | None, body: Any, span: str = "ab" * 8) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "timeUnixNano": str(time.time_ns()),
        "traceId": "cd" * 16,
        "spanId": span,
        "body": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": body}}]}},
    }
    if event:
        rec["eventName"] = event
    return rec


def test_logs_keep_genai_events_count_the_rest_and_dedupe_retries(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server()
    body = _log_request(
        [
            _record("gen_ai.user.message", "hello?"),
            _record(None, "GET /health 200"),  # an ordinary application log
            {
                **_record(None, "old style"),
                "attributes": [{"key": "event.name", "value": {"stringValue": "gen_ai.choice"}}],
            },
        ]
    )
    raw = json.dumps(body).encode()
    for _ in range(2):  # a retried export stores nothing twice
        resp = httpx.post(
            f"{srv.base_url}/v1/logs",
            content=gzip.compress(raw),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
    rows = _sql(srv, "SELECT event_name, span_id FROM log_events ORDER BY event_name")
    assert rows == [
        {"event_name": "gen_ai.choice", "span_id": "ab" * 8},
        {"event_name": "gen_ai.user.message", "span_id": "ab" * 8},
    ]
    metrics = httpx.get(f"{srv.base_url}/metrics", timeout=30).text
    assert 'prefixscope_log_records_total{kept="false"} 2.0' in metrics
    assert 'prefixscope_log_records_total{kept="true"} 4.0' in metrics


@pytest.mark.parametrize(
    ("body", "ctype", "status", "needle"),
    [
        (b"\xff\x00garbage", "application/x-protobuf", 400, "ExportLogsServiceRequest"),
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"resourceLogs": {}}', "application/json", 400, "expected an array"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}',
            "application/json",
            400,
            "not a hex id",
        ),
        (b"{}", "text/plain", 415, "unsupported Content-Type"),
    ],
)
def test_hostile_log_bodies_get_a_precise_4xx(
    start_server: Callable[..., ServerProcess],
    body: bytes,
    ctype: str,
    status: int,
    needle: str,
) -> None:
    srv = start_server("--max-body-bytes", "65536", "--max-decompressed-bytes", "131072")
    resp = httpx.post(
        f"{srv.base_url}/v1/logs", content=body, headers={"Content-Type": ctype}, timeout=30
    )
    assert resp.status_code == status and needle in resp.text, resp.text
    bomb = gzip.compress(b"\0" * 10_000_000)
    resp = httpx.post(
        f"{srv.base_url}/v1/logs",
        content=bomb,
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        timeout=30,
    )
    assert resp.status_code == 413, resp.text
    assert httpx.get(f"{srv.base_url}/healthz", timeout=10).status_code == 200


def test_logs_need_the_ingest_token(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server("--token", "ingest-secret")
    payload = json.dumps(_log_request([_record("gen_ai.user.message", "x")]))
    headers = {"Content-Type": "application/json"}
    assert (
        httpx.post(f"{srv.base_url}/v1/logs", content=payload, headers=headers).status_code == 401
    )
    ok = httpx.post(
        f"{srv.base_url}/v1/logs",
        content=payload,
        headers={**headers, "Authorization": "Bearer ingest-secret"},
    )
    assert ok.status_code == 200


FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(st.binary(max_size=512))
def test_log_decoders_raise_only_bad_request(data: bytes) -> None:
    for decode in (decode_logs_protobuf, decode_logs_json):
        with contextlib.suppress(BadRequest):
            decode(data, Limits())


def test_sdk_log_exporters_over_http_and_grpc(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server()
    from opentelemetry._logs import LogRecord

    for exporter in (
        HttpLogs(endpoint=f"{srv.base_url}/v1/logs"),
        GrpcLogs(endpoint=srv.grpc_target, insecure=True),
    ):
        provider = LoggerProvider(resource=Resource.create({"service.name": "sdk"}))
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        logger = provider.get_logger("genai")
        logger.emit(
            LogRecord(
                timestamp=time.time_ns(),
                trace_id=0xCD,
                span_id=0xAB,
                body={"index": 0, "message": {"content": ANSWER}},
                event_name="gen_ai.choice",
            )
        )
        provider.shutdown()
    rows = _sql(srv, "SELECT event_name, trace_id, span_id, body FROM log_events")
    assert len(rows) == 2, rows
    for row in rows:
        assert row["event_name"] == "gen_ai.choice"
        assert (row["trace_id"], row["span_id"]) == (f"{0xCD:032x}", f"{0xAB:016x}")
        assert json.loads(row["body"])["message"]["content"] == ANSWER


# -- online evaluation: CLI, sampling, periodic --------------------------------------------


def _otlp_chat(i: int, answer: str | None) -> dict[str, Any]:
    attrs = [{"key": "gen_ai.request.model", "value": {"stringValue": "m"}}]
    if answer is not None:
        attrs.append({"key": "output.value", "value": {"stringValue": answer}})
    now = time.time_ns()
    return {
        "traceId": f"{i + 1:032x}",
        "spanId": f"{i + 1:016x}",
        "name": "chat",
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 1_000_000),
        "attributes": attrs,
    }


def _post_chats(srv: ServerProcess, n: int) -> None:
    spans = [_otlp_chat(i, ANSWER if i % 3 else None) for i in range(n)]
    req = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=req, timeout=30)
    assert resp.status_code == 200


def test_evaluate_cli_sampling_and_idempotence(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server()
    _post_chats(srv, 300)  # a third have no output text
    srv.stop()
    cli = [sys.executable, "-m", "prefixscope.cli", "evaluate", "--data-dir", str(srv.data_dir)]

    def run(*extra: str) -> dict[str, Any]:
        done = subprocess.run(
            [*cli, "--evaluators", "JSONValidation", "--json", *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        out: dict[str, Any] = json.loads(done.stdout)
        return out

    half = run("--sample", "0.5")
    assert half["requests"] == 300 and 100 < half["sampled_out"] < 200, half
    assert half["skipped_by_reason"]["no_output_text"] + half["scored"] == 300 - half["sampled_out"]
    full = run()
    # the half sample was scored already: the same spans are in any sample (hash of the id)
    assert full["already_scored"] == half["scored"] and full["scored"] == 200 - half["scored"]
    assert run()["scored"] == 0
    bad = subprocess.run(
        [*cli, "--evaluators", "NoSuchEvaluator"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "unknown evaluator" in bad.stderr


def test_api_refuses_evaluators_it_would_have_to_import(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server()
    resp = httpx.post(
        f"{srv.base_url}/api/v1/evaluations/run",
        json={"evaluators": ["os:system"]},
        timeout=30,
    )
    assert resp.status_code == 400 and "unknown evaluators" in resp.text
    resp = httpx.post(f"{srv.base_url}/api/v1/evaluations/run", json={"evaluators": []})
    assert resp.status_code == 422


def test_serve_evaluates_periodically(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server("--evaluate-every", "1s", "--evaluators", "JSONValidation,Refusal")
    _post_chats(srv, 30)
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = _sql(srv, "SELECT count(*) AS n FROM scores WHERE source = 'online'")
        if rows[0]["n"] >= 40:
            break
        time.sleep(0.5)
    assert rows[0]["n"] == 40, rows  # 20 spans with text x 2 evaluators, each once
    metrics = httpx.get(f"{srv.base_url}/metrics", timeout=30).text
    assert 'prefixscope_online_evaluations_total{outcome="scored"} 40.0' in metrics
