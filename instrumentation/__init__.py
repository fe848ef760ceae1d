"""PrefixScope instrumentation: name the variant that produced every generation.

Needs only ``opentelemetry-sdk`` and the OTLP exporters. Framework instrumentors live in
:mod:`prefixscope.instrumentation.hf` and :mod:`prefixscope.instrumentation.vllm` and import
their framework lazily. Nothing here touches global state at import time.
"""

from __future__ import annotations

from .decorator import (
    SpanIds,
    current_ids,
    record_exception,
    record_fallback,
    trace,
)
from .provider import configure
from .variants import (
    VariantScope,
    VariantSpanProcessor,
    current_attributes,
    variant,
)

__all__ = [
    "SpanIds",
    "VariantScope",
    "VariantSpanProcessor",
    "configure",
    "current_attributes",
    "current_ids",
    "record_exception",
    "record_fallback",
    "trace",
    "variant",
]
