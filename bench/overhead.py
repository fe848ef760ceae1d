"""Overhead of PrefixScope instrumentation, measured against a bare SDK span in the same run.

    .venv/bin/python bench/overhead.py [--n 20000] [--generate-runs 40]

Rows (µs of process CPU time per call, median of several rounds — CPU time, not wall time,
so that other processes on a shared machine do not count; every SDK tracer exports through a
BatchSpanProcessor into an exporter that drops the batch, so the cost is the SDK's, not I/O;
torch runs single-threaded, as OpenMP spin-waits make multi-threaded timings meaningless on a
busy 2-core host):

- ``noop tracer span``: the OTel API without an SDK (the floor).
- ``bare SDK span``: ``with tracer.start_as_current_span(...)`` on a plain provider.
- ``@trace``: the decorator on an empty function, with the processors ``configure`` installs,
  with no scope, and inside a ``variant(...)`` scope (four attributes stamped; the scope's own
  enter/exit is subtracted; compare with a bare SDK span that sets the same four attributes).
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


def per_call_us(fn: Callable[[], Any], n: int, rounds: int = 7) -> float:
    """The best (least disturbed) round's mean µs of CPU time per call."""
    return measure({"fn": fn}, n, rounds)["fn"]


def measure(fns: dict[str, Callable[[], Any]], n: int, rounds: int = 7) -> dict[str, float]:
    """Rounds interleave the candidates, so a busy spell on the host hits them alike; the
    minimum over rounds is reported (as ``timeit`` recommends)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.process_time()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.process_time() - t0) / n * 1e6)
    return best


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

    same = {
        "prefix.id": "radiology",
        "prefix.version": "3",
        "route": "imaging",
        "cohort.specialty": "rad",
    }

    def bare_span_attrs() -> None:
        with bare.start_as_current_span("op", attributes=same):
            pass

    @trace(tracer_provider=ours, name="op")
    def traced() -> None:
        return None

    def empty() -> None:
        return None

    scope = variant(
        prefix_id="radiology", prefix_version="3", route="imaging", cohort={"specialty": "rad"}
    )

    def traced_in_scope() -> None:
        with scope:
            traced()

    def scope_only() -> None:
        with scope:
            empty()

    rows = measure(
        {
            "empty function": empty,
            "noop tracer span": noop_span,
            "bare SDK span": bare_span,
            "bare SDK span + the same 4 attributes": bare_span_attrs,
            "@trace (no scope)": traced,
            "variant scope enter/exit alone": scope_only,
            "@trace in a variant scope": traced_in_scope,
        },
        n,
    )
    rows["@trace in a variant scope"] -= rows["variant scope enter/exit alone"]
    return rows


def hf_rows(n: int, runs: int, cache: Path) -> dict[str, float]:
    import torch

    from prefixscope.instrumentation.hf import TransformersInstrumentor

    torch.set_num_threads(1)
    from prefixscope.demo import tinymodels

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

    provider = sdk_provider(True)
    inst = TransformersInstrumentor()
    inst.uninstrument()
    inst.instrument(tracer_provider=provider)
    with variant(route="imaging"):
        costs = measure(
            {
                "wrapped": lambda: inst._wrap_generate(stand_in, model, (), dict(gen_kwargs)),
                "stand-in": lambda: stand_in(**gen_kwargs),
            },
            max(n // 10, 200),
        )
        wrapper_us, stand_in_us = costs["wrapped"], costs["stand-in"]

        on: list[float] = []
        off: list[float] = []
        model.generate(**gen_kwargs)  # warm up
        for _ in range(runs):  # interleaved so machine noise hits both sides alike
            for enabled, bucket in ((True, on), (False, off)):
                if enabled and not inst.is_instrumented:
                    inst.instrument(tracer_provider=provider)
                elif not enabled:
                    inst.uninstrument()
                t0 = time.process_time()
                model.generate(**gen_kwargs)
                bucket.append((time.process_time() - t0) * 1e6)
    inst.uninstrument()
    return {
        "HF instrumentor (per generate span)": wrapper_us - stand_in_us,
        "generate 32 tokens, uninstrumented": statistics.median(off),
        "generate 32 tokens, instrumented": statistics.median(on),
        "generate 32 tokens, uninstrumented (min)": min(off),
        "generate 32 tokens, instrumented (min)": min(on),
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
    print(f"{'measurement':44} {'CPU µs/call':>12} {'vs bare SDK span':>17}")
    for name, value in rows.items():
        rel = f"{(value - bare) / bare * 100:+.1f}%" if "span" in name or "@" in name else ""
        if name.startswith("generate"):
            rel = ""
        print(f"{name:44} {value:12.1f} {rel:>17}")
    traced = rows["@trace in a variant scope"] - rows["empty function"]
    plain = rows["@trace (no scope)"] - rows["empty function"]
    same = rows["bare SDK span + the same 4 attributes"]
    print(f"\n@trace (no scope) over a bare SDK span: {(plain - bare) / bare * 100:+.1f}%")
    print(
        f"@trace in a variant scope over a bare span with the same attributes: "
        f"{(traced - same) / same * 100:+.1f}%"
    )
    if not args.skip_hf:
        hf = rows["HF instrumentor (per generate span)"]
        gen = rows["generate 32 tokens, uninstrumented"]
        measured = rows["generate 32 tokens, instrumented"] - gen
        low = rows["generate 32 tokens, instrumented (min)"]
        low -= rows["generate 32 tokens, uninstrumented (min)"]
        print(f"HF instrumentor share of a 32-token generate: {hf / gen * 100:.2f}%")
        print(
            f"end-to-end difference, median: {measured:+.0f} µs ({measured / gen * 100:+.2f}%), "
            f"min: {low:+.0f} µs ({low / gen * 100:+.2f}%)  (noisy on a shared host)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
