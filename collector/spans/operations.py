"""Which spans are model calls: the operation values (lower-case, as ``normalize.py`` reads
them from each convention's kind attribute) that make a span a call, and those that never do
(the request rule, :mod:`.requests`)."""

from __future__ import annotations

from prefixscope import semconv

#: operation values (lower-case) that make a span a model call (a generation)
CALL_OPERATIONS: frozenset[str] = frozenset(
    {
        semconv.REQUEST_SPAN_KIND,  # @trace(request=True)
        # OTel GenAI gen_ai.operation.name; OpenLLMetry llm.request.type; LiteLLM
        "chat",
        "text_completion",
        "generate_content",
        "completion",
        "llm_request",  # OpenLLMetry's custom operation
        # OpenInference openinference.span.kind, traceAI gen_ai.span.kind / fi.span.kind,
        # MLflow mlflow.spanType
        "llm",
        "chat_model",
        # Langfuse langfuse.observation.type
        "generation",
        # Vercel AI SDK ai.operationId: the provider calls inside the loop
        "ai.generatetext.dogenerate",
        "ai.streamtext.dostream",
        "ai.generateobject.dogenerate",
        "ai.streamobject.dostream",
    }
)
#: operation values (lower-case) of spans that are never requests themselves, even when they
#: carry a model name or the summed tokens of the calls below them: wrappers (agents, chains,
#: tools, workflows...) and model calls that are not generations (embeddings, reranking)
NOT_CALL_OPERATIONS: frozenset[str] = frozenset(
    {
        # OTel GenAI, AI SDK 7, openai-agents, OpenLLMetry custom operations
        "invoke_agent",
        "create_agent",
        "execute_tool",
        "execute_task",
        "invoke_workflow",
        "retrieval",
        "agent_step",
        "handoff",
        "guardrail",
        "vector_db_retrieve",
        "embeddings",
        "image_generation",
        "transcription",
        "speech",
        "rerank",
        # OpenInference / traceAI / MLflow / Langfuse span kinds
        "chain",
        "tool",
        "agent",
        "retriever",
        "embedding",
        "reranker",
        "evaluator",
        "prompt",
        "parser",
        "memory",
        "unknown",
        "conversation",
        "vector_db",
        "a2a_client",
        "a2a_server",
        "span",
        "event",
        # OpenLLMetry traceloop.span.kind
        "workflow",
        "task",
        # Logfire: a stream's end record (paired with its request, below) and pending spans
        "log",
        "pending_span",
        # Vercel AI SDK ai.operationId: the outer loops carry the summed usage
        "ai.generatetext",
        "ai.streamtext",
        "ai.generateobject",
        "ai.streamobject",
        "ai.toolcall",
        "ai.embed",
        "ai.embedmany",
        "ai.embed.doembed",
        "ai.embedmany.doembed",
        "ai.rerank",
        "ai.rerank.dorerank",
    }
)
