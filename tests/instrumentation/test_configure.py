"""``configure``: the real OTLP exporters against a loopback receiver, and a dead endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from prefixscope import semconv
from prefixscope.instrumentation import _settings, configure, trace, variants

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append({"path": self.path, "headers": headers, "body": body})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    srv = Receiver()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _reset_process_settings() -> Iterator[None]:
    yield
    variants.set_default_attributes({})
    _settings.set_capture_content(None)


def _decode(receiver: Receiver) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    [request] = receiver.requests
    msg = ExportTraceServiceRequest.FromString(request["body"])
    [rs] = msg.resource_spans
    resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
    spans = [
        {"name": s.name, **{kv.key: kv.value.string_value for kv in s.attributes}}
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    return resource, spans


def test_configure_exports_protobuf_to_base_url_v1_traces(receiver: Receiver) -> None:
    provider = configure(
        receiver.url,
        service_name="clinic",
        base_model="llama-3-8b",
        headers={"Authorization": "Bearer t0k"},
        set_global=False,
    )

    @trace(tracer_provider=provider, name="answer", prefix_id="radiology")
    def answer() -> str:
        return "ok"

    assert answer() == "ok"
    assert provider.force_flush(10_000)
    provider.shutdown()
    [request] = receiver.requests
    assert request["path"] == "/v1/traces"
    assert request["headers"]["content-type"] == "application/x-protobuf"
    assert request["headers"]["authorization"] == "Bearer t0k"
    resource, spans = _decode(receiver)
    assert resource[semconv.SERVICE_NAME] == "clinic"
    assert resource[semconv.BASE_MODEL] == "llama-3-8b"
    scope = spans[0].pop(semconv.VARIANT_SCOPE)  # the @trace's variant fields open a scope
    assert len(scope) == 16
    assert spans == [
        {"name": "answer", semconv.PREFIX_ID: "radiology", semconv.BASE_MODEL: "llama-3-8b"}
    ]


def test_configure_reads_standard_otel_env_vars(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=ml")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv(_settings.CAPTURE_CONTENT_ENV, "true")
    provider = configure(set_global=False)
    assert _settings.capture_content() is True
    with provider.get_tracer("t").start_as_current_span("env"):
        pass
    provider.shutdown()
    [request] = receiver.requests
    assert request["path"] == "/v1/traces"
    assert request["headers"]["x-team"] == "ml"
    resource, _ = _decode(receiver)
    assert resource[semconv.SERVICE_NAME] == "from-env"


def test_content_capture_is_off_unless_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_settings.CAPTURE_CONTENT_ENV, raising=False)
    assert _settings.capture_content() is False
    configure("http://127.0.0.1:9", capture_content=True, set_global=False).shutdown()
    assert _settings.capture_content() is True


def test_unknown_protocol_fails_at_configure() -> None:
    with pytest.raises(ValueError, match="protocol"):
        configure("http://127.0.0.1:9", protocol="http/json", set_global=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_dead_exporter_never_breaks_the_app(protocol: str, tmp_path: Any) -> None:
    """A real app process exporting to a closed port: same results, prompt exit, rc 0."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    script = textwrap.dedent(
        f"""
        import time
        from prefixscope.instrumentation import configure, trace, variant
        provider = configure({dead!r}, service_name="app", protocol={protocol!r},
                             export_timeout=1)

        @trace(route="r")
        def handle(i):
            return i * i

        t0 = time.perf_counter()
        with variant(prefix_id="p"):
            total = sum(handle(i) for i in range(2000))
        provider.force_flush(2000)   # the exporter fails in the background
        print(total, round(time.perf_counter() - t0, 3))
        """
    )
    env = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "10"}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    total, _ = proc.stdout.split()
    assert int(total) == sum(i * i for i in range(2000))
    assert elapsed < 30, f"exit took {elapsed:.1f}s with the exporter down"
