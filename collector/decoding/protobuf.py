"""OTLP protobuf bytes → :class:`SpanBatch`, in pure Python (the reference decoder).

Parses ``ExportTraceServiceRequest`` with the protobuf runtime and walks it; every span ends
in :func:`.spans.append_span`, as the JSON decoder's do, so both are normalized the same way.
Invalid spans (bad ids) are counted as rejected (OTLP ``partial_success``); an undecodable
body raises ``BadRequest`` with a precise message.
"""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import orjson
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from prefixscope import semconv as k
from prefixscope.errors import BadRequest

from ..spans.model import SpanBatch
from .common import (
    KIND_NAMES,
    MAX_DEPTH,
    STATUS_NAMES,
    Limits,
    append_span,
    span_event,
    span_link,
    truncate,
)

M = TypeVar("M", bound=Message)


def _pb_value(batch: SpanBatch, v: Any, limits: Limits, depth: int = 0) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        s = v.string_value
        return (
            truncate(batch, s, limits.max_attribute_chars)
            if len(s) > limits.max_attribute_chars
            else s
        )
    if which is None:
        return None
    if depth >= MAX_DEPTH:
        raise BadRequest(f"attribute values nested deeper than {MAX_DEPTH} levels")
    if which == "array_value":
        return [_pb_value(batch, x, limits, depth + 1) for x in v.array_value.values]
    if which == "kvlist_value":
        return {
            kv.key: _pb_value(batch, kv.value, limits, depth + 1) for kv in v.kvlist_value.values
        }
    if which == "bytes_value":
        b = v.bytes_value
        limit = limits.max_attribute_chars * 3 // 4  # raw bytes that fit the limit as base64
        if len(b) > limit:
            batch.truncated_attributes += 1
            b = b[:limit]
        return base64.b64encode(b).decode()
    value = getattr(v, which)
    if which == "double_value" and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)  # JSON has no NaN/inf; keep it visible as text
    return value


def _pb_attrs(batch: SpanBatch, kvs: Any, limits: Limits) -> dict[str, Any]:
    out: dict[str, Any] = {}
    max_chars = limits.max_attribute_chars
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "string_value":
            s = v.string_value
            out[kv.key] = s if len(s) <= max_chars else truncate(batch, s, max_chars)
        elif which == "int_value":
            out[kv.key] = v.int_value
        elif which is None:
            out[kv.key] = None
        else:
            out[kv.key] = _pb_value(batch, v, limits)
    return out


def parse_request(message: M, body: bytes | bytearray) -> M:
    """``message`` parsed from ``body``; any parse failure is a 400 naming the message type."""
    try:
        message.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        name = type(message).__name__
        raise BadRequest(f"body is not a valid OTLP {name} protobuf: {exc}") from exc
    return message


def decode_protobuf(body: bytes | bytearray, limits: Limits | None = None) -> SpanBatch:
    limits = limits or Limits()
    req = parse_request(ExportTraceServiceRequest(), body)
    batch = SpanBatch()
    for rs in req.resource_spans:
        resource = _pb_attrs(batch, rs.resource.attributes, limits)
        service = resource.get(k.SERVICE_NAME)
        service_name = service if isinstance(service, str) else None
        resource_json = orjson.dumps(resource).decode()
        for ss in rs.scope_spans:
            scope = (ss.scope.name, ss.scope.version)
            for sp in ss.spans:
                events: list[dict[str, Any]] | None = None
                first_token: int | None = None
                if sp.events:
                    events = []
                    for ev in sp.events:
                        events.append(
                            span_event(
                                ev.name,
                                ev.time_unix_nano,
                                _pb_attrs(batch, ev.attributes, limits),
                            )
                        )
                        if first_token is None and ev.name in k.FIRST_TOKEN_EVENTS:
                            first_token = ev.time_unix_nano
                links = (
                    [
                        span_link(
                            ln.trace_id.hex(),
                            ln.span_id.hex(),
                            ln.trace_state,
                            _pb_attrs(batch, ln.attributes, limits),
                        )
                        for ln in sp.links
                    ]
                    if sp.links
                    else None
                )
                append_span(
                    batch,
                    sp.trace_id.hex(),
                    sp.span_id.hex(),
                    sp.parent_span_id.hex() or None,
                    sp.name,
                    KIND_NAMES[sp.kind] if 0 <= sp.kind < 6 else "UNSPECIFIED",
                    sp.start_time_unix_nano,
                    sp.end_time_unix_nano,
                    STATUS_NAMES[sp.status.code] if 0 <= sp.status.code < 3 else "UNSET",
                    sp.status.message,
                    _pb_attrs(batch, sp.attributes, limits),
                    service_name,
                    resource,
                    resource_json,
                    scope,
                    events,
                    links,
                    first_token,
                )
    return batch
