"""Run in ``.venv-interop``: LangChain (``langchain-openai``'s ``ChatOpenAI``) traced by a
third-party LangChain instrumentor, exporting with the OTel SDK's OTLP exporters.

    python langchain_driver.py SETUP --otlp http://127.0.0.1:4318 --openai URL/v1
        [--protocol http|grpc --grpc 127.0.0.1:4317]

SETUP (the instrumentors on, all on one tracer provider, service ``interop-langchain-SETUP``):

* ``openinference``: OpenInference's LangChain instrumentor;
* ``openllmetry``: OpenLLMetry's (Traceloop) LangChain instrumentor;
* ``openinference-dual``: OpenInference's LangChain and OpenAI instrumentors together. The
  LangChain instrumentor does not enter its spans in the context, so the OpenAI client's span
  of each call starts a trace of its own: every call is recorded twice, in two traces;
* ``openllmetry-dual``: OpenLLMetry's LangChain and OpenAI instrumentors together (its
  LangChain callback suppresses the OpenAI instrumentor's span).

Four scenarios, one after another:

* ``chain``: ``prompt | ChatOpenAI`` invoked (model ``cardiology``);
* ``stream``: the same chain ``.stream()``ed with ``stream_usage=True`` (``radiology``);
* ``error``: the chain on model ``broken``, which the stub answers with HTTP 500;
* ``agent``: a hand-written tool-calling loop run as one runnable named
  ``radiology_agent``: the model (``radiology``, one tool bound) asks for the tool, the tool
  runs, the model answers: two model calls and one tool call under one agent span.

Prints one JSON line, the ground truth of what it ran: per scenario the model calls it made
(model, streamed, failed, its own wall-clock time of the call and, when streamed, the time to
the first chunk it received) and the trace ids of the spans the SDK ended meanwhile; and the
package versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from driver import otlp_exporters

SETUPS = {
    "openinference": ["openinference-instrumentation-langchain"],
    "openllmetry": ["opentelemetry-instrumentation-langchain"],
    "openinference-dual": [
        "openinference-instrumentation-langchain",
        "openinference-instrumentation-openai",
    ],
    "openllmetry-dual": [
        "opentelemetry-instrumentation-langchain",
        "opentelemetry-instrumentation-openai",
    ],
}
SCENARIOS = ("chain", "stream", "error", "agent")
QUESTION = "Chest pain radiating to the left arm. Diagnosis as JSON?"
STREAM_QUESTION = "Chest X-ray: any acute findings?"
AGENT_QUESTION = "Code this finding: chest x-ray normal"
#: the agent loop's bound on model calls (it needs two)
MAX_STEPS = 4


class _TraceLog(SpanProcessor):
    """Notes the trace id of every span ended, by scenario."""

    def __init__(self) -> None:
        self.scenario = ""
        self.traces: dict[str, list[str]] = {}

    def on_end(self, span: Any) -> None:
        seen = self.traces.setdefault(self.scenario, [])
        tid = format(span.context.trace_id, "032x")
        if tid not in seen:
            seen.append(tid)


def instrument(setup: str, provider: Any) -> None:
    if setup.startswith("openinference"):
        from openinference.instrumentation.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=provider)
        if setup.endswith("-dual"):
            from openinference.instrumentation.openai import OpenAIInstrumentor

            OpenAIInstrumentor().instrument(tracer_provider=provider)
    else:
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        LangchainInstrumentor().instrument(tracer_provider=provider)
        if setup.endswith("-dual"):
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OLL

            OLL().instrument(tracer_provider=provider)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("setup", choices=sorted(SETUPS))
    ap.add_argument("--otlp", required=True)
    ap.add_argument("--openai", required=True)
    ap.add_argument("--protocol", choices=["http", "grpc"], default="http")
    ap.add_argument("--grpc", default=None)
    args = ap.parse_args()

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    resource = Resource.create({"service.name": f"interop-langchain-{args.setup}"})
    provider = TracerProvider(resource=resource)
    span_exporter, _ = otlp_exporters(args.protocol, args.otlp, args.grpc)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    log = _TraceLog()
    provider.add_span_processor(log)
    trace.set_tracer_provider(provider)
    instrument(args.setup, provider)

    import openai
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    def llm(model: str, **kw: Any) -> ChatOpenAI:
        return ChatOpenAI(
            model=model, base_url=args.openai, api_key="not-needed", max_retries=0, **kw
        )

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a clinical coding assistant."), ("user", "{question}")]
    )
    calls: dict[str, list[dict[str, Any]]] = {s: [] for s in SCENARIOS}

    def timed(scenario: str, model: str, stream: bool, run: Any) -> Any:
        """Run one model call (``run(on_chunk)``), noting it as the ground truth."""
        call: dict[str, Any] = {"model": model, "stream": stream, "failed": False}
        calls[scenario].append(call)
        t0 = time.perf_counter()

        def first_chunk() -> None:
            call.setdefault("first_chunk_ms", (time.perf_counter() - t0) * 1000.0)

        try:
            return run(first_chunk)
        except openai.APIError:
            call["failed"] = True
            return None
        finally:
            call["wall_ms"] = (time.perf_counter() - t0) * 1000.0

    # chain: invoked
    log.scenario = "chain"
    chain = prompt | llm("cardiology")
    timed("chain", "cardiology", False, lambda _: chain.invoke({"question": QUESTION}))

    # stream: the chain streamed, usage included
    log.scenario = "stream"
    streamed = prompt | llm("radiology", stream_usage=True)

    def consume(first_chunk: Any) -> None:
        for _ in streamed.stream({"question": STREAM_QUESTION}):
            first_chunk()

    timed("stream", "radiology", True, consume)

    # error: the server answers 500
    log.scenario = "error"
    failing = prompt | llm("broken")
    timed("error", "broken", False, lambda _: failing.invoke({"question": QUESTION}))

    # agent: model -> tool -> model, under one runnable named as an agent
    log.scenario = "agent"

    @tool
    def lookup_code(finding: str) -> str:
        """Look up the ICD-10 code of a radiology finding."""
        return "Z00.00"

    model = llm("radiology").bind_tools([lookup_code])

    def radiology_agent(question: str) -> str:
        messages: list[Any] = [
            SystemMessage("You code radiology findings; use the tool."),
            HumanMessage(question),
        ]
        for _ in range(MAX_STEPS):
            reply = timed("agent", "radiology", False, lambda _: model.invoke(messages))
            messages.append(reply)
            if not reply.tool_calls:
                return str(reply.content)
            for tool_call in reply.tool_calls:
                messages.append(lookup_code.invoke(tool_call))
        raise RuntimeError(f"the agent did not answer in {MAX_STEPS} steps")

    answer = RunnableLambda(radiology_agent, name="radiology_agent").invoke(AGENT_QUESTION)
    assert answer, "the agent gave no answer"

    provider.force_flush()
    provider.shutdown()
    out = {
        "setup": args.setup,
        "scenarios": [
            {"name": s, "calls": calls[s], "traces": log.traces.get(s, [])} for s in SCENARIOS
        ],
        "versions": {
            p: md.version(p)
            for p in [*SETUPS[args.setup], "langchain-core", "langchain-openai", "openai"]
        },
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
