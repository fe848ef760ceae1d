"""The server embedded in an application process (as the demo runs it)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from prefixscope.config import Settings
from prefixscope.server import PrefixScopeServer
from tests.support.serverproc import free_port


@pytest.mark.timeout(90)  # the regression shows as an export loop that never drains
def test_embedded_server_does_not_trace_its_own_ingest(tmp_path: Path) -> None:
    """Regression: with a global tracer provider exporting to the in-process server, the
    web framework's native request spans made every export produce spans to export."""
    settings = Settings(
        data_dir=tmp_path / "data",
        http_port=free_port(),
        grpc_port=0,
        lake_roll_interval_s=0,
        log_level="warning",
    )
    server = PrefixScopeServer(settings)
    server.start()
    base = f"http://127.0.0.1:{settings.http_port}"
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=base + "/v1/traces")))
    previous = otel_trace._TRACER_PROVIDER
    otel_trace._TRACER_PROVIDER = provider  # as configure() would, without the set-once guard
    try:
        tracer = provider.get_tracer("app")
        for i in range(5):
            with tracer.start_as_current_span(f"work-{i}", attributes={"prefix.id": "p"}):
                pass
            provider.force_flush()
        httpx.get(base + "/healthz")
        time.sleep(0.5)
        provider.force_flush()
        rows = httpx.post(
            base + "/api/v1/sql",
            json={"sql": "SELECT name, count(*) FROM spans GROUP BY 1 ORDER BY 1"},
        ).json()["rows"]
    finally:
        otel_trace._TRACER_PROVIDER = previous
        provider.shutdown()
        server.stop()
    assert rows == [[f"work-{i}", 1] for i in range(5)]
