"""Overhead of PrefixScope instrumentation, measured against a bare SDK span in the same run.

    .venv/bin/python bench/overhead.py [--n 20000] [--generate-runs 40]

Rows (µs per call, median of several rounds; every tracer exports through a
BatchSpanProcessor into an exporter that drops the batch, so the cost is the SDK's, not I/O):

- ``noop tracer span``: the OTel API without an SDK (the floor).
- ``bare SDK span``: ``with tracer.start_as_current_span(...)`` on a plain provider.
- ``@trace``: the decorator on an empty function, with the processors ``configure`` installs,
  inside a ``variant(...)`` scope (five attributes stamped).
- ``HF instrumentor``: the generate wrapper around a stand-in generate that returns a
  precomputed 32-token output and feeds the streamer 33 times (so the model's time is not
  counted): span, adapter detection, token counts, finish reasons, TTFT hook.
- ``generate 32 tokens``: a real tiny-model ``generate`` with and without instrumentation,
  interleaved, and the instrumentation's share of it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider
from prefixscope.instrumentation import VariantSpanProcessor, trace, variant


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def sdk_provider(with_variants: bool) -> TracerProvider:
    tp = TracerProvider()
    if with_variants:
        tp.add_span_processor(VariantSpanProcessor())
    tp.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 20))
    return tp


def per_call_us(fn: Callable[[], Any], n: int, rounds: int = 5) -> float:
    """Median over rounds of the mean µs per call."""
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(results)


def span_rows(n: int) -> dict[str, float]:
    noop = NoOpTracerProvider().get_tracer("bench")
    bare = sdk_provider(False).get_tracer("bench")
    ours = sdk_provider(True)

    def noop_span() -> None:
        with noop.start_as_current_span("op"):
            pass

    def bare_span() -> None:
        with bare.start_as_current_span("op"):
            pass

    @trace(tracer_provider=ours, name="op")
    def traced() -> None:
        return None

    def empty() -> None:
        return None

    scope = variant(
        prefix_id="radiology", prefix_version="3", route="imaging", cohort={"specialty": "rad"}
    )
    with scope:
        rows = {
            "empty function": per_call_us(empty, n),
            "noop tracer span": per_call_us(noop_span, n),
            "bare SDK span": per_call_us(bare_span, n),
            "@trace (in variant scope)": per_call_us(traced, n),
        }
    rows["@trace (no scope)"] = per_call_us(traced, n)
    return rows


def hf_rows(n: int, runs: int, cache: Path) -> dict[str, float]:
    import torch
    from prefixscope.instrumentation.hf import TransformersInstrumentor

    from prefixscope import tinymodels

    texts = ("finding: chest x-ray shows no acute disease. code R93.1",)
    base = tinymodels.build_base(tinymodels.SAMPLE_CORPUS + texts, cache_dir=cache)
    adapter = tinymodels.train_prefix(base, texts, "radiology")
    model = tinymodels.load_with_adapters(base, [adapter])
    enc = dict(base.tokenizer(["finding:", "the patient was"], return_tensors="pt", padding=True))
    gen_kwargs = {**enc, "max_new_tokens": 32, "min_new_tokens": 32}
    with torch.no_grad():
        precomputed = model.generate(**gen_kwargs)

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        streamer = kwargs.get("streamer")
        if streamer is not None:
            for _ in range(33):
                streamer.put(precomputed[:, -1])
            streamer.end()
        return precomputed

    inst = TransformersInstrumentor()
    inst.uninstrument()
    inst.instrument(tracer_provider=sdk_provider(True))
    with variant(route="imaging"):
        wrapper_us = per_call_us(
            lambda: inst._wrap_generate(stand_in, model, (), dict(gen_kwargs)), max(n // 10, 200)
        )
        stand_in_us = per_call_us(lambda: stand_in(**gen_kwargs), max(n // 10, 200))

        on: list[float] = []
        off: list[float] = []
        for _ in range(runs):  # interleaved so machine noise hits both sides alike
            for enabled, bucket in ((True, on), (False, off)):
                if enabled and not inst.is_instrumented:
                    inst.instrument(tracer_provider=sdk_provider(True))
                elif not enabled:
                    inst.uninstrument()
                t0 = time.perf_counter()
                model.generate(**gen_kwargs)
                bucket.append((time.perf_counter() - t0) * 1e6)
    inst.uninstrument()
    return {
        "HF instrumentor (per generate span)": wrapper_us - stand_in_us,
        "generate 32 tokens, uninstrumented": statistics.median(off),
        "generate 32 tokens, instrumented": statistics.median(on),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="calls per round for span rows")
    parser.add_argument("--generate-runs", type=int, default=40)
    parser.add_argument("--cache", type=Path, default=Path(".cache/tinymodels"))
    parser.add_argument("--skip-hf", action="store_true")
    args = parser.parse_args(argv)

    rows = span_rows(args.n)
    if not args.skip_hf:
        rows.update(hf_rows(args.n, args.generate_runs, args.cache))
    bare = rows["bare SDK span"]
    print(f"{'measurement':44} {'µs/call':>10} {'vs bare SDK span':>17}")
    for name, value in rows.items():
        rel = f"{(value - bare) / bare * 100:+.1f}%" if "span" in name or "@" in name else ""
        print(f"{name:44} {value:10.1f} {rel:>17}")
    traced = rows["@trace (in variant scope)"] - rows["empty function"]
    print(f"\n@trace cost over a bare SDK span: {(traced - bare) / bare * 100:+.1f}%")
    if not args.skip_hf:
        hf = rows["HF instrumentor (per generate span)"]
        gen = rows["generate 32 tokens, uninstrumented"]
        measured = rows["generate 32 tokens, instrumented"] - gen
        print(f"HF instrumentor cost over a bare SDK span: {(hf - bare) / bare * 100:+.1f}%")
        print(f"HF instrumentor share of a 32-token generate: {hf / gen * 100:.2f}%")
        print(
            f"measured end-to-end difference (noisy): {measured:+.0f} µs "
            f"({measured / gen * 100:+.2f}%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
