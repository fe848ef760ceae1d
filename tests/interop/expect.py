"""What PrefixScope must make of each third-party instrumentor's export (shared by the live
interop suite and the fast suite that replays its recorded fixtures)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.api_fixtures import sql_dicts as sql
from tests.support.serverproc import ServerProcess

from .stub_openai import ANSWERS

QUESTION = "Chest pain radiating to the left arm. Diagnosis as JSON?"
STREAM_QUESTION = "Chest X-ray: any acute findings?"
REGISTRATIONS = {
    "cardiology": {
        "base_model": "llama-3-8b",
        "prefix_type": "lora",
        "version": "3",
        "served_model_names": ["cardiology"],
    },
    "radiology": {
        "base_model": "llama-3-8b",
        "prefix_type": "lora",
        "version": "2",
        "served_model_names": ["radiology"],
    },
}


@dataclass(frozen=True)
class Convention:
    scope: str
    cached_tokens: int | None  # what the instrumentor sends
    stream_ttft: bool  # a first-token event (or attribute) gives the stream's TTFT
    error_event: bool  # the failed call carries an exception event
    text_from: str  # where the message text came from (collector.messages sources)
    sends_scope_version: bool = True


CONVENTIONS = {
    "openinference": Convention(
        "openinference.instrumentation.openai", 8, True, True, "openinference"
    ),
    "openllmetry": Convention("opentelemetry.instrumentation.openai.v1", 8, True, True, "genai"),
    # the official instrumentor sends content as log events, and no cached-token count
    "otel-genai": Convention(
        "opentelemetry.instrumentation.openai_v2", None, False, False, "genai_log_events", False
    ),
}


def register_variants(srv: ServerProcess) -> None:
    for pid, body in REGISTRATIONS.items():
        resp = httpx.put(f"{srv.base_url}/api/v1/prefixes/{pid}", json=body, timeout=30)
        assert resp.status_code in (200, 201), resp.text


def check(srv: ServerProcess, name: str) -> None:
    """Every column, the attribution, the message text, the events and the online scores of
    one instrumentor's three calls (plain, streamed, failed)."""
    conv = CONVENTIONS[name]
    service = f"interop-{name}"
    rows = sql(
        srv,
        "SELECT trace_id, span_id, request_model, prefix_id, prefix_version, base_model, "
        "prefix_type, input_tokens, output_tokens, cached_tokens, ttft_ms, status_code, "
        "scope_name, scope_version, events "
        f"FROM spans WHERE service_name = '{service}' ORDER BY start_time",
    )
    assert len(rows) == 3, rows
    plain, stream, failed = rows
    for row in rows:
        assert row["scope_name"] == conv.scope, row
        assert (row["scope_version"] is not None) == conv.sends_scope_version, row
    for row, pid, version in ((plain, "cardiology", "3"), (stream, "radiology", "2")):
        got = {k: row[k] for k in ("request_model", "prefix_id", "prefix_version", "base_model")}
        assert got == {
            "request_model": pid,
            "prefix_id": pid,
            "prefix_version": version,
            "base_model": "llama-3-8b",
        }, (name, row)
        assert row["prefix_type"] == "lora"
        assert (row["input_tokens"], row["output_tokens"]) == (12, 7), row
        assert row["cached_tokens"] == conv.cached_tokens, row
    if conv.stream_ttft:
        # the stub waits 50 ms before its first chunk
        assert stream["ttft_ms"] is not None and 40 < stream["ttft_ms"] < stream_duration(
            srv, stream
        ), stream
    else:
        assert stream["ttft_ms"] is None
    events = failed["events"] or "[]"
    assert ('"exception"' in events) == conv.error_event, failed

    # the text evaluators read: the model's answer, never the response envelope
    for row, question, answer in (
        (plain, QUESTION, ANSWERS["cardiology"]),
        (stream, STREAM_QUESTION, ANSWERS["radiology"]),
    ):
        view = httpx.get(f"{srv.base_url}/api/v1/traces/{row['trace_id']}", timeout=30).json()
        node = next(n for n in _walk(view["roots"]) if n["span_id"] == row["span_id"])
        assert (node["input_text"], node["output_text"]) == (question, answer), (name, node)

    # online evaluation: scored once per (span, evaluator); the failed call has no answer
    run = {
        "evaluators": ["JSONValidation", "Refusal"],
        "filter": {"service_name": service},
    }
    first = httpx.post(f"{srv.base_url}/api/v1/evaluations/run", json=run, timeout=60).json()
    assert first["requests"] == 3, first
    assert first["scored_by_evaluator"] == {"JSONValidation": 2, "Refusal": 2}, first
    assert first["skipped_by_reason"] == {"no_output_text": 2}, first
    assert first["text_sources"] == {conv.text_from: 2}, first
    again = httpx.post(f"{srv.base_url}/api/v1/evaluations/run", json=run, timeout=60).json()
    assert (again["scored"], again["already_scored"]) == (0, 4), again
    scores = {
        (r["span_id"], r["name"]): r["value"]
        for r in sql(
            srv,
            "SELECT span_id, name, value FROM scores WHERE source = 'online' AND span_id IN "
            f"('{plain['span_id']}', '{stream['span_id']}')",
        )
    }
    assert scores == {
        (plain["span_id"], "JSONValidation"): 1.0,  # the cardiology adapter answers JSON
        (stream["span_id"], "JSONValidation"): 0.0,  # radiology's prose is not JSON
        # Refusal's default expects a refusal: online, its mean is the refusal rate
        (plain["span_id"], "Refusal"): 0.0,
        (stream["span_id"], "Refusal"): 0.0,
    }, scores


def stream_duration(srv: ServerProcess, row: dict[str, Any]) -> float:
    got = sql(srv, f"SELECT duration_ms FROM spans WHERE span_id = '{row['span_id']}'")
    return float(got[0]["duration_ms"])


def _walk(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n in nodes:
        out.append(n)
        out += _walk(n.get("children") or [])
    return out
