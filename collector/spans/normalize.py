"""Foreign attribute spellings → the ``spans`` columns, as one table.

Each column lists the attribute keys that can fill it, highest priority first (the order in
the table below is the contract the tests pin), with the unit conversion to apply. Sources:
PrefixScope's own keys (DESIGN.md), OTel GenAI current and legacy, vLLM's native
``llm_request`` spans, OpenInference and traceAI. The raw
attributes are always kept in the ``attributes`` JSON column as well.

Adding a source = adding rows here (and a golden fixture in ``tests/fixtures/otlp``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from prefixscope import semconv as k

from .model import NORMALIZED_COLUMNS


def _str(v: Any) -> str | None:
    if type(v) is str:
        return v
    if v is None or isinstance(v, list | dict):
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _int(v: Any) -> int | None:
    if type(v) is int:
        return v if -(2**63) <= v < 2**63 else None
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**63 else None
    if isinstance(v, float):
        return int(v) if v == v and abs(v) < 9e18 else None
    if isinstance(v, str):
        try:
            return _int(int(v.strip()))  # same int64 range check as a number
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


def _model_of_params(v: Any) -> str | None:
    """OpenInference's ``llm.invocation_parameters`` (a JSON object as text): its ``model``."""
    if not isinstance(v, str) or '"model"' not in v:
        return None
    try:
        params = orjson.loads(v)
    except orjson.JSONDecodeError:
        return None
    return _str(params.get("model")) if isinstance(params, dict) else None


def _seconds_to_ms(v: Any) -> float | None:
    f = _float(v)
    return None if f is None else f * 1000.0


def _ms(v: Any) -> float | None:
    """A number of milliseconds."""
    return _float(v)


def _json_str(v: Any) -> str | None:
    """A string that may be JSON-quoted (MLflow encodes every attribute value as JSON)."""
    if isinstance(v, str) and v.startswith('"'):
        try:
            decoded = orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
        return decoded if isinstance(decoded, str) else None
    return _str(v)


def _logfire_kind(v: Any) -> str | None:
    """Logfire's ``logfire.span_type``: only ``log`` (its stream-end record) and
    ``pending_span`` name a kind; a plain ``span`` leaves the operation to the next key."""
    return v if isinstance(v, str) and v in ("log", "pending_span") else None


Convert = Callable[[Any], Any]

#: column -> ((attribute key, conversion), ...) in priority order.
COLUMN_SOURCES: dict[str, tuple[tuple[str, Convert], ...]] = {
    "prefix_id": ((k.PREFIX_ID, _str),),
    "prefix_version": ((k.PREFIX_VERSION, _str),),
    "prefix_type": ((k.PREFIX_TYPE, _str),),
    # base_model falls back to request_model, then response_model (in normalize())
    "base_model": ((k.BASE_MODEL, _str),),
    "request_model": (
        (k.GEN_AI_REQUEST_MODEL, _str),  # GenAI (current and legacy), OpenLLMetry, Logfire
        (k.LLM_MODEL_NAME, _str),  # OpenInference (OI-LiteLLM: provider-qualified)
        (k.LANGFUSE_MODEL_NAME, _str),  # Langfuse
        (k.MLFLOW_LLM_MODEL, _json_str),  # MLflow (JSON-quoted)
        (k.AI_MODEL_ID, _str),  # Vercel AI SDK
        (k.LLM_INVOCATION_PARAMETERS, _model_of_params),  # OpenInference, also on failures
        (k.GEN_AI_REQUEST_PARAMETERS, _model_of_params),  # traceAI streams: only here
    ),
    "response_model": (
        (k.GEN_AI_RESPONSE_MODEL, _str),  # GenAI, vLLM llm_request
        (k.AI_RESPONSE_MODEL, _str),  # Vercel AI SDK
    ),
    "route": ((k.ROUTE, _str),),
    "prompt_version": ((k.PROMPT_VERSION, _str),),
    "session_id": (
        (k.SESSION_ID, _str),  # PrefixScope, OpenInference
        (k.GEN_AI_CONVERSATION_ID, _str),  # GenAI current, traceAI
    ),
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
        (k.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_LEGACY, _int),  # OpenLLMetry <= 0.54
        (k.GEN_AI_USAGE_DETAILS_CACHE_READ_TOKENS, _int),  # Pydantic AI
        (k.AI_USAGE_CACHE_READ_TOKENS, _int),  # Vercel AI SDK
        (k.AI_USAGE_CACHED_INPUT_TOKENS, _int),  # Vercel AI SDK (deprecated alias)
    ),
    # what kind of span this is, in its convention's words (a model call, a chain, a tool...):
    # analytics' request rule (collector/spans/requests.py) reads it
    "operation": (
        (k.PREFIXSCOPE_SPAN_KIND, _str),  # @trace(request=True)
        (k.LOGFIRE_SPAN_TYPE, _logfire_kind),  # Logfire's stream-end log also says "chat"
        (k.GEN_AI_OPERATION_NAME, _str),  # OTel GenAI: chat, text_completion, invoke_agent...
        (k.OPENINFERENCE_SPAN_KIND, _str),  # OpenInference: LLM, CHAIN, TOOL, AGENT...
        (k.GEN_AI_SPAN_KIND, _str),  # traceAI
        (k.FI_SPAN_KIND, _str),  # traceAI before its GenAI migration
        (k.MLFLOW_SPAN_TYPE, _json_str),  # MLflow: CHAT_MODEL, LLM, CHAIN...
        (k.LANGFUSE_OBSERVATION_TYPE, _str),  # Langfuse: generation, span, agent...
        (k.AI_OPERATION_ID, _str),  # Vercel AI SDK: ai.streamText.doStream...
        (k.TRACELOOP_SPAN_KIND, _str),  # OpenLLMetry: workflow, task, agent, tool
        (k.TRACELOOP_LLM_REQUEST_TYPE, _str),  # OpenLLMetry <= 0.54, LiteLLM: chat, completion
    ),
    "variant_scope": ((k.VARIANT_SCOPE, _str),),
    "ttft_ms": (
        (k.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, _seconds_to_ms),  # GenAI current (seconds)
        (k.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, _seconds_to_ms),  # Pydantic AI, AI SDK 7 (s)
        (k.AI_RESPONSE_MS_TO_FIRST_CHUNK, _ms),  # Vercel AI SDK streamText (ms)
        (k.AI_STREAM_MS_TO_FIRST_CHUNK, _ms),  # Vercel AI SDK streamObject (ms)
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

_COHORT = k.COHORT_PREFIX
_COHORT_LEN = len(_COHORT)

#: The order of :func:`normalize`'s output: the normalized columns of the span model.
OUTPUT_COLUMNS: tuple[str, ...] = NORMALIZED_COLUMNS
if set(OUTPUT_COLUMNS) != set(COLUMN_SOURCES):
    raise ValueError("COLUMN_SOURCES must cover exactly model.NORMALIZED_COLUMNS")
_INDEX = {column: i for i, column in enumerate(OUTPUT_COLUMNS)}
#: attribute key -> (output index, priority rank, conversion); one pass over a span's keys.
_KEYMAP: dict[str, tuple[int, int, Convert]] = {}
for _column, _sources in COLUMN_SOURCES.items():
    for _rank, (_key, _conv) in enumerate(_sources):
        if _key in _KEYMAP:
            raise ValueError(f"attribute {_key!r} maps to two columns")
        _KEYMAP[_key] = (_INDEX[_column], _rank, _conv)
_RESOURCE_FALLBACKS = tuple((_INDEX[c], keys) for c, keys in RESOURCE_FALLBACKS.items())
#: A span without ``base_model`` names its model only as the request (else response) model:
#: that name fills ``base_model`` (before the resource fallback), as it did before those
#: names had columns of their own. Variant attribution (``attribution.py``) matches the
#: raw names against registered served model names.
_BASE, _REQ, _RESP = _INDEX["base_model"], _INDEX["request_model"], _INDEX["response_model"]
_N = len(OUTPUT_COLUMNS)


def normalize(
    attrs: dict[str, Any], resource: dict[str, Any]
) -> tuple[list[Any], dict[str, Any] | None]:
    """One pass over a span's attributes: the normalized values (in ``OUTPUT_COLUMNS``
    order, None where absent) and the ``cohort.<key>`` attributes as ``{key: value}``."""
    out: list[Any] = [None] * _N
    ranks: list[int] | None = None
    cohort: dict[str, Any] | None = None
    keymap = _KEYMAP
    for key, raw in attrs.items():
        hit = keymap.get(key)
        if hit is not None:
            if raw is None:
                continue
            idx, rank, conv = hit
            if out[idx] is not None and (ranks is None or ranks[idx] <= rank):
                continue
            value = conv(raw)
            if value is not None:
                out[idx] = value
                if rank:
                    if ranks is None:
                        ranks = [0] * _N
                    ranks[idx] = rank
                elif ranks is not None:
                    ranks[idx] = 0
        elif key.startswith(_COHORT):
            if cohort is None:
                cohort = {}
            cohort[key[_COHORT_LEN:]] = raw
    if out[_BASE] is None:
        out[_BASE] = out[_REQ] if out[_REQ] is not None else out[_RESP]
    if resource:
        for idx, keys in _RESOURCE_FALLBACKS:
            if out[idx] is None:
                for key in keys:
                    raw = resource.get(key)
                    if raw is not None and (v := _str(raw)) is not None:
                        out[idx] = v
                        break
    return out, cohort
