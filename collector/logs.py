"""OTLP logs (``POST /v1/logs``, gRPC ``LogsService/Export``): GenAI events kept, the rest counted.

The official OTel GenAI instrumentors send message content as log events, not span
attributes: ``gen_ai.system.message``, ``gen_ai.user.message``, ``gen_ai.assistant.message``,
``gen_ai.tool.message`` and ``gen_ai.choice``, each carrying the trace and span id of the
call. A record whose event name (the ``event_name`` field, else the ``event.name``
attribute) starts with ``gen_ai.`` is stored in ``log_events``; every other record is
accepted, counted (``prefixscope_log_records_total{kept="false"}``) and dropped: PrefixScope
is not a general log store. Events join their span by ``(trace_id, span_id)`` when text is
read (:mod:`.messages`), so it does not matter which of the two arrives first.

A record is stored once: its id is a hash of (trace, span, time, event name, body), so a
retried export is ignored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from prefixscope.config import Settings
from prefixscope.errors import BadRequest, Unavailable, UnsupportedMediaType
from prefixscope.metrics import Metrics

from .decoding import PROTOBUF, gunzip_limited
from .decoding import json as dj
from .decoding.protobuf import _pb_attrs, _pb_value, parse_request
from .decoding.spans import Limits
from .model import SpanBatch
from .storage.store import Store

GENAI_EVENT_PREFIX = "gen_ai."
EVENT_NAME_ATTRIBUTE = "event.name"
_INSERT = (
    "INSERT OR IGNORE INTO log_events (id, trace_id, span_id, time, event_name, body, "
    "attributes, resource, scope_name, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(slots=True)
class LogBatch:
    """The kept GenAI events of one export request, and what happened to the rest."""

    rows: list[list[Any]] = field(default_factory=list)
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


class LogReceiver:
    """Decodes OTLP log exports and stores their GenAI events (embedded store only)."""

    def __init__(self, settings: Settings, store: Store | None, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics

    def handle(self, body: bytes, mtype: str, encoding: str | None) -> LogBatch:
        """Decode and store (blocking: call from a worker thread). 200 means durable."""
        s = self.settings
        enc = (encoding or "identity").strip().lower()
        if enc == "gzip":
            body = gunzip_limited(body, s.max_decompressed_bytes)
        elif enc not in ("identity", ""):
            raise UnsupportedMediaType(
                f"unsupported Content-Encoding {encoding!r}: use gzip or none"
            )
        limits = Limits(s.max_attribute_bytes)
        batch = (
            decode_logs_protobuf(body, limits)
            if mtype == PROTOBUF
            else decode_logs_json(body, limits)
        )
        if batch.rows:
            if self.store is None:
                raise BadRequest(
                    "GenAI log events are stored by the embedded store only (--store duckdb); "
                    "this collector runs in lake mode: send logs to the serving process"
                )
            self._store(batch.rows)
        m = self.metrics
        m.log_records.labels("true").inc(len(batch.rows))
        m.log_records.labels("false").inc(batch.dropped)
        if batch.counters.truncated_attributes:
            m.attributes_truncated.inc(batch.counters.truncated_attributes)
        return batch

    def _store(self, rows: list[list[Any]]) -> None:
        assert self.store is not None
        ingested = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        cur = self.store.cursor()
        try:
            cur.executemany(_INSERT, [[*r, ingested] for r in rows])
        except duckdb.Error as exc:
            raise Unavailable(f"could not store log events: {exc}", retry_after_s=1) from None
        finally:
            cur.close()


def logs_response(mtype: str) -> tuple[bytes, str]:
    """An empty ExportLogsServiceResponse in the request's encoding."""
    if mtype == PROTOBUF:
        return ExportLogsServiceResponse().SerializeToString(), PROTOBUF
    return b"{}", "application/json"
