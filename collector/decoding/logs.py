"""OTLP log records to rows of ``log_events``: GenAI events kept, the rest counted.

Runs where span decoding runs: in the log decode worker process (``--workers`` >= 1) or in a
thread of the server. A record is kept when its event name (the ``event_name`` field, else
the ``event.name`` attribute) starts with ``gen_ai.``; its id is a hash of (trace, span,
time, event name, body), so a retried export is stored once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from prefixscope.errors import BadRequest, UnsupportedMediaType

from ..spans.model import LOG_EVENT_SCHEMA, SpanBatch
from . import PROTOBUF, gunzip_limited
from . import json as dj
from .common import Limits
from .protobuf import _pb_attrs, _pb_value, parse_request

GENAI_EVENT_PREFIX = "gen_ai."
EVENT_NAME_ATTRIBUTE = "event.name"


@dataclass(slots=True)
class LogBatch:
    """The kept GenAI events of one export request, and what happened to the rest."""

    rows: list[list[Any]] = field(default_factory=list)  # LOG_EVENT_SCHEMA's fields but the last
    received: int = 0
    dropped: int = 0
    counters: SpanBatch = field(default_factory=SpanBatch)  # attribute truncation counts

    def add(
        self,
        trace_id: str,
        span_id: str,
        time_ns: int,
        event_name: str,
        body: Any,
        attrs: dict[str, Any],
        resource_json: str,
        scope_name: str | None,
    ) -> None:
        self.received += 1
        name = event_name or attrs.get(EVENT_NAME_ATTRIBUTE)
        if not isinstance(name, str) or not name.startswith(GENAI_EVENT_PREFIX):
            self.dropped += 1
            return
        body_json = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS).decode()
        key = f"{trace_id}/{span_id}/{time_ns}/{name}/{body_json}"
        self.rows.append(
            [
                hashlib.sha256(key.encode()).hexdigest()[:32],
                trace_id or None,
                span_id or None,
                _timestamp(time_ns),
                name,
                body_json,
                orjson.dumps(attrs, option=orjson.OPT_NON_STR_KEYS).decode(),
                resource_json,
                scope_name or None,
            ]
        )

    def table(self) -> pa.Table:
        """The kept events as rows of ``log_events`` (``ingested_at`` is set at commit)."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        columns = [list(c) for c in zip(*self.rows, strict=True)] if self.rows else []
        if not columns:
            columns = [[] for _ in range(len(LOG_EVENT_SCHEMA) - 1)]
        columns.append([now] * len(self.rows))
        return pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, LOG_EVENT_SCHEMA, strict=True)],
            schema=LOG_EVENT_SCHEMA,
        )


def _timestamp(ns: int) -> dt.datetime | None:
    if ns <= 0:
        return None
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=ns // 1000)


def _hex_id(raw: bytes, size: int) -> str:
    return raw.hex() if len(raw) == size and any(raw) else ""


def decode_logs_protobuf(body: bytes, limits: Limits) -> LogBatch:
    req = parse_request(ExportLogsServiceRequest(), body)
    out = LogBatch()
    for rl in req.resource_logs:
        resource = _pb_attrs(out.counters, rl.resource.attributes, limits)
        resource_json = orjson.dumps(resource).decode()
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                out.add(
                    _hex_id(rec.trace_id, 16),
                    _hex_id(rec.span_id, 8),
                    rec.time_unix_nano or rec.observed_time_unix_nano,
                    rec.event_name,
                    _pb_value(out.counters, rec.body, limits) if rec.HasField("body") else None,
                    _pb_attrs(out.counters, rec.attributes, limits),
                    resource_json,
                    sl.scope.name,
                )
    return out


def decode_logs_json(body: bytes, limits: Limits) -> LogBatch:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    doc = dj._obj(doc, "$")
    out = LogBatch()
    for r, rl in enumerate(dj._list(doc, "resourceLogs", "resource_logs", "$")):
        rpath = f"resourceLogs[{r}]"
        rl = dj._obj(rl, rpath)
        res = dj._obj(rl.get("resource") or {}, f"{rpath}.resource")
        resource = dj._attrs(
            out.counters,
            dj._list(res, "attributes", "attributes", f"{rpath}.resource"),
            limits,
            f"{rpath}.resource.attributes",
        )
        resource_json = orjson.dumps(resource).decode()
        for s, sl in enumerate(dj._list(rl, "scopeLogs", "scope_logs", rpath)):
            spath = f"{rpath}.scopeLogs[{s}]"
            sl = dj._obj(sl, spath)
            scope_name, _ = dj._scope(sl.get("scope"), f"{spath}.scope")
            for i, rec in enumerate(dj._list(sl, "logRecords", "log_records", spath)):
                p = f"{spath}.logRecords[{i}]"
                rec = dj._obj(rec, p)
                t = dj._int64(dj._get(rec, "timeUnixNano", "time_unix_nano"), f"{p}.timeUnixNano")
                if not t:
                    t = dj._int64(
                        dj._get(rec, "observedTimeUnixNano", "observed_time_unix_nano"),
                        f"{p}.observedTimeUnixNano",
                    )
                trace_id = dj._id(dj._get(rec, "traceId", "trace_id"), f"{p}.traceId")
                span_id = dj._id(dj._get(rec, "spanId", "span_id"), f"{p}.spanId")
                out.add(
                    trace_id if len(trace_id) == 32 and trace_id.strip("0") else "",
                    span_id if len(span_id) == 16 and span_id.strip("0") else "",
                    t,
                    dj._opt_str(dj._get(rec, "eventName", "event_name"), f"{p}.eventName") or "",
                    dj._value(out.counters, rec.get("body"), limits, f"{p}.body"),
                    dj._attrs(
                        out.counters,
                        dj._list(rec, "attributes", "attributes", p),
                        limits,
                        f"{p}.attributes",
                    ),
                    resource_json,
                    scope_name,
                )
    return out


def decode_logs_body(
    body: bytes | bytearray,
    mtype: str,
    encoding: str | None,
    max_decompressed: int,
    max_attr_chars: int,
) -> LogBatch:
    """One export request's bytes (gzip inflated under the limit) to its kept events."""
    enc = (encoding or "identity").strip().lower()
    if enc == "gzip":
        body = gunzip_limited(body, max_decompressed)
    elif enc not in ("identity", ""):
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    limits = Limits(max_attr_chars)
    if mtype == PROTOBUF:
        return decode_logs_protobuf(bytes(body), limits)
    return decode_logs_json(bytes(body), limits)
