"""Every wire key PrefixScope reads or writes, defined once.

These strings are the wire contract of ``DESIGN.md`` ("Wire contract: span attributes").
``tests/meta/test_semconv.py`` pins them: changing one is a contract change.
"""

from __future__ import annotations

from typing import Final

# -- PrefixScope's own attributes -------------------------------------------------------------
PREFIX_ID: Final = "prefix.id"
PREFIX_VERSION: Final = "prefix.version"
PREFIX_TYPE: Final = "prefix.type"
BASE_MODEL: Final = "base_model"
ROUTE: Final = "route"
PROMPT_VERSION: Final = "prompt.version"
FALLBACK_REASON: Final = "fallback.reason"
COHORT_PREFIX: Final = "cohort."  # cohort.<key>, e.g. cohort.specialty

#: The value of ``prefix.id`` (or its absence) that means "the base model served this".
BASE_PREFIX_ID: Final = "base"

# -- Extensions used by analytics (docs/reference/contracts.md) ------------------------------------
SESSION_ID: Final = "session.id"
DEPLOYMENT_ID: Final = "deployment.id"  # serving instance; used for prefix-switch latency
AGENT_STEP: Final = "agent.step"  # planner / tool / response in multi-step agents
DATASET_NAME: Final = "dataset.name"
DATASET_VERSION: Final = "dataset.version"
DATASET_ITEM_ID: Final = "dataset.item_id"
REPLAY_RUN_ID: Final = "replay.run_id"
PREFIX_NUM_VIRTUAL_TOKENS: Final = "prefix.num_virtual_tokens"  # prompt-learning adapters
#: The ``variant(...)`` scope a span was started in: a random id per entry of a scope, stamped
#: on every span started inside it. The outermost span of a scope and the one model call in
#: it are one request (DESIGN.md, "The request").
VARIANT_SCOPE: Final = "variant.scope"
#: ``@trace(request=True)``: this span is one model request (value ``"request"``), whatever
#: is nested inside it.
PREFIXSCOPE_SPAN_KIND: Final = "prefixscope.span.kind"
REQUEST_SPAN_KIND: Final = "request"
#: Batched generation: sequences in the call, and token counts per sequence (int arrays).
BATCH_SIZE: Final = "batch.size"
BATCH_INPUT_TOKENS: Final = "batch.input_tokens"
BATCH_OUTPUT_TOKENS: Final = "batch.output_tokens"
INPUT_VALUE: Final = "input.value"  # only when content capture is enabled
OUTPUT_VALUE: Final = "output.value"  # only when content capture is enabled
INPUT_MIME_TYPE: Final = "input.mime_type"  # OpenInference: application/json = an envelope
OUTPUT_MIME_TYPE: Final = "output.mime_type"

# -- OpenInference ----------------------------------------------------------------------------
LLM_TOKEN_COUNT_PROMPT: Final = "llm.token_count.prompt"
LLM_TOKEN_COUNT_COMPLETION: Final = "llm.token_count.completion"
LLM_TOKEN_COUNT_TOTAL: Final = "llm.token_count.total"
LLM_TOKEN_COUNT_CACHE_READ: Final = "llm.token_count.prompt_details.cache_read"
LLM_MODEL_NAME: Final = "llm.model_name"
LLM_INVOCATION_PARAMETERS: Final = "llm.invocation_parameters"  # JSON text: {"model": ...}
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
# -- OpenLLMetry (Traceloop) --------------------------------------------------------------------
TRACELOOP_SPAN_KIND: Final = "traceloop.span.kind"  # workflow / task / agent / tool
#: Span events that mark a stream's first token (TTFT when no TTFT attribute is sent).
FIRST_TOKEN_EVENTS: Final = frozenset(
    {
        "First Token Stream Event",  # OpenInference, traceAI
        "gen_ai.content.completion.chunk",  # OpenLLMetry (one per streamed chunk)
        "mlflow.chunk.item.0",  # MLflow (one event per chunk: the first one)
    }
)

# -- OTel GenAI (current) ---------------------------------------------------------------------
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_ID: Final = "gen_ai.request.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"  # structured parts, content capture on
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"

# -- OTel GenAI (legacy) and vLLM native llm_request spans ------------------------------------
GEN_AI_USAGE_PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"
GEN_AI_USAGE_COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"
GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN: Final = "gen_ai.latency.time_to_first_token"  # seconds
GEN_AI_LATENCY_E2E: Final = "gen_ai.latency.e2e"
GEN_AI_LATENCY_TIME_IN_QUEUE: Final = "gen_ai.latency.time_in_queue"
GEN_AI_LATENCY_TIME_IN_MODEL_PREFILL: Final = "gen_ai.latency.time_in_model_prefill"
GEN_AI_LATENCY_TIME_IN_MODEL_DECODE: Final = "gen_ai.latency.time_in_model_decode"

# -- traceAI ----------------------------------------------------------------------------------
GEN_AI_USAGE_CACHE_READ_TOKENS: Final = "gen_ai.usage.cache_read_tokens"
GEN_AI_SPAN_KIND: Final = "gen_ai.span.kind"

# -- Other instrumentors' spellings the request rule and normalization read -----------------
# (survey of the maintained instrumentors: docs/guides/instrumentation.md)
TRACELOOP_LLM_REQUEST_TYPE: Final = "llm.request.type"  # OpenLLMetry <= 0.54, LiteLLM legacy
FI_SPAN_KIND: Final = "fi.span.kind"  # traceAI before its GenAI migration
MLFLOW_SPAN_TYPE: Final = "mlflow.spanType"  # JSON-quoted: '"CHAT_MODEL"'
MLFLOW_LLM_MODEL: Final = "mlflow.llm.model"  # JSON-quoted
LANGFUSE_OBSERVATION_TYPE: Final = "langfuse.observation.type"  # generation, span, agent...
LANGFUSE_MODEL_NAME: Final = "langfuse.observation.model.name"
LOGFIRE_SPAN_TYPE: Final = "logfire.span_type"  # span / log (a stream's end) / pending_span
AI_OPERATION_ID: Final = "ai.operationId"  # Vercel AI SDK: ai.streamText vs ...doStream
AI_MODEL_ID: Final = "ai.model.id"  # Vercel AI SDK
AI_RESPONSE_MODEL: Final = "ai.response.model"  # Vercel AI SDK
AI_RESPONSE_MS_TO_FIRST_CHUNK: Final = "ai.response.msToFirstChunk"  # ms, streamText
AI_STREAM_MS_TO_FIRST_CHUNK: Final = "ai.stream.msToFirstChunk"  # ms, streamObject
AI_USAGE_CACHE_READ_TOKENS: Final = "ai.usage.inputTokenDetails.cacheReadTokens"
AI_USAGE_CACHED_INPUT_TOKENS: Final = "ai.usage.cachedInputTokens"  # deprecated alias
GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"  # s
GEN_AI_REQUEST_PARAMETERS: Final = "gen_ai.request.parameters"  # traceAI: JSON with "model"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_LEGACY: Final = "gen_ai.usage.cache_read_input_tokens"
GEN_AI_USAGE_DETAILS_CACHE_READ_TOKENS: Final = "gen_ai.usage.details.cache_read_tokens"

# -- Resource ---------------------------------------------------------------------------------
SERVICE_NAME: Final = "service.name"
SERVICE_INSTANCE_ID: Final = "service.instance.id"

# -- Foreign spellings added for normalization (collector/spans/normalize.py) ----------------------
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"  # OTel GenAI current, traceAI
