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


def test_the_variant_keywords_are_the_variant_records_fields() -> None:
    """The keywords of ``variant`` and ``@trace`` are typed by ``VariantFields``, whose keys and
    types must be ``Variant``'s fields: one list of the keywords, kept equal here."""
    import dataclasses
    import typing

    import pytest

    from prefixscope import semconv
    from prefixscope.instrumentation.variants import Variant, VariantFields

    hints = typing.get_type_hints(Variant)
    assert typing.get_type_hints(VariantFields) == {
        f.name: hints[f.name] for f in dataclasses.fields(Variant)
    }
    every = Variant(
        prefix_id="rad",
        prefix_version=3,
        prefix_type="prefix",
        route="/r",
        prompt_version=2,
        base_model="m",
        session_id="s",
        cohort={"specialty": "radiology", "plan": None},
    ).attributes()
    assert every == {
        semconv.PREFIX_ID: "rad",
        semconv.PREFIX_VERSION: "3",
        semconv.PREFIX_TYPE: "prefix",
        semconv.ROUTE: "/r",
        semconv.PROMPT_VERSION: "2",
        semconv.BASE_MODEL: "m",
        semconv.SESSION_ID: "s",
        semconv.COHORT_PREFIX + "specialty": "radiology",
    }
    assert instrumentation.variant(route="/r", attributes={"x": 1}).attributes == {
        "x": 1,
        semconv.ROUTE: "/r",
    }
    with pytest.raises(TypeError):
        instrumentation.variant(prefix="rad")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        instrumentation.trace(prefx_id="rad")  # type: ignore[call-overload]
