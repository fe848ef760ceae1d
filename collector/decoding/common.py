"""Decoded spans to :class:`SpanBatch` rows: what the protobuf and the JSON decoder share.

Both encodings end in :func:`append_span`, so every span is validated and normalized the same
way: invalid ids are counted as rejected (OTLP ``partial_success``) with a message, attributes
go through :func:`~prefixscope.collector.spans.normalize.normalize`, and the JSON columns are
serialized here. Limits (:class:`Limits`, :data:`MAX_DEPTH`) and the truncation counter
(:func:`truncate`) are shared too.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from ..spans.model import SpanBatch
from ..spans.normalize import OUTPUT_COLUMNS, normalize

KIND_NAMES = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_NAMES = ("UNSET", "OK", "ERROR")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
MAX_DEPTH = 16  # attribute values nested deeper are rejected
_JSON_OPTS = orjson.OPT_NON_STR_KEYS
_TTFT = OUTPUT_COLUMNS.index("ttft_ms")
_EPOCH = datetime(1970, 1, 1)


class Limits:
    """Per-value limits applied while decoding."""

    __slots__ = ("max_attribute_chars",)

    def __init__(self, max_attribute_chars: int = 32 * 1024) -> None:
        self.max_attribute_chars = max_attribute_chars


def append_span(
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
    """Validate one decoded span's ids, normalize its attributes and append its row (or count
    it as rejected, with a message)."""
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


def truncate(batch: SpanBatch, value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, counted in the batch's truncation counter."""
    batch.truncated_attributes += 1
    return value[:limit]
