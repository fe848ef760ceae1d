"""Real OTel SDK exporters (HTTP and gRPC ``OTLPSpanExporter`` in ``BatchSpanProcessor``s)
wrapped to record which spans' export returned SUCCESS, plus span generators."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

Key = tuple[str, str]


class RecordingExporter(SpanExporter):
    """Delegates to a real exporter; remembers the spans of every export that succeeded."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.acked: list[Key] = []
        self.results: dict[str, int] = {"success": 0, "failure": 0}
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.results["success"] += 1
                for sp in spans:
                    ctx = sp.get_span_context()
                    assert ctx is not None
                    self.acked.append((f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"))
            else:
                self.results["failure"] += 1
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class SdkClient:
    """One TracerProvider + BatchSpanProcessor + recording exporter, and a thread that makes
    workload-like spans as fast as the processor takes them."""

    def __init__(
        self,
        transport: str,
        *,
        http_port: int,
        grpc_port: int,
        timeout_s: float = 3.0,
        seed: int = 0,
        batch: int = 256,
    ) -> None:
        self.transport = transport
        inner: SpanExporter
        if transport == "http":
            inner = HttpExporter(
                endpoint=f"http://127.0.0.1:{http_port}/v1/traces", timeout=timeout_s
            )
        else:
            inner = GrpcExporter(
                endpoint=f"127.0.0.1:{grpc_port}", insecure=True, timeout=timeout_s
            )
        self.exporter = RecordingExporter(inner)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": f"rel-{transport}-{seed}"})
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                self.exporter,
                max_queue_size=8 * batch,
                max_export_batch_size=batch,
                schedule_delay_millis=50,
            )
        )
        self.tracer = self.provider.get_tracer("prefixscope.reliability")
        self.rng = random.Random(seed)
        self.made = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = self.rng
        while not self._stop.is_set():
            with self.tracer.start_as_current_span("agent.run") as root:
                root.set_attribute("prefix.id", f"pfx-{rng.randrange(200):04d}")
                for _ in range(7):
                    with self.tracer.start_as_current_span("ChatCompletion") as sp:
                        sp.set_attribute("prefix.id", f"pfx-{rng.randrange(200):04d}")
                        sp.set_attribute("base_model", "llama-3-8b")
                        sp.set_attribute("route", "/chat")
                        sp.set_attribute("gen_ai.usage.input_tokens", rng.randint(50, 4000))
                        sp.set_attribute("gen_ai.usage.output_tokens", rng.randint(10, 1200))
            self.made += 8
            if self.made % 512 == 0:
                self._stop.wait(0.01)  # let the exporter thread run

    def start(self) -> SdkClient:
        self._thread.start()
        return self

    def stop_making(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def shutdown(self) -> None:
        self.stop_making()
        self.provider.shutdown()
