"""End to end: ``configure`` + ``@trace`` + ``variant`` through the real OTLP exporters into the
real ``prefixscope serve``, read back with ``POST /api/v1/sql``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prefixscope.instrumentation import (
    _settings,
    configure,
    current_ids,
    record_fallback,
    trace,
    variant,
    variants,
)
from tests.support.serverproc import ServerProcess


@pytest.fixture(autouse=True)
def _reset_process_settings() -> Iterator[None]:
    yield
    variants.set_default_attributes({})
    _settings.set_capture_content(None)


def sql(server: ServerProcess, query: str) -> list[dict[str, Any]]:
    resp = httpx.post(server.base_url + "/api/v1/sql", json={"sql": query}, timeout=30)
    resp.raise_for_status()
    body = resp.json()
    return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_reach_the_collector_with_variant_columns(
    server: ServerProcess, protocol: str
) -> None:
    endpoint = server.base_url if protocol != "grpc" else f"http://{server.grpc_target}"
    provider = configure(
        endpoint,
        service_name="clinic",
        base_model="tiny-llama",
        protocol=protocol,  # type: ignore[arg-type]
        set_global=False,
    )
    ids: list[Any] = []

    @trace(tracer_provider=provider, name=f"answer-{protocol}")
    def answer(note: str) -> Iterator[str]:
        ids.append(current_ids())
        record_fallback("adapter_unavailable")
        yield from note.split()

    with variant(
        prefix_id="cardiology",
        prefix_version="2",
        route="heart",
        prompt_version="v7",
        cohort={"specialty": "cardiology", "language": "en"},
    ):
        assert list(answer("chest pain on exertion")) == ["chest", "pain", "on", "exertion"]
    assert provider.force_flush(30_000)
    provider.shutdown()

    [ref] = ids
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while not rows and time.monotonic() < deadline:
        rows = sql(
            server,
            "SELECT trace_id, span_id, name, service_name, base_model, prefix_id, "
            "prefix_version, route, prompt_version, fallback_reason, ttft_ms, attributes "
            f"FROM spans WHERE name = 'answer-{protocol}'",
        )
        time.sleep(0.2)
    [row] = rows
    assert (row["trace_id"], row["span_id"]) == (ref.trace_id, ref.span_id)
    assert row["service_name"] == "clinic"
    assert row["base_model"] == "tiny-llama"
    assert row["prefix_id"] == "cardiology"
    assert row["prefix_version"] == "2"
    assert row["route"] == "heart"
    assert row["prompt_version"] == "v7"
    assert row["fallback_reason"] == "adapter_unavailable"
    assert row["ttft_ms"] is not None and row["ttft_ms"] >= 0
    attributes = row["attributes"]
    if isinstance(attributes, str):
        attributes = json.loads(attributes)
    assert attributes["cohort.specialty"] == "cardiology"
    assert attributes["cohort.language"] == "en"
