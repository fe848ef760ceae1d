"""The real ``prefixscope serve`` fed over OTLP/HTTP and OTLP/gRPC, read back from its store.

Clients: the real ``opentelemetry-sdk`` exporters (HTTP and gRPC, batch and simple
processors, with and without gzip), raw protobuf/JSON/gzip bodies via httpx, and the generated
gRPC stub. Results are read from the DuckDB file (and the Parquet lake) after a graceful stop.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import grpc
import httpx
import polars as pl
import pyarrow.parquet as pq
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from tests.support.otlp import T0, fixture_bytes, pb_body, pb_request, sid, tid
from tests.support.serverproc import ServerProcess, metric_values
from tests.support.store import query_store

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# -- request builders -----------------------------------------------------------------------


def post(srv: ServerProcess, body: bytes, ctype: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{srv.base_url}/v1/traces",
        content=body,
        headers={"Content-Type": ctype, **headers},
        timeout=30,
    )


def grpc_export(
    srv: ServerProcess, req: ExportTraceServiceRequest, metadata: Sequence[tuple[str, str]] = ()
) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(srv.grpc_target) as channel:
        resp: ExportTraceServiceResponse = TraceServiceStub(channel).Export(
            req, metadata=metadata, timeout=30
        )
        return resp


def stored(srv: ServerProcess, sql: str) -> list[tuple[Any, ...]]:
    """Stop the server gracefully, then read its DuckDB file."""
    assert srv.stop() == 0, srv.log()
    return query_store(srv.data_dir, sql)


# -- the real OpenTelemetry SDK -------------------------------------------------------------


class RecordingExporter(SpanExporter):
    """Wraps a real OTLP exporter and records every export result."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def emit(processor: SpanProcessor, service: str, n: int) -> set[tuple[str, str]]:
    """Emit ``n`` spans through a fresh provider; return their (trace_id, span_id)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests.sdk")
    ids = set()
    for i in range(n):
        with tracer.start_as_current_span(
            f"{service}-{i}",
            kind=SpanKind.CLIENT,
            attributes={
                "prefix.id": "radiology",
                "gen_ai.usage.input_tokens": i,
                "cohort.specialty": "radiology",
            },
        ) as span:
            if i == 0:
                span.set_status(Status(StatusCode.ERROR, "boom"))
            ctx = span.get_span_context()
            ids.add((f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"))
    assert provider.force_flush(20_000)
    provider.shutdown()
    return ids


def test_sdk_exporters_over_http_and_grpc(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server()
    http = f"{srv.base_url}/v1/traces"
    exporters = {
        "http-batch": RecordingExporter(HttpSpanExporter(endpoint=http, timeout=20)),
        "http-simple-gzip": RecordingExporter(
            HttpSpanExporter(endpoint=http, timeout=20, compression=HttpCompression.Gzip)
        ),
        "grpc-simple": RecordingExporter(
            GrpcSpanExporter(endpoint=srv.grpc_target, insecure=True, timeout=20)
        ),
        "grpc-batch-gzip": RecordingExporter(
            GrpcSpanExporter(
                endpoint=srv.grpc_target,
                insecure=True,
                timeout=20,
                compression=grpc.Compression.Gzip,
            )
        ),
    }
    counts = {"http-batch": 40, "http-simple-gzip": 3, "grpc-simple": 3, "grpc-batch-gzip": 40}
    sent: dict[str, set[tuple[str, str]]] = {}
    for name, exporter in exporters.items():
        processor: SpanProcessor = (
            BatchSpanProcessor(exporter, max_export_batch_size=16, schedule_delay_millis=50)
            if "batch" in name
            else SimpleSpanProcessor(exporter)
        )
        sent[name] = emit(processor, name, counts[name])
        assert exporter.results and set(exporter.results) == {SpanExportResult.SUCCESS}, name

    rows = stored(
        srv,
        "SELECT service_name, trace_id, span_id, kind, prefix_id, input_tokens, "
        "status_code, status_message, cohort FROM spans",
    )
    by_service: dict[str, set[tuple[str, str]]] = {}
    for service, trace_id, span_id, *_ in rows:
        by_service.setdefault(service, set()).add((trace_id, span_id))
    assert by_service == sent
    errors = {(r[0], r[7]) for r in rows if r[6] == "ERROR"}
    assert errors == {(name, "boom") for name in exporters}
    assert {(r[3], r[4], json.loads(r[8])["specialty"]) for r in rows} == {
        ("CLIENT", "radiology", "radiology")
    }
    assert sorted(r[5] for r in rows if r[0] == "http-batch") == list(range(40))


# -- raw bodies -----------------------------------------------------------------------------

PARTIAL_MESSAGE = (
    "span 'zero-span-id': span_id must be 8 non-zero bytes; "
    "span 'short-trace-id': trace_id must be 16 non-zero bytes"
)


def partial_request(ok_id: int) -> ExportTraceServiceRequest:
    return pb_request(
        [
            (tid(ok_id), sid(ok_id), "ok", {}),
            (tid(ok_id), "0" * 16, "zero-span-id", {}),
            ("01020304", sid(ok_id + 1), "short-trace-id", {}),
        ]
    )


def test_responses_follow_otlp_including_partial_success(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server()
    # protobuf, all valid: an empty ExportTraceServiceResponse
    resp = post(srv, pb_body([1, 2]), PROTOBUF)
    assert (resp.status_code, resp.headers["content-type"]) == (200, PROTOBUF)
    full = ExportTraceServiceResponse.FromString(resp.content)
    assert not full.HasField("partial_success")

    # protobuf, two of three invalid
    resp = post(srv, partial_request(10).SerializeToString(), PROTOBUF)
    assert resp.status_code == 200
    partial = ExportTraceServiceResponse.FromString(resp.content).partial_success
    assert (partial.rejected_spans, partial.error_message) == (2, PARTIAL_MESSAGE)

    # JSON, all valid and partially valid
    ok_json = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [{"traceId": tid(20), "spanId": sid(20), "name": "ok"}]}]}
        ]
    }
    resp = post(srv, json.dumps(ok_json).encode(), JSON)
    assert (resp.status_code, resp.headers["content-type"], resp.json()) == (200, JSON, {})
    bad_json = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {"traceId": tid(30), "spanId": sid(30), "name": "ok"},
                            {"traceId": tid(30), "spanId": "0" * 16, "name": "zero-span-id"},
                            {"traceId": "01020304", "spanId": sid(31), "name": "short-trace-id"},
                        ]
                    }
                ]
            }
        ]
    }
    resp = post(srv, json.dumps(bad_json).encode(), JSON)
    assert resp.status_code == 200
    assert resp.json() == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": PARTIAL_MESSAGE}
    }

    # gRPC, same contract
    assert not grpc_export(srv, pb_request([(tid(40), sid(40), "ok", {})])).HasField(
        "partial_success"
    )
    partial = grpc_export(srv, partial_request(50)).partial_success
    assert (partial.rejected_spans, partial.error_message) == (2, PARTIAL_MESSAGE)

    rows = stored(srv, "SELECT span_id FROM spans ORDER BY span_id")
    assert [r[0] for r in rows] == [sid(n) for n in (1, 2, 10, 20, 30, 40, 50)]


def json_variant(variant: str, n: int) -> bytes:
    """The same span in the spellings OTLP/JSON clients really send."""
    camel = "camel" in variant
    names = "names" in variant

    def f(c: str, s: str) -> str:
        return c if camel else s

    def i64(v: int) -> int | str:
        return str(v) if "strings" in variant else v

    trace, span = (tid(n), sid(n))
    if "upper" in variant:
        trace, span = trace.upper(), span.upper()
    doc = {
        f("resourceSpans", "resource_spans"): [
            {
                "resource": {
                    "attributes": [
                        {
                            "key": "service.name",
                            "value": {f("stringValue", "string_value"): "json-client"},
                        }
                    ]
                },
                f("scopeSpans", "scope_spans"): [
                    {
                        "spans": [
                            {
                                f("traceId", "trace_id"): trace,
                                f("spanId", "span_id"): span,
                                "name": variant,
                                "kind": "SPAN_KIND_CLIENT" if names else 3,
                                f("startTimeUnixNano", "start_time_unix_nano"): i64(T0),
                                f("endTimeUnixNano", "end_time_unix_nano"): i64(T0 + 1_500_000),
                                "attributes": [
                                    {
                                        "key": "gen_ai.usage.input_tokens",
                                        "value": {f("intValue", "int_value"): i64(7)},
                                    },
                                    {
                                        "key": "gen_ai.response.time_to_first_chunk",
                                        "value": {f("doubleValue", "double_value"): 0.25},
                                    },
                                ],
                                "status": {
                                    "code": "STATUS_CODE_ERROR" if names else 2,
                                    "message": "bad adapter",
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }
    return json.dumps(doc).encode()


JSON_VARIANTS = (
    "camel-names-strings",
    "camel-numbers-ints",
    "snake-names-ints",
    "snake-numbers-strings",
    "camel-names-strings-upper",
)


def gzip_members(data: bytes, parts: int) -> bytes:
    """A gzip body of several concatenated members (valid gzip, RFC 1952)."""
    step = -(-len(data) // parts)
    return b"".join(gzip.compress(data[i : i + step]) for i in range(0, len(data), step))


def test_json_spellings_and_gzip_bodies(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server()
    for n, variant in enumerate(JSON_VARIANTS, start=1):
        resp = post(srv, json_variant(variant, n), JSON)
        assert (resp.status_code, resp.json()) == (200, {}), variant
    gz = {
        "gzip-protobuf": (gzip.compress(pb_body([100], "gzip-protobuf")), PROTOBUF),
        "gzip-json": (gzip.compress(json_variant("camel-names-strings", 101)), JSON),
        "gzip-multi-member": (gzip_members(pb_body([102, 103, 104], "gzip-multi"), 3), PROTOBUF),
    }
    for name, (body, ctype) in gz.items():
        resp = post(srv, body, ctype, **{"Content-Encoding": "gzip"})
        assert resp.status_code == 200, (name, resp.text)

    rows = stored(
        srv,
        "SELECT trace_id, span_id, name, kind, start_time, duration_ms, "
        "status_code, status_message, input_tokens, ttft_ms, service_name "
        "FROM spans ORDER BY span_id",
    )
    start = datetime(2026, 3, 2, 9, 15)
    want: list[tuple[Any, ...]] = [
        (tid(n), sid(n), v, "CLIENT", start, 1.5, "ERROR", "bad adapter", 7, 250.0, "json-client")
        for n, v in enumerate(JSON_VARIANTS, start=1)
    ]
    want += [
        (
            tid(100),
            sid(100),
            "span-100",
            "CLIENT",
            start,
            2.0,
            "UNSET",
            None,
            100,
            None,
            "gzip-protobuf",
        ),
        (
            tid(101),
            sid(101),
            "camel-names-strings",
            "CLIENT",
            start,
            1.5,
            "ERROR",
            "bad adapter",
            7,
            250.0,
            "json-client",
        ),
    ]
    want += [
        (tid(n), sid(n), f"span-{n}", "CLIENT", start, 2.0, "UNSET", None, n, None, "gzip-multi")
        for n in (102, 103, 104)
    ]
    assert rows == want


def test_retried_export_is_not_duplicated(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server()
    body = pb_body([1, 2, 3, 4, 5])
    for _ in range(3):
        assert post(srv, body, PROTOBUF).status_code == 200
    assert (
        post(srv, gzip.compress(body), PROTOBUF, **{"Content-Encoding": "gzip"}).status_code == 200
    )
    grpc_export(srv, ExportTraceServiceRequest.FromString(body))
    m = metric_values(srv)
    assert m[("prefixscope_spans_committed_total", ())] == 5
    assert m[("prefixscope_spans_duplicate_total", ())] == 20
    rows = stored(srv, "SELECT span_id, count(*) FROM spans GROUP BY span_id ORDER BY span_id")
    assert rows == [(sid(n), 1) for n in range(1, 6)]


def test_healthz_and_metrics_counters_move(server: ServerProcess) -> None:
    health = httpx.get(f"{server.base_url}/healthz", timeout=10)
    assert health.status_code == 200
    assert (health.json()["status"], health.json()["queue_depth_spans"]) == ("ok", 0)
    resp = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f.type for f in text_string_to_metric_families(resp.text)}
    for name, typ in {
        "prefixscope_spans_received": "counter",
        "prefixscope_spans_committed": "counter",
        "prefixscope_spans_rejected": "counter",
        "prefixscope_spans_dropped": "counter",
        "prefixscope_queue_depth_spans": "gauge",
        "prefixscope_commit_latency_seconds": "histogram",
    }.items():
        assert families.get(name) == typ, name

    before = metric_values(server)
    assert post(server, pb_body([1, 2, 3]), PROTOBUF).status_code == 200
    grpc_export(server, pb_request([(tid(4), sid(4), "g", {}), (tid(5), sid(5), "g", {})]))
    assert post(server, partial_request(6).SerializeToString(), PROTOBUF).status_code == 200
    after = metric_values(server)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("prefixscope_spans_received_total", transport="http") == 4
    assert delta("prefixscope_spans_received_total", transport="grpc") == 2
    assert delta("prefixscope_spans_committed_total") == 6
    assert delta("prefixscope_spans_rejected_total") == 2
    assert delta("prefixscope_ingest_requests_total", transport="http", status="200") == 2
    assert delta("prefixscope_ingest_requests_total", transport="grpc", status="OK") == 1
    assert delta("prefixscope_commit_latency_seconds_count") >= 1
    assert after[("prefixscope_queue_depth_spans", ())] == 0


# -- auth -----------------------------------------------------------------------------------


def error_of(resp: httpx.Response) -> tuple[int, str]:
    """(gRPC code, message) of an OTLP/HTTP error body, JSON or google.rpc.Status."""
    if resp.headers["content-type"] == PROTOBUF:
        status = status_pb2.Status.FromString(resp.content)
        return status.code, status.message
    body = resp.json()
    return body["code"], body["message"]


TOKENS = ("secret-one", "secret-two")
REQUIRES_BEARER = "ingest requires 'Authorization: Bearer <token>'"


def test_bearer_token_on_http_and_grpc(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server("--token", TOKENS[0], "--token", TOKENS[1])
    for headers, message in [
        ({}, REQUIRES_BEARER),
        (
            {"Authorization": "Basic c2VjcmV0LW9uZQ=="},
            REQUIRES_BEARER,
        ),
        ({"Authorization": "Bearer wrong"}, "invalid token for ingest"),
        ({"Authorization": f"Bearer {TOKENS[0]}x"}, "invalid token for ingest"),
    ]:
        resp = post(srv, pb_body([99]), JSON if not headers else PROTOBUF, **headers)
        assert resp.status_code == 401, headers
        assert resp.headers["www-authenticate"] == "Bearer"
        assert error_of(resp) == (16, message)
    for metadata, message in [
        ((), REQUIRES_BEARER),
        ((("authorization", "Bearer wrong"),), "invalid token for ingest"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            grpc_export(srv, pb_request([(tid(98), sid(98), "x", {})]), metadata)
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, message)

    ok = post(srv, pb_body([1]), PROTOBUF, Authorization=f"Bearer {TOKENS[1]}")
    assert ok.status_code == 200
    grpc_export(
        srv, pb_request([(tid(2), sid(2), "g", {})]), (("authorization", f"Bearer {TOKENS[0]}"),)
    )
    exporter = RecordingExporter(
        HttpSpanExporter(
            endpoint=f"{srv.base_url}/v1/traces",
            headers={"authorization": f"Bearer {TOKENS[0]}"},
            timeout=20,
        )
    )
    sdk_ids = emit(SimpleSpanProcessor(exporter), "sdk-with-token", 2)
    assert exporter.results == [SpanExportResult.SUCCESS] * 2
    rows = stored(srv, "SELECT trace_id, span_id FROM spans")
    assert set(rows) == {(tid(1), sid(1)), (tid(2), sid(2)), *sdk_ids}


def test_unauthorized_protobuf_request_gets_a_protobuf_status(
    start_server: Callable[..., ServerProcess],
) -> None:
    """OTLP/HTTP: error bodies are a google.rpc.Status in the request's encoding."""
    srv = start_server("--token", TOKENS[0])
    resp = post(srv, pb_body([1]), PROTOBUF, Authorization="Bearer wrong")
    assert (resp.status_code, resp.headers["content-type"]) == (401, PROTOBUF)
    status = status_pb2.Status.FromString(resp.content)
    assert (status.code, status.message) == (16, "invalid token for ingest")


# -- the Parquet lake -----------------------------------------------------------------------


def test_parquet_lake_is_readable_without_prefixscope(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server()
    assert post(srv, fixture_bytes("prefixscope"), JSON).status_code == 200  # 2 dates
    assert post(srv, pb_body([1, 2]), PROTOBUF).status_code == 200  # 2026-03-02
    assert srv.stop() == 0
    lake = Path(srv.data_dir) / "lake" / "spans"
    files = sorted(
        p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet") if p.name[0] != "."
    )
    assert [f.split("/")[0] for f in files] == ["date=2026-03-02", "date=2026-03-03"]
    assert not list(lake.rglob("*.tmp")), "temporary files left"
    for f in files:
        meta = pq.ParquetFile(lake / f).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"

    pattern = str(lake / "**" / "*.parquet")
    con = duckdb.connect()
    try:
        by_date = con.execute(
            "SELECT CAST(date AS VARCHAR), count(*), count(DISTINCT span_id) "
            "FROM read_parquet(?, hive_partitioning = true) GROUP BY ALL ORDER BY 1",
            [pattern],
        ).fetchall()
        radiology = con.execute(
            "SELECT prefix_id, cached_tokens, ttft_ms, cohort->>'language' "
            "FROM read_parquet(?, hive_partitioning = true) WHERE span_id = '1a2b3c4d5e6f7081'",
            [pattern],
        ).fetchall()
    finally:
        con.close()
    assert by_date == [("2026-03-02", 3, 3), ("2026-03-03", 2, 2)]
    assert radiology == [("radiology", 128, 46.875, "de")]

    frame = pl.scan_parquet(pattern, hive_partitioning=True).collect()
    assert frame.height == 5
    assert sorted(frame["span_id"].to_list()) == sorted(
        [sid(1), sid(2), "1a2b3c4d5e6f7081", "1a2b3c4d5e6f7082", "1a2b3c4d5e6f7083"]
    )
    assert {str(d) for d in frame["date"].to_list()} == {"2026-03-02", "2026-03-03"}
    db_ids = {r[0] for r in query_store(srv.data_dir, "SELECT span_id FROM spans")}
    assert db_ids == set(frame["span_id"].to_list())
