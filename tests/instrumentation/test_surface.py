"""The instrumentation's public surface and its import-time promises."""

from __future__ import annotations

import json
import subprocess
import sys

import prefixscope.instrumentation as instrumentation


def test_public_api_is_pinned() -> None:
    assert sorted(instrumentation.__all__) == [
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
    for name in instrumentation.__all__:
        assert getattr(instrumentation, name).__doc__, f"{name} is undocumented"


def test_importing_touches_no_framework_server_code_or_global_state() -> None:
    script = """
import json, sys
from opentelemetry import trace
import prefixscope.instrumentation
import prefixscope.instrumentation.hf
import prefixscope.instrumentation.vllm
heavy = ["torch", "transformers", "peft", "vllm", "openai",
         "prefixscope.collector", "prefixscope.analytics", "prefixscope.api"]
print(json.dumps({
    "loaded": [m for m in heavy if m in sys.modules],
    "provider": type(trace.get_tracer_provider()).__name__,
}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(out.stdout)
    assert result == {"loaded": [], "provider": "ProxyTracerProvider"}
