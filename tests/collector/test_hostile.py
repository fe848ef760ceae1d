"""Hostile inputs against the real server, each with its exact expected answer.

One server (small limits, a token) takes every hostile request in this module; the last test
checks it is still healthy and that the spans it acknowledged before the attack are intact.
A small hypothesis property test fuzzes the decoders directly (no server).
"""

from __future__ import annotations

import contextlib
import json
import random
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from prefixscope.collector.decoding.json import decode_json
from prefixscope.collector.decoding.protobuf import decode_protobuf
from prefixscope.collector.spans.model import SpanBatch
from prefixscope.errors import BadRequest
from tests.support.otlp import (
    SOURCES,
    expected_spans,
    fixture_bytes,
    otlp_json_to_protobuf,
    pb_body,
    pb_request,
    sid,
    tid,
)
from tests.support.serverproc import ServerProcess, metric_values
from tests.support.store import query_store

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial

TOKEN = "hostile-token"
MAX_BODY = 2 * 1024 * 1024
MAX_DECOMPRESSED = 4 * 1024 * 1024
MAX_ATTR = 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PB_PREFIX = "body is not a valid OTLP ExportTraceServiceRequest protobuf: "
JSON_PREFIX = "body is not valid JSON: "
SPAN0 = "resourceSpans[0].scopeSpans[0].spans[0]"


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        tmp_path_factory.mktemp("hostile") / "data",
        [
            "--token",
            TOKEN,
            "--max-body-bytes",
            str(MAX_BODY),
            "--max-decompressed-bytes",
            str(MAX_DECOMPRESSED),
            "--max-attribute-bytes",
            str(MAX_ATTR),
        ],
    ).start()
    for source in SOURCES:  # acknowledged before the attack
        resp = post(srv, fixture_bytes(source), JSON)
        assert resp.status_code == 200, resp.text
    yield srv
    try:
        srv.stop()
    except Exception:
        srv.kill()


def post(srv: ServerProcess, body: Any, ctype: str | None, **headers: str) -> httpx.Response:
    h = {**AUTH, **headers}
    if ctype is not None:
        h["Content-Type"] = ctype
    return httpx.post(f"{srv.base_url}/v1/traces", content=body, headers=h, timeout=60)


def error_of(resp: httpx.Response) -> tuple[int, str]:
    """(gRPC status code, message) from an OTLP/HTTP error body, protobuf or JSON."""
    if resp.headers.get("content-type") == PROTOBUF:
        status = status_pb2.Status.FromString(resp.content)
        return status.code, status.message
    body = resp.json()
    return int(body["code"]), str(body["message"])


def span_json(**fields: Any) -> bytes:
    span = {"traceId": tid(7), "spanId": sid(7), "name": "hostile", **fields}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def nested_kvlist(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


def nested_pb(depth: int) -> bytes:
    req = pb_request([(tid(8), sid(8), "deep", {})])
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        outer = AnyValue()
        outer.array_value.values.add().CopyFrom(value)
        value = outer
    kv = req.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    kv.key = "deep"
    kv.value.CopyFrom(value)
    return req.SerializeToString()


def bad_utf8_protobuf() -> bytes:
    body = pb_request([(tid(9), sid(9), "NAME", {})]).SerializeToString()
    assert body.count(b"NAME") == 1
    return body.replace(b"NAME", b"N\xff\xfeE")


def gzip_bomb(mib: int) -> bytes:
    """``mib`` MiB of zeros as one valid gzip member (~1 KB per MiB), built without zlib
    compressing all of it: identical fully-flushed deflate blocks, then the real CRC."""
    zeros = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + block * mib + tail + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)


@dataclass(frozen=True)
class Case:
    body: Callable[[], bytes]
    ctype: str | None
    status: int
    code: int  # google.rpc code in the error body
    message: str  # exact, or a prefix when ``contains`` is given
    contains: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)


def j(**fields: Any) -> Callable[[], bytes]:
    return lambda: span_json(**fields)


CASES: dict[str, Case] = {
    # -- undecodable protobuf
    "truncated-protobuf": Case(
        lambda: pb_body([1, 2, 3])[:-7], PROTOBUF, 400, 3, PB_PREFIX, ("ExportTraceServiceRequest",)
    ),
    "random-bytes-protobuf": Case(
        lambda: random.Random(0).randbytes(512),
        PROTOBUF,
        400,
        3,
        PB_PREFIX,
        ("ExportTraceServiceRequest",),
    ),
    "invalid-utf8-protobuf-string": Case(
        bad_utf8_protobuf, PROTOBUF, 400, 3, PB_PREFIX, ("UTF-8",)
    ),
    "protobuf-nested-deeper-than-16": Case(
        lambda: nested_pb(40), PROTOBUF, 400, 3, "attribute values nested deeper than 16 levels"
    ),
    "protobuf-nested-past-parser-limit": Case(
        lambda: nested_pb(300), PROTOBUF, 400, 3, PB_PREFIX, ("ExportTraceServiceRequest",)
    ),
    # -- undecodable JSON
    "random-bytes-json": Case(
        lambda: random.Random(1).randbytes(512), JSON, 400, 3, JSON_PREFIX, ("line 1",)
    ),
    "invalid-utf8-json": Case(
        lambda: span_json(name="NAME").replace(b"NAME", b"N\xff\xfeE"),
        JSON,
        400,
        3,
        JSON_PREFIX,
        ("UTF-8",),
    ),
    "lone-surrogate-json": Case(
        lambda: span_json(name="NAME").replace(b"NAME", rb"\ud800"),
        JSON,
        400,
        3,
        JSON_PREFIX,
        ("surrogate",),
    ),
    "json-nested-past-parser-limit": Case(
        lambda: span_json(name="NAME").replace(b'"NAME"', b"[" * 5000 + b"]" * 5000),
        JSON,
        400,
        3,
        JSON_PREFIX,
        ("depth limit",),
    ),
    "json-nested-deeper-than-16": Case(
        lambda: span_json(attributes=[{"key": "deep", "value": nested_kvlist(40)}]),
        JSON,
        400,
        3,
        f"{SPAN0}.attributes[0].value" + ".kvlistValue.values[0].value" * 16,
        (": attribute values nested deeper than 16 levels",),
    ),
    # -- wrong types in JSON: the message names the JSON path
    "json-top-level-array": Case(lambda: b"[]", JSON, 400, 3, "$: expected an object, got list"),
    "json-resource-spans-object": Case(
        lambda: b'{"resourceSpans": {}}',
        JSON,
        400,
        3,
        "$.resourceSpans: expected an array, got dict",
    ),
    "json-trace-id-number": Case(
        j(traceId=123), JSON, 400, 3, f"{SPAN0}.traceId: expected a hex string, got int"
    ),
    "json-trace-id-not-hex": Case(
        j(traceId="not-hex"), JSON, 400, 3, f"{SPAN0}.traceId: not a hex id: 'not-hex'"
    ),
    "json-name-number": Case(j(name=5), JSON, 400, 3, f"{SPAN0}.name: expected a string"),
    "json-start-time-word": Case(
        j(startTimeUnixNano="soon"),
        JSON,
        400,
        3,
        f"{SPAN0}.startTimeUnixNano: expected an integer string, got 'soon'",
    ),
    "json-start-time-bool": Case(
        j(startTimeUnixNano=True),
        JSON,
        400,
        3,
        f"{SPAN0}.startTimeUnixNano: expected an integer, got a boolean",
    ),
    "json-kind-unknown": Case(
        j(kind="SPAN_KIND_BOGUS"),
        JSON,
        400,
        3,
        f"{SPAN0}.kind: unknown enum value 'SPAN_KIND_BOGUS'",
    ),
    "json-status-code-out-of-range": Case(
        j(status={"code": 7}), JSON, 400, 3, f"{SPAN0}.status.code: enum number 7 out of range"
    ),
    "json-attributes-string": Case(
        j(attributes="x"), JSON, 400, 3, f"{SPAN0}.attributes: expected an array, got str"
    ),
    "json-attribute-without-key": Case(
        j(attributes=[{"value": {"stringValue": "v"}}]),
        JSON,
        400,
        3,
        f"{SPAN0}.attributes[0].key: expected a string",
    ),
    "json-int-value-word": Case(
        j(attributes=[{"key": "n", "value": {"intValue": "12abc"}}]),
        JSON,
        400,
        3,
        f"{SPAN0}.attributes[0].value.intValue: expected an integer string, got '12abc'",
    ),
    "json-bool-value-string": Case(
        j(attributes=[{"key": "b", "value": {"boolValue": "yes"}}]),
        JSON,
        400,
        3,
        f"{SPAN0}.attributes[0].value.boolValue: expected a boolean, got str",
    ),
    "json-double-value-list": Case(
        j(attributes=[{"key": "d", "value": {"doubleValue": []}}]),
        JSON,
        400,
        3,
        f"{SPAN0}.attributes[0].value.doubleValue: expected a number, got list",
    ),
    "json-unknown-any-value-field": Case(
        j(attributes=[{"key": "u", "value": {"fooValue": 1}}]),
        JSON,
        400,
        3,
        f"{SPAN0}.attributes[0].value: unknown AnyValue field 'fooValue'",
    ),
    "json-bytes-value-not-base64": Case(
        j(attributes=[{"key": "b", "value": {"bytesValue": "!!!"}}]),
        JSON,
        400,
        3,
        f"{SPAN0}.attributes[0].value.bytesValue: invalid base64",
    ),
    # int64 fields beyond 64 bits: a precise 400, never a 500
    "json-end-time-beyond-int64": Case(
        j(endTimeUnixNano="99999999999999999999999"), JSON, 400, 3, f"{SPAN0}.endTimeUnixNano: "
    ),
    "json-end-time-float-beyond-int64": Case(
        j(endTimeUnixNano=1e30), JSON, 400, 3, f"{SPAN0}.endTimeUnixNano: "
    ),
    "json-int-value-beyond-int64": Case(
        j(attributes=[{"key": "n", "value": {"intValue": "99999999999999999999999"}}]),
        JSON,
        400,
        3,
        f"{SPAN0}.attributes[0].value.intValue: ",
    ),
    # -- transport-level refusals
    "oversized-body": Case(
        lambda: b"\0" * (MAX_BODY + 1),
        PROTOBUF,
        413,
        8,
        f"body of {MAX_BODY + 1} bytes exceeds the limit of {MAX_BODY} bytes",
    ),
    "unknown-content-type": Case(
        lambda: pb_body([1]),
        "text/plain",
        415,
        3,
        "unsupported Content-Type 'text/plain': use application/x-protobuf or application/json",
    ),
    "missing-content-type": Case(
        lambda: pb_body([1]),
        None,
        415,
        3,
        "unsupported Content-Type None: use application/x-protobuf or application/json",
    ),
    "unknown-content-encoding": Case(
        lambda: pb_body([1]),
        PROTOBUF,
        415,
        3,
        "unsupported Content-Encoding 'br': use gzip or none",
        headers={"Content-Encoding": "br"},
    ),
    "not-gzip": Case(
        lambda: b"this is not gzip",
        PROTOBUF,
        400,
        3,
        "body is not valid gzip: ",
        ("header",),
        headers={"Content-Encoding": "gzip"},
    ),
    "truncated-gzip": Case(
        lambda: zlib.compress(pb_body([1]), wbits=31)[:-12],
        PROTOBUF,
        400,
        3,
        "gzip body is truncated",
        headers={"Content-Encoding": "gzip"},
    ),
    "wrong-token": Case(
        lambda: pb_body([1]),
        JSON,
        401,
        16,
        "invalid token for ingest",
        headers={"Authorization": "Bearer not-the-token"},
    ),
    "no-token": Case(
        lambda: pb_body([1]),
        JSON,
        401,
        16,
        "ingest requires 'Authorization: Bearer <token>'",
        headers={"Authorization": ""},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_request_is_refused_precisely(name: str, hostile_server: ServerProcess) -> None:
    case = CASES[name]
    resp = post(hostile_server, case.body(), case.ctype, **case.headers)
    assert resp.status_code == case.status, resp.text
    code, message = error_of(resp)
    assert code == case.code
    if case.contains or case.message.endswith(": "):
        assert message.startswith(case.message), message
        for part in case.contains:
            assert part in message, message
    else:
        assert message == case.message


def test_chunked_oversized_body_is_refused(hostile_server: ServerProcess) -> None:
    """No Content-Length: the limit is enforced while streaming."""

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"\0" * 65536

    resp = post(hostile_server, chunks(), PROTOBUF)
    assert resp.status_code == 413
    assert error_of(resp) == (8, f"body exceeds the limit of {MAX_BODY} bytes")


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_gzip_bomb_is_refused_without_inflating_it(hostile_server: ServerProcess) -> None:
    bomb = gzip_bomb(1024)  # 1 GiB of zeros in ~1 MiB
    assert len(bomb) < MAX_BODY
    assert hostile_server.proc is not None
    peak_before = _peak_rss_kib(hostile_server.proc.pid)
    started = time.monotonic()
    resp = post(hostile_server, bomb, PROTOBUF, **{"Content-Encoding": "gzip"})
    elapsed = time.monotonic() - started
    assert resp.status_code == 413
    assert error_of(resp) == (8, f"decompressed body exceeds the limit of {MAX_DECOMPRESSED} bytes")
    assert elapsed < 10, f"refusing the bomb took {elapsed:.1f}s"
    grown_mib = (_peak_rss_kib(hostile_server.proc.pid) - peak_before) / 1024
    assert grown_mib < 128, f"server peak RSS grew by {grown_mib:.0f} MiB"


HUGE = "x" * 200_000


def huge_attributes_request() -> bytes:
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "huge"}},
                        {"key": "host.notes", "value": {"stringValue": HUGE}},
                    ]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": tid(500),
                                "spanId": sid(500),
                                "name": "huge",
                                "attributes": [
                                    {"key": "input.value", "value": {"stringValue": HUGE}},
                                    {
                                        "key": "list",
                                        "value": {
                                            "arrayValue": {
                                                "values": [
                                                    {"stringValue": HUGE},
                                                    {"stringValue": "short"},
                                                    {"stringValue": HUGE},
                                                ]
                                            }
                                        },
                                    },
                                    {
                                        "key": "gen_ai.usage.input_tokens",
                                        "value": {"stringValue": "99999999999999999999999"},
                                    },
                                    {
                                        "key": "gen_ai.usage.output_tokens",
                                        "value": {"intValue": "12"},
                                    },
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    return json.dumps(doc).encode()


def test_huge_attribute_values_are_truncated_and_counted(hostile_server: ServerProcess) -> None:
    before = metric_values(hostile_server, TOKEN)[("prefixscope_attributes_truncated_total", ())]
    resp = post(hostile_server, huge_attributes_request(), JSON)
    assert (resp.status_code, resp.json()) == (200, {})
    after = metric_values(hostile_server, TOKEN)[("prefixscope_attributes_truncated_total", ())]
    assert after - before == 4  # resource value, span value, two array items


def test_huge_bytes_attribute_is_truncated_and_counted(hostile_server: ServerProcess) -> None:
    req = pb_request([(tid(501), sid(501), "huge-bytes", {})])
    kv = req.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    kv.key, kv.value.bytes_value = "blob", bytes(range(256)) * 64  # 16 KiB
    before = metric_values(hostile_server, TOKEN)[("prefixscope_attributes_truncated_total", ())]
    resp = post(hostile_server, req.SerializeToString(), PROTOBUF)
    assert resp.status_code == 200
    after = metric_values(hostile_server, TOKEN)[("prefixscope_attributes_truncated_total", ())]
    assert after - before == 1


def test_afterwards_server_is_healthy_and_acknowledged_spans_intact(
    hostile_server: ServerProcess,
) -> None:
    health = httpx.get(f"{hostile_server.base_url}/healthz", timeout=10)
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    ok = post(hostile_server, pb_body([600]), PROTOBUF)
    assert ok.status_code == 200
    assert hostile_server.stop() == 0, hostile_server.log()

    rows = query_store(
        hostile_server.data_dir, "SELECT span_id, trace_id, input_tokens, output_tokens FROM spans"
    )
    by_span = {r[0]: r[1:] for r in rows}
    for source in SOURCES:
        for span_id, want in expected_spans(source).items():
            assert by_span.pop(span_id) == (
                want["trace_id"],
                want["input_tokens"],
                want["output_tokens"],
            ), (source, span_id)
    assert by_span.pop(sid(600)) == (tid(600), 600, None)
    # accepted hostile-but-valid spans; nothing from the refused requests
    assert set(by_span) <= {sid(500), sid(501)}
    if sid(500) in by_span:
        assert by_span[sid(500)] == (tid(500), None, 12)
        ((attrs, resource),) = query_store(
            hostile_server.data_dir,
            "SELECT attributes, resource FROM spans WHERE span_id = ?",
            [sid(500)],
        )
        attrs, resource = json.loads(attrs), json.loads(resource)
        assert attrs["input.value"] == "x" * MAX_ATTR
        assert attrs["list"] == ["x" * MAX_ATTR, "short", "x" * MAX_ATTR]
        assert attrs["gen_ai.usage.input_tokens"] == "99999999999999999999999"
        assert resource["host.notes"] == "x" * MAX_ATTR


# -- property test of the decoders (no server) ------------------------------------------------

SEEDS: list[tuple[bytes, Callable[[bytes], SpanBatch]]] = []
for _source in SOURCES:
    SEEDS.append((fixture_bytes(_source), decode_json))
    SEEDS.append((otlp_json_to_protobuf(fixture_bytes(_source)), decode_protobuf))
SEEDS.append((pb_body([1, 2]), decode_protobuf))


def decode_all_the_way(decoder: Callable[[bytes], SpanBatch], data: bytes) -> None:
    """What the server does with a body: decode, then build the Arrow table."""
    with contextlib.suppress(BadRequest):
        decoder(data).to_arrow()


FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(st.binary(max_size=1024))
def test_decoders_raise_only_bad_request_on_arbitrary_bytes(data: bytes) -> None:
    decode_all_the_way(decode_protobuf, data)
    decode_all_the_way(decode_json, data)


@FUZZ
@given(
    st.integers(0, len(SEEDS) - 1),
    st.lists(
        st.tuples(
            st.sampled_from(("set", "insert", "delete")),
            st.integers(0, 1 << 20),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=6,
    ),
    st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_decoders_raise_only_bad_request_on_mutated_requests(
    seed: int, mutations: list[tuple[str, int, int]], cut: int | None
) -> None:
    original, decoder = SEEDS[seed]
    data = bytearray(original)
    for op, pos, byte in mutations:
        at = pos % (len(data) + 1)
        if op == "insert":
            data.insert(at, byte)
        elif data and op == "set":
            data[at % len(data)] = byte
        elif data:
            del data[at % len(data)]
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    decode_all_the_way(decoder, bytes(data))
    decode_all_the_way(decode_json if decoder is decode_protobuf else decode_protobuf, bytes(data))
