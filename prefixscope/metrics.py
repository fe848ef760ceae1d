"""Prometheus metrics of one server instance (one registry per server, served at /metrics)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Every metric the server exports. Names are part of the operator-facing surface."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        #: families rendered as text by their owner, after the registry's (see add_text)
        self._texts: list[Callable[[], str]] = []
        self.spans_received = Counter(
            "prefixscope_spans_received",
            "Spans decoded from export requests",
            ["transport"],
            registry=r,
        )
        self.spans_committed = Counter(
            "prefixscope_spans_committed", "Spans durably committed to the store", registry=r
        )
        self.spans_duplicate = Counter(
            "prefixscope_spans_duplicate",
            "Spans ignored because (trace_id, span_id) was already stored",
            registry=r,
        )
        self.spans_rejected = Counter(
            "prefixscope_spans_rejected",
            "Spans rejected as invalid (reported in OTLP partial_success)",
            registry=r,
        )
        self.spans_dropped = Counter(
            "prefixscope_spans_dropped",
            "Spans refused without being stored (overload, errors); the client was told",
            ["reason"],
            registry=r,
        )
        self.requests = Counter(
            "prefixscope_ingest_requests",
            "OTLP export requests by outcome",
            ["transport", "status"],
            registry=r,
        )
        self.attributes_truncated = Counter(
            "prefixscope_attributes_truncated",
            "Attribute values truncated to the size limit",
            registry=r,
        )
        self.requests_shed = Counter(
            "prefixscope_requests_shed",
            "Export requests refused before reading their body (at capacity)",
            registry=r,
        )
        self.log_requests_shed = Counter(
            "prefixscope_log_requests_shed",
            "Log export requests refused before reading their body (log budget spent)",
            registry=r,
        )
        self.queue_depth = Gauge(
            "prefixscope_queue_depth_spans", "Spans waiting for the group commit", registry=r
        )
        self.commit_latency = Histogram(
            "prefixscope_commit_latency_seconds",
            "Time to commit one group of spans",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.commit_batch_spans = Histogram(
            "prefixscope_commit_batch_spans",
            "Spans per group commit",
            buckets=(1, 10, 100, 512, 1000, 2500, 5000, 10000, 25000, 50000),
            registry=r,
        )
        self.commit_errors = Counter(
            "prefixscope_commit_errors",
            "Group commits that failed (retryable for clients)",
            registry=r,
        )
        self.decode_worker_restarts = Counter(
            "prefixscope_decode_worker_restarts",
            "Decode worker processes that exited and were replaced",
            registry=r,
        )
        self.lake_rows = Counter(
            "prefixscope_lake_rows_written",
            "Rows rolled into the Parquet lake",
            ["table"],
            registry=r,
        )
        self.retention_partitions = Counter(
            "prefixscope_retention_partitions_dropped",
            "Lake date partitions dropped by --retention",
            ["table"],
            registry=r,
        )
        self.retention_rows = Counter(
            "prefixscope_retention_rows_deleted",
            "Store rows deleted by --retention",
            ["table"],
            registry=r,
        )
        self.retention_cutoff = Gauge(
            "prefixscope_retention_cutoff_timestamp_seconds",
            "The cutoff of the last retention pass (0: retention off or not run yet)",
            registry=r,
        )
        self.tier_moved_rows = Counter(
            "prefixscope_tier_moved_rows",
            "Rows moved from the hot tier (DuckDB) to the cold tier (the Parquet lake)",
            ["table"],
            registry=r,
        )
        self.tier_boundary = Gauge(
            "prefixscope_tier_boundary_timestamp_seconds",
            "Spans that started before this and were rolled live in the cold tier only "
            "(0: nothing moved yet)",
            registry=r,
        )
        self.tier_compacted_files = Counter(
            "prefixscope_tier_compacted_files",
            "Cold-tier lake files merged by compaction (in: replaced, out: written)",
            ["direction"],
            registry=r,
        )
        self.tier_duplicates_removed = Counter(
            "prefixscope_tier_duplicates_removed",
            "Duplicate spans (a retry beyond the dedupe window) removed by cold-tier compaction",
            registry=r,
        )
        self.decoder_info = Gauge(
            "prefixscope_decoder_info",
            "The OTLP protobuf decoder this server runs (1 on its label): native or python",
            ["decoder"],
            registry=r,
        )
        self.decode_deferred = Counter(
            "prefixscope_decode_deferred",
            "Protobuf requests the native decoder handed to the Python decoder (a shape it "
            "leaves to the reference: rejected spans, duplicate keys, unknown fields...)",
            registry=r,
        )
        self.lake_pass_seconds = Histogram(
            "prefixscope_lake_pass_seconds",
            "Time one background pass of the embedded store's maintenance took, by step "
            "(roll: new spans to the lake; move: old rows out of DuckDB; compact: merge cold "
            "files; retention: drop expired partitions)",
            ["step"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.log_records = Counter(
            "prefixscope_log_records",
            "OTLP log records received: kept (GenAI events, joined to their span) or not",
            ["kept"],
            registry=r,
        )
        self.online_scores = Counter(
            "prefixscope_online_evaluations",
            "Online evaluation of stored spans: (span, evaluator) pairs scored or skipped",
            ["outcome"],
            registry=r,
        )
        self.sql_queries = Counter(
            "prefixscope_sql_queries", "Sandboxed SQL queries by outcome", ["outcome"], registry=r
        )
        self.webhook_deliveries = Counter(
            "prefixscope_webhook_deliveries",
            "Alert webhook deliveries by outcome",
            ["outcome"],
            registry=r,
        )

    def add_text(self, render: Callable[[], str]) -> None:
        """Append families whose owner writes their exposition text itself: the per-variant
        series, thousands of samples that ``generate_latest`` would build a Python object
        for, one by one (``VariantMetrics.exposition``)."""
        self._texts.append(render)

    def render(self) -> bytes:
        return generate_latest(self.registry) + "".join(t() for t in self._texts).encode()
