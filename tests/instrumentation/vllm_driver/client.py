"""Runs inside .venv-vllm: OpenAI-client calls to a running vLLM server, instrumented.

    python client.py VLLM_BASE_URL COLLECTOR_URL BASE_MODEL LORA_NAME OUT_JSON

Exports through ``configure`` (real OTLP/HTTP) to the PrefixScope collector and writes what
the server answered, so the test can compare.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


def main() -> None:
    vllm_url, collector, base_model, lora, out_path = sys.argv[1:6]
    from openai import AsyncOpenAI, OpenAI

    from prefixscope.instrumentation import configure, current_ids, trace, variant
    from prefixscope.instrumentation.vllm import VLLMInstrumentor

    provider = configure(collector, service_name="vllm-client", base_model=base_model)
    assert VLLMInstrumentor().instrument()
    client = OpenAI(base_url=vllm_url + "/v1", api_key="unused")
    result: dict[str, Any] = {}

    @trace(name="handle-note")
    def handle() -> dict[str, Any]:
        ids = current_ids()
        assert ids is not None
        with variant(cohort={"specialty": "radiology"}):
            lora_resp = client.completions.create(
                model=lora, prompt="finding:", max_tokens=8, temperature=0
            )
        base_resp = client.chat.completions.create(
            model=base_model,
            messages=[{"role": "user", "content": "finding:"}],
            max_tokens=6,
            temperature=0,
        )
        chunks = client.completions.create(
            model=lora,
            prompt="finding:",
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed = [c for c in chunks]
        return {
            "trace_id": ids.trace_id,
            "lora": {
                "id": lora_resp.id,
                "text": lora_resp.choices[0].text,
                "usage": lora_resp.usage.model_dump(),
            },
            "base": {
                "id": base_resp.id,
                "text": base_resp.choices[0].message.content,
                "usage": base_resp.usage.model_dump(),
            },
            "stream": {
                "chunks": len(streamed),
                "usage": streamed[-1].usage.model_dump() if streamed[-1].usage else None,
            },
        }

    result["sync"] = handle()

    async def async_call() -> dict[str, Any]:
        aclient = AsyncOpenAI(base_url=vllm_url + "/v1", api_key="unused")
        resp = await aclient.completions.create(
            model=lora, prompt="the patient was", max_tokens=5, temperature=0
        )
        return {"id": resp.id, "usage": resp.usage.model_dump()}

    result["async"] = asyncio.run(async_call())
    assert provider.force_flush(30_000)
    provider.shutdown()
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
