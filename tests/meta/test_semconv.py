"""Pins every wire key in ``prefixscope/semconv.py``: renaming one is a contract change.

The wire contract table of the project's ``docs/DESIGN.md`` is parsed and must agree with the
literal copy below, so neither can drift from the other.
"""

from __future__ import annotations

import re

import pytest

from prefixscope import semconv
from prefixscope.collector.spans.normalize import COLUMN_SOURCES, RESOURCE_FALLBACKS
from tests.support.paths import ROOT as REPO_ROOT

DESIGN_CANDIDATES = (REPO_ROOT / "docs" / "DESIGN.md",)

#: Keys of the "Wire contract: span attributes" table (``cohort.<key>`` as its prefix).
WIRE_CONTRACT = (
    "prefix.id",
    "prefix.version",
    "prefix.type",
    "base_model",
    "route",
    "prompt.version",
    "fallback.reason",
    "cohort.",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.request.model",
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.response.time_to_first_chunk",
)

#: Foreign spellings DESIGN.md says the collector normalizes.
FOREIGN_SPELLINGS = (
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.latency.time_to_first_token",
    "gen_ai.request.id",
    "llm.model_name",
    "llm.token_count.prompt_details.cache_read",
    "gen_ai.usage.cache_read_tokens",
    "gen_ai.span.kind",
)

#: Every constant of semconv.py, name → string. Append here when you append there.
PINNED = {
    "PREFIX_ID": "prefix.id",
    "PREFIX_VERSION": "prefix.version",
    "PREFIX_TYPE": "prefix.type",
    "BASE_MODEL": "base_model",
    "ROUTE": "route",
    "PROMPT_VERSION": "prompt.version",
    "FALLBACK_REASON": "fallback.reason",
    "COHORT_PREFIX": "cohort.",
    "BASE_PREFIX_ID": "base",
    "SESSION_ID": "session.id",
    "DEPLOYMENT_ID": "deployment.id",
    "AGENT_STEP": "agent.step",
    "DATASET_NAME": "dataset.name",
    "DATASET_VERSION": "dataset.version",
    "DATASET_ITEM_ID": "dataset.item_id",
    "REPLAY_RUN_ID": "replay.run_id",
    "PREFIX_NUM_VIRTUAL_TOKENS": "prefix.num_virtual_tokens",
    "BATCH_SIZE": "batch.size",
    "BATCH_INPUT_TOKENS": "batch.input_tokens",
    "BATCH_OUTPUT_TOKENS": "batch.output_tokens",
    "INPUT_VALUE": "input.value",
    "OUTPUT_VALUE": "output.value",
    "INPUT_MIME_TYPE": "input.mime_type",
    "OUTPUT_MIME_TYPE": "output.mime_type",
    "GEN_AI_INPUT_MESSAGES": "gen_ai.input.messages",
    "GEN_AI_OUTPUT_MESSAGES": "gen_ai.output.messages",
    "LLM_INVOCATION_PARAMETERS": "llm.invocation_parameters",
    "LLM_TOKEN_COUNT_PROMPT": "llm.token_count.prompt",
    "LLM_TOKEN_COUNT_COMPLETION": "llm.token_count.completion",
    "LLM_TOKEN_COUNT_TOTAL": "llm.token_count.total",
    "LLM_TOKEN_COUNT_CACHE_READ": "llm.token_count.prompt_details.cache_read",
    "LLM_MODEL_NAME": "llm.model_name",
    "OPENINFERENCE_SPAN_KIND": "openinference.span.kind",
    "GEN_AI_USAGE_INPUT_TOKENS": "gen_ai.usage.input_tokens",
    "GEN_AI_USAGE_OUTPUT_TOKENS": "gen_ai.usage.output_tokens",
    "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS": "gen_ai.usage.cache_read.input_tokens",
    "GEN_AI_REQUEST_MODEL": "gen_ai.request.model",
    "GEN_AI_RESPONSE_MODEL": "gen_ai.response.model",
    "GEN_AI_OPERATION_NAME": "gen_ai.operation.name",
    "GEN_AI_PROVIDER_NAME": "gen_ai.provider.name",
    "GEN_AI_SYSTEM": "gen_ai.system",
    "GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK": "gen_ai.response.time_to_first_chunk",
    "GEN_AI_REQUEST_TEMPERATURE": "gen_ai.request.temperature",
    "GEN_AI_REQUEST_TOP_P": "gen_ai.request.top_p",
    "GEN_AI_REQUEST_TOP_K": "gen_ai.request.top_k",
    "GEN_AI_REQUEST_MAX_TOKENS": "gen_ai.request.max_tokens",
    "GEN_AI_REQUEST_ID": "gen_ai.request.id",
    "GEN_AI_RESPONSE_FINISH_REASONS": "gen_ai.response.finish_reasons",
    "GEN_AI_USAGE_PROMPT_TOKENS": "gen_ai.usage.prompt_tokens",
    "GEN_AI_USAGE_COMPLETION_TOKENS": "gen_ai.usage.completion_tokens",
    "GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN": "gen_ai.latency.time_to_first_token",
    "GEN_AI_LATENCY_E2E": "gen_ai.latency.e2e",
    "GEN_AI_LATENCY_TIME_IN_QUEUE": "gen_ai.latency.time_in_queue",
    "GEN_AI_LATENCY_TIME_IN_MODEL_PREFILL": "gen_ai.latency.time_in_model_prefill",
    "GEN_AI_LATENCY_TIME_IN_MODEL_DECODE": "gen_ai.latency.time_in_model_decode",
    "GEN_AI_USAGE_CACHE_READ_TOKENS": "gen_ai.usage.cache_read_tokens",
    "GEN_AI_SPAN_KIND": "gen_ai.span.kind",
    "SERVICE_NAME": "service.name",
    "SERVICE_INSTANCE_ID": "service.instance.id",
    "GEN_AI_CONVERSATION_ID": "gen_ai.conversation.id",
    "GEN_AI_RESPONSE_ID": "gen_ai.response.id",
    "AI_MODEL_ID": "ai.model.id",
    "AI_OPERATION_ID": "ai.operationId",
    "AI_RESPONSE_MODEL": "ai.response.model",
    "AI_RESPONSE_MS_TO_FIRST_CHUNK": "ai.response.msToFirstChunk",
    "AI_STREAM_MS_TO_FIRST_CHUNK": "ai.stream.msToFirstChunk",
    "AI_USAGE_CACHED_INPUT_TOKENS": "ai.usage.cachedInputTokens",
    "AI_USAGE_CACHE_READ_TOKENS": "ai.usage.inputTokenDetails.cacheReadTokens",
    "FI_SPAN_KIND": "fi.span.kind",
    "GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK": "gen_ai.client.operation.time_to_first_chunk",
    "GEN_AI_REQUEST_PARAMETERS": "gen_ai.request.parameters",
    "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_LEGACY": "gen_ai.usage.cache_read_input_tokens",
    "GEN_AI_USAGE_DETAILS_CACHE_READ_TOKENS": "gen_ai.usage.details.cache_read_tokens",
    "LANGFUSE_MODEL_NAME": "langfuse.observation.model.name",
    "LANGFUSE_OBSERVATION_TYPE": "langfuse.observation.type",
    "LOGFIRE_SPAN_TYPE": "logfire.span_type",
    "MLFLOW_LLM_MODEL": "mlflow.llm.model",
    "MLFLOW_SPAN_TYPE": "mlflow.spanType",
    "PREFIXSCOPE_SPAN_KIND": "prefixscope.span.kind",
    "REQUEST_SPAN_KIND": "request",
    "TRACELOOP_LLM_REQUEST_TYPE": "llm.request.type",
    "TRACELOOP_SPAN_KIND": "traceloop.span.kind",
    "VARIANT_SCOPE": "variant.scope",
}


def module_constants() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(semconv).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }


def design_text() -> str | None:
    for path in DESIGN_CANDIDATES:
        if path.is_file():
            return path.read_text()
    return None


def parse_wire_table(text: str) -> tuple[str, ...]:
    """Backticked keys in the first column of the wire contract table, in order."""
    section = text.split("## Wire contract: span attributes", 1)[1].split("\n## ", 1)[0]
    keys: list[str] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        for key in re.findall(r"`([^`]+)`", first_cell):
            keys.append(key.replace("<key>", ""))
    return tuple(keys)


def parse_foreign_spellings(text: str) -> tuple[str, ...]:
    section = text.split("normalizes foreign spellings", 1)[1].split("\n\n", 1)[0]
    return tuple(
        key for key in re.findall(r"`([^`]+)`", section) if "." in key and not key.endswith("*")
    )


def test_semconv_constants_are_pinned() -> None:
    constants = module_constants()
    changed = {n: (PINNED[n], v) for n, v in constants.items() if n in PINNED and PINNED[n] != v}
    assert not changed, f"wire keys changed (contract change): {changed}"
    assert not set(PINNED) - set(constants), "pinned constants were removed or renamed"
    assert not set(constants) - set(PINNED), (
        "new semconv constants: pin them in tests/meta/test_semconv.py::PINNED "
        f"{sorted(set(constants) - set(PINNED))}"
    )


def test_every_wire_key_is_defined_once() -> None:
    values = list(module_constants().values())
    duplicates = sorted({v for v in values if values.count(v) > 1})
    assert duplicates == []


@pytest.mark.parametrize("key", WIRE_CONTRACT + FOREIGN_SPELLINGS)
def test_design_key_has_a_semconv_constant(key: str) -> None:
    assert key in module_constants().values()


def test_literal_copy_matches_design_md() -> None:
    """docs/DESIGN.md is in the repository: its tables and the literal copies agree."""
    text = design_text()
    assert text, "docs/DESIGN.md is missing"
    table = parse_wire_table(text)
    foreign = parse_foreign_spellings(text)
    assert table == WIRE_CONTRACT
    assert set(foreign) <= set(FOREIGN_SPELLINGS)


def test_normalizer_reads_only_semconv_keys() -> None:
    """The mapping table uses the constants, never a string of its own."""
    known = set(module_constants().values())
    keys = {key for sources in COLUMN_SOURCES.values() for key, _ in sources}
    keys |= {key for fallbacks in RESOURCE_FALLBACKS.values() for key in fallbacks}
    assert keys - known == set()
