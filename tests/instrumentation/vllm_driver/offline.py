"""Runs inside .venv-vllm: the real vLLM CPU engine, offline and async, instrumented.

    python offline.py BASE_DIR LORA_DIR OUT_JSON

Writes the finished spans (from an in-memory exporter) and, independently, what the engine
returned (the ground truth the test compares the spans with). The async engine exports its
own native ``llm_request`` spans to a loopback OTLP/HTTP receiver in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NATIVE: list[bytes] = []


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        NATIVE.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def span_json(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {
            k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()
        },
    }


def truth(out: Any) -> dict[str, Any]:
    m = out.metrics
    return {
        "request_id": out.request_id,
        "prompt_tokens": len(out.prompt_token_ids or []),
        "output_tokens": sum(len(c.token_ids) for c in out.outputs),
        "text": out.outputs[0].text,
        "finish_reason": out.outputs[0].finish_reason,
        "num_cached_tokens": out.num_cached_tokens,
        "lora": out.lora_request.lora_name if out.lora_request else None,
        "metrics": None
        if m is None
        else {
            k: getattr(m, k)
            for k in (
                "arrival_time",
                "queued_ts",
                "scheduled_ts",
                "first_token_ts",
                "last_token_ts",
                "first_token_latency",
            )
        },
    }


def decode_native() -> list[dict[str, Any]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = []
    for body in NATIVE:
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        {
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_id": s.parent_span_id.hex() or None,
                        }
                    )
    return spans


def main() -> None:
    base, lora_path, out_path = sys.argv[1:4]
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from prefixscope.instrumentation import VariantSpanProcessor, variant
    from prefixscope.instrumentation.vllm import VLLMInstrumentor

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(VariantSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    assert VLLMInstrumentor().instrument(tracer_provider=provider)

    engine_kwargs: dict[str, Any] = {
        "model": base,
        "enable_lora": True,
        "max_lora_rank": 8,
        "max_loras": 1,
        "max_model_len": 256,
        "dtype": "float32",
        "seed": 0,
        "disable_log_stats": False,
        "enable_prefix_caching": True,
        "block_size": 32,  # the CPU default (128) is longer than our prompts: nothing to reuse
        "kv_cache_memory_bytes": 64 << 20,  # tiny model: a few MB would do; keep the host free
    }
    rad = LoRARequest("radiology-lora", 1, lora_path)
    greedy = SamplingParams(max_tokens=10, temperature=0)
    long_prompt = "finding: " + " ".join(["the vital signs were stable."] * 14)
    result: dict[str, Any] = {"calls": {}}

    llm = LLM(**engine_kwargs)
    calls: dict[str, Any] = {}
    memory.clear()
    calls["batch_base"] = llm.generate(["finding:", "the patient was"], greedy, use_tqdm=False)
    calls["mixed_lora"] = llm.generate(
        ["finding:", "finding:"], greedy, lora_request=[rad, None], use_tqdm=False
    )
    calls["base_after_lora"] = llm.generate(["finding:"], greedy, use_tqdm=False)
    calls["cache_warm"] = llm.generate([long_prompt], greedy, use_tqdm=False)
    calls["cache_hit"] = llm.generate([long_prompt], greedy, use_tqdm=False)
    with variant(prefix_id="chat-variant", route="chat-route"):
        calls["chat"] = llm.chat(
            [{"role": "user", "content": "finding:"}], greedy, lora_request=rad, use_tqdm=False
        )
    result["calls"] = {k: [truth(o) for o in v] for k, v in calls.items()}
    result["offline_spans"] = [span_json(s) for s in memory.get_finished_spans()]
    llm.llm_engine.engine_core.shutdown()
    del llm

    # -- async engine, with vLLM's native tracing pointed at a loopback receiver ------------
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    args = AsyncEngineArgs(**engine_kwargs, otlp_traces_endpoint=endpoint)

    async def run_async() -> list[Any]:
        engine = AsyncLLM.from_engine_args(args)
        outs = []
        try:
            with variant(cohort={"specialty": "radiology"}):
                async for out in engine.generate(
                    "finding:", greedy, request_id="async-1", lora_request=rad
                ):
                    outs.append(out)
        finally:
            engine.shutdown()
        return outs

    memory.clear()
    outs = asyncio.run(run_async())
    result["async"] = {"truth": truth(outs[-1]), "chunks": len(outs)}
    result["async_spans"] = [span_json(s) for s in memory.get_finished_spans()]
    from opentelemetry import trace as otel_trace

    native_provider = otel_trace.get_tracer_provider()
    if hasattr(native_provider, "force_flush"):
        native_provider.force_flush()
    result["native_spans"] = decode_native()
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
