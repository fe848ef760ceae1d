"""Foreign attribute spellings → the ``spans`` columns, as one table.

Each column lists the attribute keys that can fill it, highest priority first, with the unit
conversion to apply. PrefixScope's own keys (DESIGN.md) come first; then OTel GenAI current,
GenAI legacy, vLLM's native ``llm_request`` spans, OpenInference and traceAI. The raw
attributes are always kept in the ``attributes`` JSON column as well.

Adding a source = adding rows here (and a golden fixture in ``tests/fixtures/otlp``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefixscope import semconv as k


def _str(v: Any) -> str | None:
    if v is None or isinstance(v, list | dict):
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**63 else None
    if isinstance(v, float):
        return int(v) if v == v and abs(v) < 9e18 else None
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return None
    return None


def _float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        f = float(v)
        return f if f == f and f not in (float("inf"), float("-inf")) else None
    if isinstance(v, str):
        try:
            return _float(float(v))
        except ValueError:
            return None
    return None


def _seconds_to_ms(v: Any) -> float | None:
    f = _float(v)
    return None if f is None else f * 1000.0


Convert = Callable[[Any], Any]

#: column -> ((attribute key, conversion), ...) in priority order.
COLUMN_SOURCES: dict[str, tuple[tuple[str, Convert], ...]] = {
    "prefix_id": ((k.PREFIX_ID, _str),),
    "prefix_version": ((k.PREFIX_VERSION, _str),),
    "prefix_type": ((k.PREFIX_TYPE, _str),),
    "base_model": (
        (k.BASE_MODEL, _str),
        (k.GEN_AI_REQUEST_MODEL, _str),  # GenAI (current and legacy)
        (k.LLM_MODEL_NAME, _str),  # OpenInference
        (k.GEN_AI_RESPONSE_MODEL, _str),  # vLLM llm_request
    ),
    "route": ((k.ROUTE, _str),),
    "prompt_version": ((k.PROMPT_VERSION, _str),),
    "session_id": ((k.SESSION_ID, _str),),
    "fallback_reason": ((k.FALLBACK_REASON, _str),),
    "input_tokens": (
        (k.GEN_AI_USAGE_INPUT_TOKENS, _int),  # GenAI current
        (k.LLM_TOKEN_COUNT_PROMPT, _int),  # OpenInference
        (k.GEN_AI_USAGE_PROMPT_TOKENS, _int),  # GenAI legacy, vLLM llm_request
    ),
    "output_tokens": (
        (k.GEN_AI_USAGE_OUTPUT_TOKENS, _int),
        (k.LLM_TOKEN_COUNT_COMPLETION, _int),
        (k.GEN_AI_USAGE_COMPLETION_TOKENS, _int),
    ),
    "cached_tokens": (
        (k.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, _int),  # GenAI current
        (k.LLM_TOKEN_COUNT_CACHE_READ, _int),  # OpenInference
        (k.GEN_AI_USAGE_CACHE_READ_TOKENS, _int),  # traceAI
    ),
    "ttft_ms": (
        (k.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, _seconds_to_ms),  # GenAI current (seconds)
        (k.GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN, _seconds_to_ms),  # vLLM llm_request (seconds)
    ),
}

#: Resource attributes that fill a column when the span has none of its keys.
RESOURCE_FALLBACKS: dict[str, tuple[str, ...]] = {
    "base_model": (k.BASE_MODEL,),
    "prefix_id": (k.PREFIX_ID,),
    "prefix_version": (k.PREFIX_VERSION,),
    "route": (k.ROUTE,),
}

_SOURCES = tuple(COLUMN_SOURCES.items())
_COHORT = k.COHORT_PREFIX
_COHORT_LEN = len(_COHORT)


def normalize(attrs: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    """The normalized column values of one span (missing columns are absent)."""
    out: dict[str, Any] = {}
    for column, sources in _SOURCES:
        for key, conv in sources:
            raw = attrs.get(key)
            if raw is not None:
                value = conv(raw)
                if value is not None:
                    out[column] = value
                    break
    for column, keys in RESOURCE_FALLBACKS.items():
        if column not in out:
            for key in keys:
                v = _str(resource.get(key))
                if v is not None:
                    out[column] = v
                    break
    return out


def cohort_of(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """``cohort.<key>`` attributes as ``{key: value}`` (None when there are none)."""
    cohort = None
    for key, value in attrs.items():
        if key.startswith(_COHORT):
            if cohort is None:
                cohort = {}
            cohort[key[_COHORT_LEN:]] = value
    return cohort
