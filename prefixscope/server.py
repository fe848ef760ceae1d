"""``prefixscope serve``: collector + API + dashboard in one process (the embedded default).

Wires the stages together: the storage backends and the app (:mod:`prefixscope.assembly`:
sink, DuckDB store or Parquet lake, the lake roller, the request resolver, the API router) →
GroupCommitWriter → IngestPipeline → HTTP and gRPC transports.
On SIGTERM/SIGINT the transports stop taking requests and finish the ones in flight, the
writer commits everything queued (every acknowledged span is durable before that), the lake
gets a last roll, and the store is checkpointed and closed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import grpc
import uvicorn

from prefixscope.assembly import backends, build_app
from prefixscope.collector.decoding import use_decoder
from prefixscope.collector.metrics.memory import MemoryCollector
from prefixscope.collector.pipeline.ingest import InFlight, IngestPipeline
from prefixscope.collector.pipeline.logs import LogPipeline
from prefixscope.collector.pipeline.writer import GroupCommitWriter
from prefixscope.collector.receivers.grpc import start_grpc_server
from prefixscope.config import ConfigError, Settings
from prefixscope.metrics import Metrics

log = logging.getLogger("prefixscope")


def _note_signal(signum: int, frame: object) -> None:
    log.info("received %s; shutting down", signal.Signals(signum).name)


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling the log receiver as soon as a signal asks it to exit: a log
    export still between its slices then stops (503, retryable) instead of holding the
    graceful shutdown for its whole length."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


class PrefixScopeServer:
    """One serving process. ``start()`` runs in background threads; ``serve_forever()`` blocks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.validate()
        self.metrics = Metrics()
        try:
            self.decoder, why = use_decoder(settings.decoder)
        except RuntimeError as exc:  # --decoder native where it cannot run
            raise ConfigError(str(exc)) from None
        self.metrics.decoder_info.labels(self.decoder).set(1)
        if self.decoder == "native":
            log.info("OTLP protobuf decoder: native (compiled)")
        else:
            log.info("OTLP protobuf decoder: python (%s)", why)
        parts = backends(settings, self.metrics)
        self.store = parts.store
        self.lake = parts.lake
        self.requests = parts.requests
        self.variant_metrics = parts.variant_metrics
        self.lake_registry = parts.lake_registry
        inflight = InFlight()  # requests being decoded: the writer lingers for them
        self.writer = GroupCommitWriter(
            parts.sink,
            self.metrics,
            queue_max_spans=settings.queue_max_spans,
            batch_max_spans=settings.batch_max_spans,
            retry_after_s=settings.retry_after_s,
            linger_s=settings.commit_linger_ms / 1000,
            on_commit=parts.on_commit,
            log_sink=parts.log_sink,
            log_batch_max=settings.logs_batch_max_records,
            log_queue_max=settings.logs_batch_max_records * settings.logs_max_inflight,
            more_coming=inflight.busy,
        )
        self.pipeline = IngestPipeline(settings, self.writer, self.metrics, inflight)
        self.logs = LogPipeline(settings, self.writer, self.metrics)
        self.metrics.registry.register(
            MemoryCollector(self.store, lambda: self.pipeline.worker_pids + self.logs.worker_pids)
        )
        self.app, self.api_context = build_app(
            settings, parts, self.metrics, self.pipeline, self.logs, self.health
        )
        self._grpc: grpc.Server | None = None
        self.grpc_port: int | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- composition -------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        ok = self.writer.healthy and not (self.store is not None and self.store.closed)
        detail: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "store": self.settings.store,
            "decoder": self.decoder,
            "queue_depth_spans": self.writer.queued_spans,
            "queue_depth_log_records": self.writer.queued_log_records,
            "log_exports_in_flight": self.logs.inflight,
        }
        if self.writer.last_commit_error:
            detail["last_commit_error"] = self.writer.last_commit_error
        return ok, detail

    # -- lifecycle -----------------------------------------------------------------------------
    def _start_backends(self) -> None:
        self.pipeline.start()
        self.writer.start()
        if self.lake is not None:
            self.lake.start()
        if self.requests is not None:
            self.requests.start()
        if self.settings.grpc_port:
            self._grpc, self.grpc_port = start_grpc_server(
                self.pipeline, self.settings.host, self.settings.grpc_port, self.logs
            )

    def _uvicorn_server(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.http_port,
            log_level=self.settings.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=30,
            lifespan="off",
        )
        return _Uvicorn(config, on_exit=self.logs.begin_shutdown)

    def serve_forever(self) -> None:
        """Serve until SIGTERM/SIGINT, then shut down gracefully."""
        self._start_backends()
        self._uvicorn = self._uvicorn_server()
        where = self.store.data_dir if self.store else self.settings.lake_path or "lake"
        log.info(
            "PrefixScope serving on http://%s:%d (gRPC %s), store: %s",
            self.settings.host,
            self.settings.http_port,
            self.grpc_port,
            where,
        )
        # uvicorn re-raises the signal it caught once it has shut down; with these handlers in
        # place that re-raise is harmless and the drain below always runs.
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, _note_signal) for sig in signals}
        try:
            self._uvicorn.run()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self, timeout: float = 30.0) -> None:
        """Serve in background threads (for the demo and embedding); returns when ready."""
        self._start_backends()
        self._uvicorn = self._uvicorn_server()
        self._thread = threading.Thread(
            target=self._uvicorn.run, name="prefixscope-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._shutdown()
                raise RuntimeError(f"HTTP server did not start on port {self.settings.http_port}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.logs.begin_shutdown()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(60)
        self._shutdown()

    def _shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._grpc is not None:
            self._grpc.stop(grace=10).wait(15)
        self.logs.close()  # requests between log slices answer 503 (retryable)
        self.writer.stop()
        self.pipeline.close()
        if self.api_context is not None:
            self.api_context.close()
        if self.requests is not None:
            self.requests.stop()  # resolves what the writer committed last
        if self.variant_metrics is not None:
            self.variant_metrics.close()
        if self.lake is not None:
            self.lake.stop()
            try:
                if self.settings.lake_roll_interval_s > 0:
                    self.lake.roll()
            except Exception:
                log.exception("final Parquet lake roll failed (spans remain in DuckDB)")
        if self.store is not None:
            self.store.close()
        log.info("PrefixScope stopped cleanly")
