"""Run in ``.venv-interop``: the OpenAI client traced by one third-party instrumentor, exporting
with the OTel SDK's OTLP exporters (traces, and logs for the official GenAI instrumentor).

    python driver.py INSTRUMENTOR --otlp http://127.0.0.1:4318 --openai URL/v1
        [--protocol http|grpc --grpc 127.0.0.1:4317] [--record DIR]

INSTRUMENTOR: openinference | openllmetry | otel-genai. Three calls: a plain chat completion
(model ``cardiology``), a streamed one with ``stream_options.include_usage`` (``radiology``),
and one the server fails (``broken``). Content capture is on. ``--record DIR`` also writes the
exported OTLP requests as ``<instrumentor>.traces.pb`` / ``.logs.pb`` (the fast suite's golden
fixtures). Prints one JSON line: the versions used.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import json
import os
import sys
from pathlib import Path
from typing import Any

PACKAGES = {
    "openinference": "openinference-instrumentation-openai",
    "openllmetry": "opentelemetry-instrumentation-openai",
    "otel-genai": "opentelemetry-instrumentation-openai-v2",
}
QUESTION = "Chest pain radiating to the left arm. Diagnosis as JSON?"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("instrumentor", choices=sorted(PACKAGES))
    ap.add_argument("--otlp", required=True)
    ap.add_argument("--openai", required=True)
    ap.add_argument("--protocol", choices=["http", "grpc"], default="http")
    ap.add_argument("--grpc", default=None)
    ap.add_argument("--record", default=None)
    ap.add_argument("--plain-model", default="cardiology")
    ap.add_argument("--stream-model", default="radiology")
    ap.add_argument("--error-model", default="broken")
    ap.add_argument("--max-tokens", type=int, default=None)
    args = ap.parse_args()
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
    os.environ["TRACELOOP_TRACE_CONTENT"] = "true"

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    resource = Resource.create({"service.name": f"interop-{args.instrumentor}"})
    provider = TracerProvider(resource=resource)
    recorded: dict[str, Any] = {}
    span_exporter, log_exporter = otlp_exporters(args.protocol, args.otlp, args.grpc)
    if args.record:
        span_exporter = _Recording(span_exporter, recorded, "traces")
        log_exporter = _Recording(log_exporter, recorded, "logs")
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)

    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    set_logger_provider(logger_provider)
    try:
        from opentelemetry._events import set_event_logger_provider
        from opentelemetry.sdk._events import EventLoggerProvider

        set_event_logger_provider(EventLoggerProvider(logger_provider))
    except ImportError:
        pass

    if args.instrumentor == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif args.instrumentor == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OLL

        OLL().instrument(tracer_provider=provider)
    else:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2

        V2().instrument(tracer_provider=provider, logger_provider=logger_provider)

    import openai

    client = openai.OpenAI(base_url=args.openai, api_key="not-needed", max_retries=0)
    messages = [
        {"role": "system", "content": "You are a clinical coding assistant."},
        {"role": "user", "content": QUESTION},
    ]
    extra: dict[str, Any] = {}
    if args.max_tokens:
        extra = {"max_tokens": args.max_tokens, "temperature": 0}
    client.chat.completions.create(model=args.plain_model, messages=messages, **extra)
    stream = client.chat.completions.create(
        model=args.stream_model,
        messages=[{"role": "user", "content": "Chest X-ray: any acute findings?"}],
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    )
    for _ in stream:
        pass
    with contextlib.suppress(openai.APIError):
        client.chat.completions.create(model=args.error_model, messages=messages)
    provider.force_flush()
    logger_provider.force_flush()
    provider.shutdown()
    logger_provider.shutdown()
    if args.record:
        out = Path(args.record)
        out.mkdir(parents=True, exist_ok=True)
        for kind, msg in recorded.items():
            (out / f"{args.instrumentor}.{kind}.pb").write_bytes(msg.SerializeToString())
    versions = {p: md.version(p) for p in (PACKAGES[args.instrumentor], "openai")}
    print(json.dumps({"versions": versions}))
    return 0


def otlp_exporters(protocol: str, otlp: str, grpc: str | None) -> tuple[Any, Any]:
    """The OTel SDK's OTLP span and log exporters to the server: over HTTP (``otlp`` is the
    server's base URL) or gRPC (``grpc`` is its ``host:port``)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return (
            OTLPSpanExporter(endpoint=grpc, insecure=True),
            OTLPLogExporter(endpoint=grpc, insecure=True),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HTTPLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    spans = HTTPSpanExporter(endpoint=f"{otlp}/v1/traces")
    return spans, HTTPLogExporter(endpoint=f"{otlp}/v1/logs")


class _Recording:
    """Wraps an OTLP exporter: exports as usual and keeps every request, merged into one."""

    def __init__(self, inner: Any, into: dict[str, Any], kind: str) -> None:
        self.inner, self.into, self.kind = inner, into, kind

    def export(self, batch: Any) -> Any:
        if self.kind == "traces":
            from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

            msg = encode_spans(batch)
        else:
            from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

            msg = encode_logs(batch)
        if self.kind in self.into:
            self.into[self.kind].MergeFrom(msg)
        else:
            self.into[self.kind] = msg
        return self.inner.export(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


if __name__ == "__main__":
    sys.exit(main())
