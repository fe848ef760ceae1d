"""OTLP/gRPC ``TraceService/Export`` (through the same pipeline as HTTP) and
``LogsService/Export`` (GenAI log events): raw bytes in."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from prefixscope.auth import AccessPolicy, Scope
from prefixscope.errors import PrefixScopeError

from ..decoding import PROTOBUF
from ..pipeline.ingest import IngestPipeline
from ..pipeline.logs import LogPipeline
from .responses import grpc_abort, logs_response, trace_response

log = logging.getLogger(__name__)

EXPORT_METHOD = "Export"
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


def _identity(b: bytes) -> bytes:
    return b


def _export_handler(
    pipeline: IngestPipeline, service: str, transport: str, work: Callable[[bytes], bytes]
) -> grpc.GenericRpcHandler:
    """``service/Export``: the ingest token, admission, ``work`` (body -> response bytes), and
    errors as gRPC statuses, counted under ``transport``."""
    metrics = pipeline.metrics
    access = AccessPolicy.from_settings(pipeline.settings)

    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            metadata: dict[str, Any] = {k: v for k, v in context.invocation_metadata()}
            access.check(metadata, Scope.INGEST)
            out = work(body)
        except PrefixScopeError as err:
            metrics.requests.labels(transport, err.grpc_code.name).inc()
            grpc_abort(context, err)
            raise AssertionError("unreachable") from err  # context.abort raises
        metrics.requests.labels(transport, "OK").inc()
        return out

    handler = grpc.unary_unary_rpc_method_handler(
        export, request_deserializer=_identity, response_serializer=_identity
    )
    return grpc.method_handlers_generic_handler(service, {EXPORT_METHOD: handler})


def make_handler(pipeline: IngestPipeline) -> grpc.GenericRpcHandler:
    def traces(body: bytes) -> bytes:
        # gRPC already inflated a compressed message, bounded by max_receive_message_length
        decoded = pipeline.export(body, PROTOBUF, None, "grpc").result()
        return trace_response(decoded).SerializeToString()

    return _export_handler(pipeline, SERVICE, "grpc", traces)


def make_logs_handler(pipeline: IngestPipeline, logs: LogPipeline) -> grpc.GenericRpcHandler:
    def export_logs(body: bytes) -> bytes:
        with logs.admitted():  # the logs' own budget, not the traces'
            logs.export(body, PROTOBUF, None).result()
        return logs_response(PROTOBUF)[0]

    return _export_handler(pipeline, LOGS_SERVICE, "grpc_logs", export_logs)


def start_grpc_server(
    pipeline: IngestPipeline, host: str, port: int, logs: LogPipeline | None = None
) -> tuple[grpc.Server, int]:
    """Start the gRPC server; return it and the bound port (useful when port is 0)."""
    limit = pipeline.settings.max_decompressed_bytes
    server = grpc.server(
        ThreadPoolExecutor(max_workers=8, thread_name_prefix="prefixscope-grpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=64,
    )
    handlers = [make_handler(pipeline)]
    if logs is not None:
        handlers.append(make_logs_handler(pipeline, logs))
    server.add_generic_rpc_handlers(tuple(handlers))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    server.start()
    return server, bound
