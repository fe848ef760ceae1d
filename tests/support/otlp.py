"""OTLP request bodies as clients send them, and the golden fixtures of each convention."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from prefixscope.collector.decoding import PROTOBUF as PROTOBUF_TYPE
from prefixscope.collector.decoding import decode_body

from .paths import FIXTURES

OTLP_FIXTURES = FIXTURES / "otlp"
#: the Content-Type header of an OTLP/HTTP protobuf request
PROTOBUF_HEADERS = {"Content-Type": "application/x-protobuf"}


def make_body(req_no: int, n_spans: int = 64) -> tuple[bytes, str]:
    """A request whose spans all share one trace id derived from ``req_no``."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    trace_id = (req_no + 1).to_bytes(16, "big")
    for i in range(n_spans):
        sp: Span = ss.spans.add()
        sp.trace_id = trace_id
        sp.span_id = (i + 1).to_bytes(8, "big")
        sp.name = "gen"
        sp.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        sp.end_time_unix_nano = sp.start_time_unix_nano + 5_000_000
        kv = sp.attributes.add()
        kv.key, kv.value.string_value = "prefix.id", f"p{req_no % 7}"
    return req.SerializeToString(), trace_id.hex()


def decoded_table(req_no: int, n: int) -> pa.Table:
    """:func:`make_body`'s spans as the decoder hands them to the writer."""
    body, _ = make_body(req_no, n)
    t = decode_body(body, PROTOBUF_TYPE, None, 1 << 24, 1024).table
    assert t is not None
    return t


T0 = 1772442900000000000  # 2026-03-02T09:15:00Z in ns

Attr = str | int | float | bool


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


def pb_request(
    spans: Iterable[tuple[str, str, str, dict[str, Attr]]], service: str = "raw-client"
) -> ExportTraceServiceRequest:
    """One resource, one scope; each span is (trace_id hex, span_id hex, name, attributes)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    scope = rs.scope_spans.add()
    scope.scope.name = "tests"
    for trace_id, span_id, name, attrs in spans:
        sp = scope.spans.add()
        sp.trace_id, sp.span_id, sp.name = bytes.fromhex(trace_id), bytes.fromhex(span_id), name
        sp.kind = 3  # CLIENT
        sp.start_time_unix_nano, sp.end_time_unix_nano = T0, T0 + 2_000_000
        for key, value in attrs.items():
            a = sp.attributes.add()
            a.key = key
            if isinstance(value, bool):
                a.value.bool_value = value
            elif isinstance(value, int):
                a.value.int_value = value
            elif isinstance(value, float):
                a.value.double_value = value
            else:
                a.value.string_value = value
    return req


def pb_body(ids: Sequence[int], service: str = "raw-client") -> bytes:
    attrs: list[dict[str, Attr]] = [{"gen_ai.usage.input_tokens": n} for n in ids]
    spans = [(tid(n), sid(n), f"span-{n}", a) for n, a in zip(ids, attrs, strict=True)]
    return pb_request(spans, service).SerializeToString()


def json_spans(i: int) -> dict[str, object]:
    """An OTLP/JSON request of 50 spans, distinct per ``i``."""
    spans = [
        {
            "traceId": f"{i + 1:016x}{j + 1:016x}",
            "spanId": f"{i + 1:08x}{j + 1:08x}",
            "name": "gen",
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000100000000",
            "attributes": [{"key": "prefix.id", "value": {"stringValue": "p"}}],
        }
        for j in range(50)
    ]
    return {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}


SOURCES = (
    "genai_current",
    "genai_legacy",
    "vllm_llm_request",
    "openinference",
    "traceai",
    "prefixscope",
)
_ID_KEYS = frozenset({"traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"})


def fixture_bytes(source: str) -> bytes:
    return (OTLP_FIXTURES / f"{source}.json").read_bytes()


def expected_spans(source: str) -> dict[str, dict[str, Any]]:
    spans: dict[str, dict[str, Any]] = json.loads(
        (OTLP_FIXTURES / f"{source}.expected.json").read_text()
    )["spans"]
    return spans


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON carries ids as hex; the generic protobuf JSON mapping wants base64."""
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in _ID_KEYS and isinstance(v, str)
            else _hex_ids_to_base64(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def otlp_json_to_protobuf(body: bytes) -> bytes:
    """The protobuf encoding of the same OTLP request (ids converted, everything else as is)."""
    doc = _hex_ids_to_base64(json.loads(body))
    return json_format.Parse(json.dumps(doc), ExportTraceServiceRequest()).SerializeToString()
