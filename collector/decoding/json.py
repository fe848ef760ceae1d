"""OTLP/JSON (the protobuf JSON mapping) → :class:`SpanBatch`.

Accepts what the OTLP spec says and what real clients send: lowerCamelCase or snake_case
field names, hex trace/span ids, enum names or numbers, int64 as string or number. Wrong types
raise ``BadRequest`` naming the JSON path of the first problem.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import orjson

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

_KIND = {f"SPAN_KIND_{n}": n for n in KIND_NAMES} | {n: n for n in KIND_NAMES}
_STATUS = {f"STATUS_CODE_{n}": n for n in STATUS_NAMES} | {n: n for n in STATUS_NAMES}


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    v = obj.get(camel)
    return obj.get(snake) if v is None else v


def _list(obj: dict[str, Any], camel: str, snake: str, path: str) -> list[Any]:
    v = _get(obj, camel, snake)
    if v is None:
        return []
    if not isinstance(v, list):
        raise BadRequest(f"{path}.{camel}: expected an array, got {type(v).__name__}")
    return v


def _obj(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise BadRequest(f"{path}: expected an object, got {type(v).__name__}")
    return v


_INT64 = (-(2**63), 2**63)  # intValue
_UINT64 = (0, 2**64)  # fixed64 timestamps


def _int64(v: Any, path: str, bounds: tuple[int, int] = _UINT64) -> int:
    n = _parse_int(v, path)
    if not bounds[0] <= n < bounds[1]:
        raise BadRequest(f"{path}: integer {str(v)[:40]} out of range")
    return n


def _parse_int(v: Any, path: str) -> int:
    if v is None:
        return 0
    if isinstance(v, bool):
        raise BadRequest(f"{path}: expected an integer, got a boolean")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            raise BadRequest(f"{path}: expected an integer string, got {v[:40]!r}") from None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise BadRequest(f"{path}: expected an integer, got {type(v).__name__}")


def _id(v: Any, path: str) -> str:
    if v is None or v == "":
        return ""
    if not isinstance(v, str):
        raise BadRequest(f"{path}: expected a hex string, got {type(v).__name__}")
    try:
        return bytes.fromhex(v).hex()
    except ValueError:
        raise BadRequest(f"{path}: not a hex id: {v[:40]!r}") from None


def _enum(v: Any, table: dict[str, str], names: tuple[str, ...], path: str) -> str:
    if v is None:
        return names[0]
    if isinstance(v, bool):
        raise BadRequest(f"{path}: expected an enum name or number")
    if isinstance(v, int):
        if 0 <= v < len(names):
            return names[v]
        raise BadRequest(f"{path}: enum number {v} out of range")
    if isinstance(v, str) and v in table:
        return table[v]
    raise BadRequest(f"{path}: unknown enum value {str(v)[:40]!r}")


def _value(batch: SpanBatch, v: Any, limits: Limits, path: str, depth: int = 0) -> Any:
    if v is None:
        return None
    v = _obj(v, path)
    if depth >= MAX_DEPTH:
        raise BadRequest(f"{path}: attribute values nested deeper than {MAX_DEPTH} levels")
    for key in ("stringValue", "string_value"):
        if key in v:
            s = v[key]
            if not isinstance(s, str):
                raise BadRequest(f"{path}.{key}: expected a string, got {type(s).__name__}")
            limit = limits.max_attribute_chars
            return truncate(batch, s, limit) if len(s) > limit else s
    for key in ("intValue", "int_value"):
        if key in v:
            return _int64(v[key], f"{path}.{key}", _INT64)
    for key in ("doubleValue", "double_value"):
        if key in v:
            d = v[key]
            if isinstance(d, str):  # the protobuf JSON mapping allows numbers as strings
                if d in ("NaN", "Infinity", "-Infinity"):
                    return d
                try:
                    d = float(d)
                except ValueError:
                    raise BadRequest(f"{path}.{key}: not a number: {d[:40]!r}") from None
            if isinstance(d, bool) or not isinstance(d, int | float):
                raise BadRequest(f"{path}.{key}: expected a number, got {type(d).__name__}")
            return float(d) if math.isfinite(d) else str(d)
    for key in ("boolValue", "bool_value"):
        if key in v:
            b = v[key]
            if not isinstance(b, bool):
                raise BadRequest(f"{path}.{key}: expected a boolean, got {type(b).__name__}")
            return b
    for key in ("arrayValue", "array_value"):
        if key in v:
            arr = _list(_obj(v[key], f"{path}.{key}"), "values", "values", f"{path}.{key}")
            return [
                _value(batch, x, limits, f"{path}.{key}.values[{i}]", depth + 1)
                for i, x in enumerate(arr)
            ]
    for key in ("kvlistValue", "kvlist_value"):
        if key in v:
            kvs = _list(_obj(v[key], f"{path}.{key}"), "values", "values", f"{path}.{key}")
            return _attrs(batch, kvs, limits, f"{path}.{key}.values", depth + 1)
    for key in ("bytesValue", "bytes_value"):
        if key in v:
            raw = v[key]
            if not isinstance(raw, str):
                raise BadRequest(f"{path}.{key}: expected base64 text")
            try:
                base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"{path}.{key}: invalid base64") from None
            if len(raw) > limits.max_attribute_chars:  # cut on a base64 quantum boundary
                return truncate(
                    batch, raw, limits.max_attribute_chars - limits.max_attribute_chars % 4
                )
            return raw
    if v:
        raise BadRequest(f"{path}: unknown AnyValue field {next(iter(v))[:40]!r}")
    return None


def _attrs(
    batch: SpanBatch, kvs: list[Any], limits: Limits, path: str, depth: int = 0
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, kv in enumerate(kvs):
        p = f"{path}[{i}]"
        kv = _obj(kv, p)
        key = kv.get("key")
        if not isinstance(key, str):
            raise BadRequest(f"{p}.key: expected a string")
        out[key] = _value(batch, kv.get("value"), limits, f"{p}.value", depth)
    return out


def decode_json(body: bytes | bytearray, limits: Limits | None = None) -> SpanBatch:
    limits = limits or Limits()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    doc = _obj(doc, "$")
    batch = SpanBatch()
    for r, rs in enumerate(_list(doc, "resourceSpans", "resource_spans", "$")):
        rpath = f"resourceSpans[{r}]"
        rs = _obj(rs, rpath)
        res = _obj(rs.get("resource") or {}, f"{rpath}.resource")
        resource = _attrs(
            batch,
            _list(res, "attributes", "attributes", f"{rpath}.resource"),
            limits,
            f"{rpath}.resource.attributes",
        )
        service = resource.get(k.SERVICE_NAME)
        service_name = service if isinstance(service, str) else None
        resource_json = orjson.dumps(resource).decode()
        for s, ss in enumerate(_list(rs, "scopeSpans", "scope_spans", rpath)):
            spath = f"{rpath}.scopeSpans[{s}]"
            ss = _obj(ss, spath)
            scope = _scope(ss.get("scope"), f"{spath}.scope")
            for i, sp in enumerate(_list(ss, "spans", "spans", spath)):
                p = f"{spath}.spans[{i}]"
                sp = _obj(sp, p)
                name = sp.get("name", "")
                if not isinstance(name, str):
                    raise BadRequest(f"{p}.name: expected a string")
                status = _obj(sp.get("status") or {}, f"{p}.status")
                message = status.get("message")
                if message is not None and not isinstance(message, str):
                    raise BadRequest(f"{p}.status.message: expected a string")
                events, first_token = _events(batch, sp, limits, p)
                append_span(
                    batch,
                    _id(_get(sp, "traceId", "trace_id"), f"{p}.traceId"),
                    _id(_get(sp, "spanId", "span_id"), f"{p}.spanId"),
                    _id(_get(sp, "parentSpanId", "parent_span_id"), f"{p}.parentSpanId") or None,
                    name,
                    _enum(sp.get("kind"), _KIND, KIND_NAMES, f"{p}.kind"),
                    _int64(
                        _get(sp, "startTimeUnixNano", "start_time_unix_nano"),
                        f"{p}.startTimeUnixNano",
                    ),
                    _int64(
                        _get(sp, "endTimeUnixNano", "end_time_unix_nano"), f"{p}.endTimeUnixNano"
                    ),
                    _enum(status.get("code"), _STATUS, STATUS_NAMES, f"{p}.status.code"),
                    message,
                    _attrs(
                        batch, _list(sp, "attributes", "attributes", p), limits, f"{p}.attributes"
                    ),
                    service_name,
                    resource,
                    resource_json,
                    scope,
                    events,
                    _links(batch, sp, limits, p),
                    first_token,
                )
    return batch


def _opt_str(v: Any, path: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise BadRequest(f"{path}: expected a string, got {type(v).__name__}")


def _scope(v: Any, path: str) -> tuple[str | None, str | None]:
    if v is None:
        return None, None
    v = _obj(v, path)
    return _opt_str(v.get("name"), f"{path}.name"), _opt_str(v.get("version"), f"{path}.version")


def _events(
    batch: SpanBatch, sp: dict[str, Any], limits: Limits, p: str
) -> tuple[list[dict[str, Any]] | None, int | None]:
    """The span's events for the ``events`` column, and the first first-token event's time."""
    raw = _list(sp, "events", "events", p)
    if not raw:
        return None, None
    events = []
    first_token: int | None = None
    for i, ev in enumerate(raw):
        ep = f"{p}.events[{i}]"
        ev = _obj(ev, ep)
        name = _opt_str(ev.get("name"), f"{ep}.name") or ""
        t = _int64(_get(ev, "timeUnixNano", "time_unix_nano"), f"{ep}.timeUnixNano")
        attrs = _attrs(batch, _list(ev, "attributes", "attributes", ep), limits, f"{ep}.attributes")
        events.append(span_event(name, t, attrs))
        if first_token is None and name in k.FIRST_TOKEN_EVENTS:
            first_token = t
    return events, first_token


def _links(
    batch: SpanBatch, sp: dict[str, Any], limits: Limits, p: str
) -> list[dict[str, Any]] | None:
    raw = _list(sp, "links", "links", p)
    if not raw:
        return None
    links = []
    for i, ln in enumerate(raw):
        lp = f"{p}.links[{i}]"
        ln = _obj(ln, lp)
        links.append(
            span_link(
                _id(_get(ln, "traceId", "trace_id"), f"{lp}.traceId"),
                _id(_get(ln, "spanId", "span_id"), f"{lp}.spanId"),
                _opt_str(_get(ln, "traceState", "trace_state"), f"{lp}.traceState") or "",
                _attrs(
                    batch, _list(ln, "attributes", "attributes", lp), limits, f"{lp}.attributes"
                ),
            )
        )
    return links
