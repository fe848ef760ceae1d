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

Logs never starve traces: a request's events become one Arrow table, handed to the
group-commit writer in slices of at most ``--logs-batch-max-records`` (one slice waiting at a
time), and the writer alternates span groups and log slices. Log requests have their own
budget (``--logs-max-inflight`` requests decoded or committed at once, in their own threads);
beyond it they get 429 with ``Retry-After`` before their body is read, whatever traces do.
At shutdown a request still between slices answers 503 (its slices so far are stored, and
its retry stores each record once).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from prefixscope.config import Settings
from prefixscope.errors import BadRequest, Overloaded, Unavailable, UnsupportedMediaType
from prefixscope.metrics import Metrics

from .decoding import PROTOBUF, gunzip_limited
from .decoding import json as dj
from .decoding.protobuf import _pb_attrs, _pb_value, parse_request
from .decoding.spans import Limits
from .model import LOG_EVENT_SCHEMA, SpanBatch
from .writer import GroupCommitWriter

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


class LogReceiver:
    """Decodes OTLP log exports and stores their GenAI events (embedded store only), within
    the logs' own budget: requests in flight, and records per group commit."""

    def __init__(self, settings: Settings, writer: GroupCommitWriter, metrics: Metrics) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self.max_inflight = settings.logs_max_inflight
        self.slice_records = settings.logs_batch_max_records
        #: log requests decode and wait for their commits here, never in the trace threads
        self.threads = ThreadPoolExecutor(
            max_workers=self.max_inflight, thread_name_prefix="prefixscope-logs"
        )
        self._inflight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """The logs' admission budget: 429 before the body is read once it is spent."""
        with self._lock:
            if self._closing.is_set():
                raise Unavailable(
                    "server is shutting down", retry_after_s=self.settings.retry_after_s
                )
            if self._inflight >= self.max_inflight:
                self.metrics.log_requests_shed.inc()
                raise Overloaded(
                    f"log ingest is at capacity ({self.max_inflight} log exports in flight, "
                    "--logs-max-inflight); retry later",
                    retry_after_s=self.settings.retry_after_s,
                )
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1

    def begin_shutdown(self) -> None:
        """Requests still between slices stop with 503 (retryable); new ones are refused."""
        self._closing.set()

    def close(self) -> None:
        self.begin_shutdown()
        self.threads.shutdown(wait=True)

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
        del body
        if batch.rows:
            if not self.writer.stores_logs:
                raise BadRequest(
                    "GenAI log events are stored by the embedded store only (--store duckdb); "
                    "this collector runs in lake mode: send logs to the serving process"
                )
            self._store(batch.table())
        m = self.metrics
        m.log_records.labels("true").inc(len(batch.rows))
        m.log_records.labels("false").inc(batch.dropped)
        if batch.counters.truncated_attributes:
            m.attributes_truncated.inc(batch.counters.truncated_attributes)
        return batch

    def _store(self, table: pa.Table) -> None:
        """Slice by slice through the group-commit writer, one slice waiting at a time, so
        span groups are committed between them."""
        for offset in range(0, table.num_rows, self.slice_records):
            if self._closing.is_set():
                raise Unavailable(
                    "server is shutting down; the export was stored in part, a retry stores "
                    "each record once",
                    retry_after_s=self.settings.retry_after_s,
                )
            self.writer.submit_logs(table.slice(offset, self.slice_records)).result()


def logs_response(mtype: str) -> tuple[bytes, str]:
    """An empty ExportLogsServiceResponse in the request's encoding."""
    if mtype == PROTOBUF:
        return ExportLogsServiceResponse().SerializeToString(), PROTOBUF
    return b"{}", "application/json"
