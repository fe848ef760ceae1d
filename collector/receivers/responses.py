"""The OTLP answers both transports give, in one place: an export's response (with
``partial_success`` when spans were refused), an error as ``google.rpc.Status`` (protobuf), a
JSON body (JSON clients) or a gRPC status with ``RetryInfo``."""

from __future__ import annotations

import grpc
import orjson
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.responses import JSONResponse, Response

from prefixscope.errors import PrefixScopeError, http_error_body

from ..decoding import JSON, PROTOBUF, Decoded


def trace_response(decoded: Decoded) -> ExportTraceServiceResponse:
    """ExportTraceServiceResponse, with partial_success when spans were rejected."""
    resp = ExportTraceServiceResponse()
    if decoded.rejected:
        resp.partial_success.rejected_spans = decoded.rejected
        resp.partial_success.error_message = decoded.message
    return resp


def export_response(mtype: str, decoded: Decoded) -> Response:
    """The trace export's answer over HTTP, in the request's encoding."""
    if mtype == PROTOBUF:
        return Response(trace_response(decoded).SerializeToString(), media_type=PROTOBUF)
    body: dict[str, object] = {}
    if decoded.rejected:
        body["partialSuccess"] = {
            "rejectedSpans": str(decoded.rejected),
            "errorMessage": decoded.message,
        }
    return Response(orjson.dumps(body), media_type=JSON)


def logs_response(mtype: str) -> tuple[bytes, str]:
    """An empty ExportLogsServiceResponse in the request's encoding."""
    if mtype == PROTOBUF:
        return ExportLogsServiceResponse().SerializeToString(), PROTOBUF
    return b"{}", JSON


def error_response(err: PrefixScopeError, mtype: str | None) -> Response:
    """OTLP/HTTP error body: google.rpc.Status for protobuf clients, JSON otherwise."""
    headers = err.headers()
    if mtype == PROTOBUF:
        status = status_pb2.Status(code=err.grpc_code.value[0], message=err.message)
        return Response(
            status.SerializeToString(),
            status_code=err.http_status,
            media_type=PROTOBUF,
            headers=headers,
        )
    body = {"code": err.grpc_code.value[0], **http_error_body(err)}
    return JSONResponse(body, status_code=err.http_status, headers=headers)


def grpc_abort(context: grpc.ServicerContext, err: PrefixScopeError) -> None:
    """End the call with ``err``'s status (and ``RetryInfo`` when it says when to retry);
    raises, as ``context.abort`` does."""
    if err.retry_after_s is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromSeconds(max(1, round(err.retry_after_s)))
        context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
    context.abort(err.grpc_code, err.message)
