"""What one serving process is made of: its storage backends (the embedded store with its lake
roller, request resolver and per-variant metrics, or a stateless lake sink) and its FastAPI
app. :mod:`prefixscope.server` wires them to the writer and the transports and runs them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from prefixscope import __version__
from prefixscope.collector.metrics.memory import DedupeCollector
from prefixscope.collector.metrics.variants import VariantMetrics
from prefixscope.collector.pipeline.ingest import IngestPipeline
from prefixscope.collector.pipeline.logs import LogPipeline
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

    from prefixscope.api.context import ApiContext


@dataclass
class Backends:
    """Where spans go and what follows their commit. ``store`` is ``None`` on a lake collector
    (``lake_registry`` is then set); the roller, the resolver and the variant metrics exist
    only beside a store."""

    sink: SpanSink
    store: Store | None = None
    lake: LakeRoller | None = None
    requests: RequestResolver | None = None
    variant_metrics: VariantMetrics | None = None
    lake_registry: LakeRegistry | None = None

    @property
    def log_sink(self) -> DuckDBSink | None:
        """GenAI log events are stored beside spans in DuckDB only."""
        return self.sink if isinstance(self.sink, DuckDBSink) else None

    def on_commit(self, table: pa.Table) -> None:
        """The writer's hook after each group commit: the roll's count."""
        if self.lake is not None:
            self.lake.committed(table)


def backends(settings: Settings, metrics: Metrics) -> Backends:
    return (
        lake_backends(settings)
        if settings.store == "lake"
        else embedded_backends(settings, metrics)
    )


def lake_backends(settings: Settings) -> Backends:
    """A stateless scale-out collector: spans, annotations and the registry go to the lake."""
    lake = settings.lake_path or str(Path(settings.data_dir).resolve() / "lake")
    sink = LakeSink(
        lake, row_group_rows=settings.lake_row_group_rows, storage_options=s3_options_from_env()
    )
    registry = LakeRegistry(lake, storage_options=s3_options_from_env())
    try:
        registry.declare_served([ServedModel.parse(t) for t in settings.served_models])
    except OSError as exc:
        raise ConfigError(f"cannot write --served-model to the lake: {exc}") from None
    return Backends(sink=sink, lake_registry=registry)


def embedded_backends(settings: Settings, metrics: Metrics) -> Backends:
    """The embedded default: a DuckDB store, its Parquet roller, the request resolver and,
    when enabled, the per-variant Prometheus series."""
    store = Store(
        settings.data_dir,
        checkpoint_wal_mb=settings.checkpoint_wal_mb,
        memory_mb=settings.store_memory_mb,
    )
    cur = store.cursor()
    try:
        attribution.declare_served(cur, [ServedModel.parse(t) for t in settings.served_models])
    finally:
        cur.close()
    sink = DuckDBSink(
        store,
        dedupe_window_s=duration(settings.dedupe_window).total_seconds(),
        dedupe_max_keys=dedupe_max_keys(settings.store_memory_mb),
    )
    metrics.registry.register(DedupeCollector(sink))
    variant_metrics = None
    if settings.variant_metrics_max_series > 0:
        variant_metrics = VariantMetrics(
            settings.variant_metrics_max_series, mapping=_served_names(store)
        ).start()
        metrics.add_text(variant_metrics.exposition)
    lake = LakeRoller(
        store,
        metrics,
        interval_s=settings.lake_roll_interval_s,
        row_group_rows=settings.lake_row_group_rows,
        retention=duration(settings.retention) if settings.retention else None,
        hot_retention=duration(settings.hot_retention) if settings.hot_retention else None,
        dedupe_window=duration(settings.dedupe_window),
        roll_rows=settings.lake_roll_rows,
    )
    settle = duration(settings.request_settle)
    requests = RequestResolver(
        store.cursor,
        settle=settle,
        lookback=duration(settings.request_lookback),
        interval_s=max(1.0, settle.total_seconds() / 2),
        lock=lake.lock,
        on_resolved=variant_metrics.observe if variant_metrics is not None else None,
    )
    store.before_read = requests.catch_up
    return Backends(
        sink=sink, store=store, lake=lake, requests=requests, variant_metrics=variant_metrics
    )


def _served_names(store: Store) -> Callable[[], dict[str, tuple[str, str | None]]]:
    """The served-name → (prefix id, version) map, read afresh on each call."""

    def read() -> dict[str, tuple[str, str | None]]:
        cur = store.cursor()
        try:
            return attribution.name_map(cur)
        finally:
            cur.close()

    return read


def build_app(
    settings: Settings,
    parts: Backends,
    metrics: Metrics,
    pipeline: IngestPipeline,
    logs: LogPipeline,
    health: Callable[[], tuple[bool, dict[str, Any]]],
) -> tuple[FastAPI, ApiContext | None]:
    """The ingest routes, then the API and dashboard over the store (or, on a lake collector,
    the annotation and registry routes into the lake); with the context the API holds."""
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
    for route in ingest_routes(pipeline, health, logs):
        app.router.routes.append(route)
    from prefixscope.api.app import build_lake_router, build_router, install_error_handlers

    if parts.store is None:  # lake mode: annotations and the registry, into the lake
        assert parts.lake_registry is not None
        app.include_router(
            build_lake_router(
                settings, parts.lake_registry.lake_url, parts.lake_registry, s3_options_from_env()
            )
        )
        install_error_handlers(app)
        return app, None
    from prefixscope.api.context import ApiContext

    ctx = ApiContext(
        settings=settings,
        store=parts.store,
        metrics=metrics,
        variant_metrics=parts.variant_metrics,
    )
    app.include_router(build_router(ctx))
    install_error_handlers(app)
    app.state.api_context = ctx
    return app, ctx
