"""``configure``: the application's one call that sets up export to PrefixScope."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from prefixscope import semconv

from . import _settings, variants

__all__ = ["OTLPProtocol", "configure", "make_exporter"]

log = logging.getLogger(__name__)

OTLPProtocol = Literal["http/protobuf", "grpc"]
_PROTOCOLS: tuple[str, ...] = ("http/protobuf", "grpc")


def _parse_headers(headers: Mapping[str, str] | str | None) -> dict[str, str] | None:
    if headers is None:
        return None
    if isinstance(headers, str):
        out: dict[str, str] = {}
        for part in headers.split(","):
            if "=" in part:
                key, value = part.split("=", 1)
                out[key.strip()] = value.strip()
        return out
    return dict(headers)


def _protocol(protocol: str | None) -> str:
    chosen = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if chosen not in _PROTOCOLS:
        raise ValueError(f"protocol must be one of {_PROTOCOLS}, got {chosen!r}")
    return chosen


def make_exporter(
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    headers: Mapping[str, str] | str | None = None,
    timeout: float | None = None,
) -> SpanExporter:
    """An OTLP span exporter; ``endpoint`` is the base URL (``None``: the ``OTEL_*`` env vars)."""
    kwargs: dict[str, Any] = {"headers": _parse_headers(headers), "timeout": timeout}
    if _protocol(protocol) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, **kwargs)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    url = f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None
    return HTTPSpanExporter(endpoint=url, **kwargs)


def configure(
    endpoint: str | None = None,
    *,
    service_name: str | None = None,
    base_model: str | None = None,
    headers: Mapping[str, str] | str | None = None,
    protocol: OTLPProtocol | None = None,
    capture_content: bool | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    exporter: SpanExporter | None = None,
    export_timeout: float | None = None,
    set_global: bool = True,
) -> TracerProvider:
    """Install a tracer provider that batches spans to a PrefixScope (or any OTLP) endpoint.

    ``endpoint`` is the OTLP base URL (e.g. ``http://127.0.0.1:4318``; the HTTP exporter
    appends ``/v1/traces``; for ``grpc`` use ``http://127.0.0.1:4317``). Unset arguments fall
    back to the standard ``OTEL_*`` environment variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES``). ``base_model`` goes on the resource and, as a default, on
    every span. ``capture_content`` opts in to recording prompt and completion text (``None``:
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``). ``exporter`` replaces the OTLP
    exporter (tests, custom transports). The provider becomes the global one unless
    ``set_global=False``; it is returned either way. Export failures are logged by the SDK and
    never reach the application.
    """
    attrs: dict[str, Any] = dict(resource_attributes or {})
    if service_name is not None:
        attrs[semconv.SERVICE_NAME] = service_name
    if base_model is not None:
        attrs[semconv.BASE_MODEL] = base_model
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(variants.VariantSpanProcessor())
    if exporter is None:
        exporter = make_exporter(
            endpoint, protocol=protocol, headers=headers, timeout=export_timeout
        )
    provider.add_span_processor(BatchSpanProcessor(exporter))

    variants.set_default_attributes(
        {semconv.BASE_MODEL: base_model} if base_model is not None else {}
    )
    _settings.set_capture_content(capture_content)
    if set_global:
        otel_trace.set_tracer_provider(provider)
        if otel_trace.get_tracer_provider() is not provider:
            log.warning(
                "a global tracer provider was already set; pass the returned provider to "
                "instrumentors explicitly (tracer_provider=...)"
            )
    return provider
