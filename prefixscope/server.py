"""``prefixscope serve``: collector + API + dashboard in one process (the embedded default).

Wires the stages together: sink (DuckDB store or Parquet lake) → GroupCommitWriter →
IngestPipeline → HTTP and gRPC transports, the Parquet lake roller, and the API router.
On SIGTERM/SIGINT the transports stop taking requests and finish the ones in flight, the
writer commits everything queued (every acknowledged span is durable before that), the lake
gets a last roll, and the store is checkpointed and closed.
"""

from __future__ import annotations

import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc
import uvicorn
from fastapi import FastAPI

from prefixscope import __version__
from prefixscope.collector.decoding import use_decoder
from prefixscope.collector.metrics.memory import DedupeCollector, MemoryCollector
from prefixscope.collector.metrics.variants import VariantMetrics
from prefixscope.collector.pipeline.ingest import InFlight, IngestPipeline
from prefixscope.collector.pipeline.logs import LogPipeline
from prefixscope.collector.pipeline.writer import GroupCommitWriter
from prefixscope.collector.receivers.grpc import start_grpc_server
from prefixscope.collector.receivers.http import ingest_routes
from prefixscope.collector.storage import attribution
from prefixscope.collector.storage.fs import s3_options_from_env
from prefixscope.collector.storage.lake import LakeRoller
from prefixscope.collector.storage.lake_registry import LakeRegistry
from prefixscope.collector.storage.request_store import RequestResolver
from prefixscope.collector.storage.sinks import DuckDBSink, LakeSink, SpanSink
from prefixscope.collector.storage.store import Store, dedupe_max_keys
from prefixscope.config import ConfigError, ServedModel, Settings, duration
from prefixscope.metrics import Metrics

if TYPE_CHECKING:
    import pyarrow as pa

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
        self.store: Store | None = None
        self.lake: LakeRoller | None = None
        self.requests: RequestResolver | None = None
        self.variant_metrics: VariantMetrics | None = None
        sink: SpanSink
        self.lake_registry: LakeRegistry | None = None
        if settings.store == "lake":  # stateless scale-out collector: ingest and annotations
            lake = settings.lake_path or str(Path(settings.data_dir).resolve() / "lake")
            sink = LakeSink(
                lake,
                row_group_rows=settings.lake_row_group_rows,
                storage_options=s3_options_from_env(),
            )
            self.lake_registry = LakeRegistry(lake, storage_options=s3_options_from_env())
            try:
                self.lake_registry.declare_served(
                    [ServedModel.parse(t) for t in settings.served_models]
                )
            except OSError as exc:
                raise ConfigError(f"cannot write --served-model to the lake: {exc}") from None
        else:
            self.store = Store(
                settings.data_dir,
                checkpoint_wal_mb=settings.checkpoint_wal_mb,
                memory_mb=settings.store_memory_mb,
            )
            cur = self.store.cursor()
            try:
                attribution.declare_served(
                    cur, [ServedModel.parse(t) for t in settings.served_models]
                )
            finally:
                cur.close()
            sink = DuckDBSink(
                self.store,
                dedupe_window_s=duration(settings.dedupe_window).total_seconds(),
                dedupe_max_keys=dedupe_max_keys(settings.store_memory_mb),
            )
            self.metrics.registry.register(DedupeCollector(sink))
            if settings.variant_metrics_max_series > 0:
                self.variant_metrics = VariantMetrics(
                    settings.variant_metrics_max_series, mapping=self._served_names
                ).start()
                self.metrics.add_text(self.variant_metrics.exposition)
            self.lake = LakeRoller(
                self.store,
                self.metrics,
                interval_s=settings.lake_roll_interval_s,
                row_group_rows=settings.lake_row_group_rows,
                retention=duration(settings.retention) if settings.retention else None,
                hot_retention=(
                    duration(settings.hot_retention) if settings.hot_retention else None
                ),
                dedupe_window=duration(settings.dedupe_window),
                roll_rows=settings.lake_roll_rows,
            )
            settle = duration(settings.request_settle)
            self.requests = RequestResolver(
                self.store.cursor,
                settle=settle,
                lookback=duration(settings.request_lookback),
                interval_s=max(1.0, settle.total_seconds() / 2),
                lock=self.lake.lock,
                on_resolved=self._on_resolved,
            )
            self.store.before_read = self.requests.catch_up
        inflight = InFlight()  # requests being decoded: the writer lingers for them
        self.writer = GroupCommitWriter(
            sink,
            self.metrics,
            queue_max_spans=settings.queue_max_spans,
            batch_max_spans=settings.batch_max_spans,
            retry_after_s=settings.retry_after_s,
            linger_s=settings.commit_linger_ms / 1000,
            on_commit=self._on_commit,
            log_sink=sink if isinstance(sink, DuckDBSink) else None,
            log_batch_max=settings.logs_batch_max_records,
            log_queue_max=settings.logs_batch_max_records * settings.logs_max_inflight,
            more_coming=inflight.busy,
        )
        self.pipeline = IngestPipeline(settings, self.writer, self.metrics, inflight)
        self.logs = LogPipeline(settings, self.writer, self.metrics)
        self.metrics.registry.register(
            MemoryCollector(self.store, lambda: self.pipeline.worker_pids + self.logs.worker_pids)
        )
        self.api_context: Any = None
        self.app = self._build_app()
        self._grpc: grpc.Server | None = None
        self.grpc_port: int | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- composition -------------------------------------------------------------------------
    def _on_commit(self, table: pa.Table) -> None:
        """The writer's hook after each group commit: the roll's count."""
        if self.lake is not None:
            self.lake.committed(table)

    def _on_resolved(self, requests: pa.Table, replaced: pa.Table | None) -> None:
        """The request resolver's hook after each pass: per-variant metrics."""
        if self.variant_metrics is not None:
            self.variant_metrics.observe(requests, replaced)

    def _served_names(self) -> dict[str, tuple[str, str | None]]:
        assert self.store is not None
        cur = self.store.cursor()
        try:
            return attribution.name_map(cur)
        finally:
            cur.close()

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

    def _build_app(self) -> FastAPI:
        kwargs: dict[str, Any] = {}
        if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
            # The collector must never trace itself: in a process that also exports to it
            # (the demo, an embedding app) every export would create a span to export.
            kwargs["telemetry"] = {
                "tracing": False,
                "metrics": False,
                "logs": False,
                "auto_configure": False,
            }
        app = FastAPI(
            title="PrefixScope",
            version=__version__,
            description="Observability for prefix-tuned and LoRA variants of one base model.",
            docs_url=None,  # the API serves its own /docs page (no CDN scripts) ...
            openapi_url=None,  # ... and /openapi.json, both in the read scope
            redoc_url=None,
            **kwargs,
        )
        for route in ingest_routes(self.pipeline, self.health, self.logs):
            app.router.routes.append(route)
        from prefixscope.api.app import build_lake_router, build_router, install_error_handlers

        if self.store is None:  # lake mode: annotations and the registry, into the lake
            assert self.lake_registry is not None
            app.include_router(
                build_lake_router(
                    self.settings,
                    self.lake_registry.lake_url,
                    self.lake_registry,
                    s3_options_from_env(),
                )
            )
            install_error_handlers(app)
            return app
        from prefixscope.api.context import ApiContext

        ctx = ApiContext(
            settings=self.settings,
            store=self.store,
            metrics=self.metrics,
            variant_metrics=self.variant_metrics,
        )
        app.include_router(build_router(ctx))
        install_error_handlers(app)
        app.state.api_context = self.api_context = ctx
        return app

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
