"""OTLP bytes → :class:`SpanBatch`. The only place that knows protobuf and OTLP JSON.

Both transports (HTTP and gRPC) and both encodings (protobuf, JSON) end in the same
``_append_span`` so every span is normalized the same way. Invalid spans (bad ids) are
counted as rejected (OTLP ``partial_success``); an undecodable body raises ``BadRequest``
with a precise message.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from prefixscope import semconv as k
from prefixscope.errors import BadRequest

from .model import SpanBatch
from .normalize import OUTPUT_COLUMNS, normalize

M = TypeVar("M", bound=Message)
KIND_NAMES = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_NAMES = ("UNSET", "OK", "ERROR")
_KIND_BY_JSON = {f"SPAN_KIND_{n}": n for n in KIND_NAMES} | {
    str(i): n for i, n in enumerate(KIND_NAMES)
}
_STATUS_BY_JSON = {f"STATUS_CODE_{n}": n for n in STATUS_NAMES} | {
    str(i): n for i, n in enumerate(STATUS_NAMES)
}
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_MAX_DEPTH = 16
_JSON_OPTS = orjson.OPT_NON_STR_KEYS
_TTFT = OUTPUT_COLUMNS.index("ttft_ms")
_EPOCH = datetime(1970, 1, 1)


class Limits:
    """Per-value limits applied while decoding."""

    __slots__ = ("max_attribute_chars",)

    def __init__(self, max_attribute_chars: int = 32 * 1024) -> None:
        self.max_attribute_chars = max_attribute_chars


# -- shared span assembly -----------------------------------------------------------------


def _append_span(
    batch: SpanBatch,
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    kind: str,
    start_ns: int,
    end_ns: int,
    status_code: str,
    status_message: str | None,
    attrs: dict[str, Any],
    service_name: str | None,
    resource: dict[str, Any],
    resource_json: str,
    scope: tuple[str | None, str | None] = (None, None),
    events: list[dict[str, Any]] | None = None,
    links: list[dict[str, Any]] | None = None,
    first_token_ns: int | None = None,
) -> None:
    if len(trace_id) != 32 or trace_id == _ZERO_TRACE:
        batch.reject(f"span {name!r}: trace_id must be 16 non-zero bytes")
        return
    if len(span_id) != 16 or span_id == _ZERO_SPAN:
        batch.reject(f"span {name!r}: span_id must be 8 non-zero bytes")
        return
    norm, cohort = normalize(attrs, resource)
    if first_token_ns is not None and norm[_TTFT] is None and first_token_ns >= start_ns:
        norm[_TTFT] = (first_token_ns - start_ns) / 1e6  # from a first-token span event
    batch.rows.append(
        (
            trace_id,
            span_id,
            parent if parent and parent != _ZERO_SPAN else None,
            name,
            kind,
            service_name,
            start_ns // 1000,
            end_ns // 1000,
            (end_ns - start_ns) / 1e6,
            status_code,
            status_message or None,
            *norm,
            orjson.dumps(cohort).decode() if cohort else None,
            orjson.dumps(attrs, option=_JSON_OPTS).decode(),
            resource_json,
            orjson.dumps(events, option=_JSON_OPTS).decode() if events else None,
            orjson.dumps(links, option=_JSON_OPTS).decode() if links else None,
            scope[0] or None,
            scope[1] or None,
        )
    )


def iso_time(ns: int) -> str:
    """An event's time as ISO 8601 UTC with microseconds (what the ``events`` JSON holds)."""
    return (_EPOCH + timedelta(microseconds=ns // 1000)).isoformat(timespec="microseconds") + "Z"


def span_event(name: str, time_ns: int, attrs: dict[str, Any]) -> dict[str, Any]:
    """One entry of the ``events`` column: ``{name, time, attributes}``."""
    return {"name": name, "time": iso_time(time_ns), "attributes": attrs}


def span_link(
    trace_id: str, span_id: str, trace_state: str, attrs: dict[str, Any]
) -> dict[str, Any]:
    """One entry of the ``links`` column."""
    link: dict[str, Any] = {"trace_id": trace_id, "span_id": span_id, "attributes": attrs}
    if trace_state:
        link["trace_state"] = trace_state
    return link


def _truncate(batch: SpanBatch, value: str, limit: int) -> str:
    batch.truncated_attributes += 1
    return value[:limit]


# -- protobuf -----------------------------------------------------------------------------


def _pb_value(batch: SpanBatch, v: Any, limits: Limits, depth: int = 0) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        s = v.string_value
        return (
            _truncate(batch, s, limits.max_attribute_chars)
            if len(s) > limits.max_attribute_chars
            else s
        )
    if which is None:
        return None
    if depth >= _MAX_DEPTH:
        raise BadRequest(f"attribute values nested deeper than {_MAX_DEPTH} levels")
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
            out[kv.key] = s if len(s) <= max_chars else _truncate(batch, s, max_chars)
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
                _append_span(
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
