"""The compiled OTLP protobuf decoder against the pure-Python reference: same results, same
errors, on every golden fixture, on real clients' captures, on generated requests of every
shape and on hostile bytes.

Each case runs ``decode_body`` twice, once per decoder, and requires the same outcome: equal
Arrow tables (values, types, nulls), the same span, rejection and truncation counts and
messages, or the same error class and message. Requests outside the shape the native decoder
handles are handed to the reference (``Decoded.deferred``), so the tests also pin down that the
common shapes are *not* deferred: a native decoder that deferred everything would pass the
comparisons and fail those.

``PREFIXSCOPE_NATIVE_PATH`` (set by ``test_native_decoder_sanitized``) makes this module run
against an AddressSanitizer/UBSan build of the extension.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bench.workload import make_request
from prefixscope import semconv as k
from prefixscope.collector.decoding import PROTOBUF, Decoded, decode_body, use_decoder
from prefixscope.collector.spans import normalize
from prefixscope.errors import PrefixScopeError
from tests.support.decoders import require_native_decoder
from tests.support.otlp import SOURCES, fixture_bytes, otlp_json_to_protobuf
from tests.support.paths import FIXTURES as FIXTURES_DIR

INTEROP = FIXTURES_DIR / "otlp" / "interop"
LIMITS = (32 * 1024, 64, 5, 0)


@pytest.fixture(autouse=True)
def _native_available() -> Iterator[None]:
    require_native_decoder()
    yield
    use_decoder("python")


Outcome = tuple[Any, ...]


def run(decoder: str, body: bytes, limit: int) -> tuple[Outcome, Decoded | None]:
    use_decoder(decoder)
    try:
        d = decode_body(body, PROTOBUF, None, 1 << 26, limit)
    except PrefixScopeError as err:
        return ("error", type(err).__name__, err.http_status, err.message), None
    finally:
        use_decoder("python")
    return ("ok", d.table, d.spans, d.rejected, d.message, d.truncated), d


def same(out_py: Outcome, out_native: Outcome) -> bool:
    if out_py[0] != out_native[0]:
        return False
    if out_py[0] == "error":
        return out_py == out_native
    t1, t2 = out_py[1], out_native[1]
    tables = (t1 is None and t2 is None) or (
        t1 is not None and t2 is not None and t1.schema == t2.schema and t1.equals(t2)
    )
    return tables and out_py[2:] == out_native[2:]


def check(body: bytes, limit: int = 32 * 1024) -> Decoded | None:
    """Both decoders on ``body``: identical outcomes. Returns the native run's Decoded."""
    py, _ = run("python", body, limit)
    nat, decoded = run("native", body, limit)
    if not same(py, nat):  # a readable diff
        if py[0] == nat[0] == "ok" and py[1] is not None and nat[1] is not None:
            for name in py[1].column_names:
                a, b = py[1].column(name).to_pylist(), nat[1].column(name).to_pylist()
                assert a == b, f"column {name} differs"
        assert py == nat
    return decoded


# -- golden fixtures and real clients ------------------------------------------------------


def _fixture_bodies() -> list[tuple[str, bytes]]:
    bodies = [(src, otlp_json_to_protobuf(fixture_bytes(src))) for src in SOURCES]
    bodies += [(p.name, p.read_bytes()) for p in sorted(INTEROP.glob("*.traces.pb"))]
    bodies += [
        (f"workload-{seed}", make_request(64, seed=seed).SerializeToString()) for seed in (0, 1)
    ]
    return bodies


FIXTURES = _fixture_bodies()


def test_there_are_fixtures_of_every_source() -> None:
    names = {n for n, _ in FIXTURES}
    assert set(SOURCES) <= names and len(SOURCES) >= 6
    assert len([n for n in names if n.endswith(".traces.pb")]) >= 3  # real clients' captures


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize(("name", "body"), FIXTURES, ids=[n for n, _ in FIXTURES])
def test_fixture_decodes_identically_and_natively(name: str, body: bytes, limit: int) -> None:
    decoded = check(body, limit)
    assert decoded is not None and decoded.spans > 0
    # the native decoder handled it itself: these are the shapes it exists for
    assert not decoded.deferred, f"{name} was handed to the Python decoder"


# -- generated requests -------------------------------------------------------------------

FOREIGN_KEYS = [
    *sorted(normalize._KEYMAP),
    k.SERVICE_NAME,
    "cohort.segment",
    "cohort.tier",
    "cohort.",
    "user.id",
    "é",
    "",
]
huge = st.text(min_size=100, max_size=400)
texts = st.one_of(st.text(max_size=20), huge, st.sampled_from(["12", " 7 ", "1e3", "nan", "x"]))
params = st.builds(lambda m: f'{{"model": "{m}", "t": 1}}', st.text(max_size=10))


def any_values(clean: bool) -> st.SearchStrategy[AnyValue]:
    doubles = st.floats(allow_nan=not clean, allow_infinity=not clean)
    leaf = st.one_of(
        texts.map(lambda s: AnyValue(string_value=s)),
        params.map(lambda s: AnyValue(string_value=s)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
        doubles.map(lambda d: AnyValue(double_value=d)),
        st.binary(max_size=300).map(lambda b: AnyValue(bytes_value=b)),
        st.just(AnyValue()),
    )

    def nest(children: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[AnyValue]:
        def array(vs: list[AnyValue]) -> AnyValue:
            v = AnyValue()
            v.array_value.values.extend(vs)
            return v

        def kvlist(kvs: list[tuple[str, AnyValue]]) -> AnyValue:
            v = AnyValue()
            v.kvlist_value.values.extend(KeyValue(key=a, value=b) for a, b in kvs)
            return v

        keys = st.sampled_from(["a", "b", "c", "d", "e"]) if clean else st.text(max_size=3)
        return st.one_of(
            st.lists(children, max_size=4).map(array),
            st.lists(st.tuples(keys, children), max_size=4, unique_by=(lambda t: t[0])).map(kvlist)
            if clean
            else st.lists(st.tuples(keys, children), max_size=4).map(kvlist),
        )

    return st.recursive(leaf, nest, max_leaves=12)


def attributes(clean: bool) -> st.SearchStrategy[list[KeyValue]]:
    keys = st.one_of(st.sampled_from(FOREIGN_KEYS), st.text(max_size=12))
    pairs = st.tuples(keys, any_values(clean))
    lists = (
        st.lists(pairs, max_size=12, unique_by=(lambda t: t[0]))
        if clean
        else st.lists(pairs, max_size=12)
    )
    return lists.map(lambda kvs: [KeyValue(key=a, value=b) for a, b in kvs])


def ids(n: int, clean: bool) -> st.SearchStrategy[bytes]:
    good = st.binary(min_size=n, max_size=n).filter(lambda b: any(b))
    if clean:
        return good
    return st.one_of(good, good, good, st.binary(max_size=n + 2), st.just(bytes(n)))


@st.composite
def spans(draw: st.DrawFn, clean: bool) -> Span:
    sp = Span(
        trace_id=draw(ids(16, clean)),
        span_id=draw(ids(8, clean)),
        name=draw(st.text(max_size=20)),
        kind=draw(st.integers(-2, 8) if not clean else st.integers(0, 5)),
        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
    )
    parent = draw(st.one_of(st.just(b""), ids(8, clean), st.just(bytes(8))))
    sp.parent_span_id = parent
    sp.attributes.extend(draw(attributes(clean)))
    if draw(st.booleans()):
        sp.status.code = draw(st.integers(-1, 4) if not clean else st.integers(0, 2))
        sp.status.message = draw(st.text(max_size=10))
    for _ in range(draw(st.integers(0, 3))):
        ev = sp.events.add()
        ev.name = draw(
            st.one_of(st.sampled_from(sorted(k.FIRST_TOKEN_EVENTS)), st.text(max_size=8))
        )
        ev.time_unix_nano = draw(st.integers(0, 2**64 - 1))
        ev.attributes.extend(draw(attributes(clean)))
    for _ in range(draw(st.integers(0, 2))):
        ln = sp.links.add()
        ln.trace_id = draw(st.binary(max_size=17))
        ln.span_id = draw(st.binary(max_size=9))
        ln.trace_state = draw(st.text(max_size=8))
        ln.attributes.extend(draw(attributes(clean)))
    return sp


@st.composite
def requests(draw: st.DrawFn, clean: bool) -> bytes:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 3))):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(draw(attributes(clean)))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            if draw(st.booleans()):
                ss.scope.name = draw(st.text(max_size=10))
                ss.scope.version = draw(st.text(max_size=5))
            if not clean and draw(st.integers(0, 9)) == 0:
                ss.scope.attributes.add(key="scope.attr", value=AnyValue(int_value=1))
            for sp in draw(st.lists(spans(clean), max_size=4)):
                if not clean and draw(st.integers(0, 9)) == 0:  # an unknown field in a span
                    raw = sp.SerializeToString() + b"\xb8\x06\x01"  # field 103, varint 1
                    sp = Span()
                    sp.ParseFromString(raw)
                ss.spans.append(sp)
    body = req.SerializeToString()
    if not clean and draw(st.integers(0, 9)) == 0:
        body += b"\x10\x05"  # an unknown top-level field
    return body


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests(clean=False), st.sampled_from(LIMITS))
def test_generated_requests_decode_identically(body: bytes, limit: int) -> None:
    check(body, limit)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests(clean=True), st.sampled_from(LIMITS))
def test_well_formed_requests_are_decoded_natively(body: bytes, limit: int) -> None:
    """Unique keys, valid ids, finite doubles, known fields: the native decoder's own ground."""
    decoded = check(body, limit)
    assert decoded is not None and not decoded.deferred


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([b for _, b in FIXTURES]), st.data())
def test_mutated_bodies_decode_identically(body: bytes, data: st.DataObject) -> None:
    """Byte flips, cuts and insertions: hostile versions of real bodies."""
    out = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del out[pos : pos + data.draw(st.integers(1, 64))]
        else:
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    check(bytes(out))


# -- hostile bytes, each on purpose -------------------------------------------------------


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _nested_arrays(depth: int) -> bytes:
    value = AnyValue(int_value=1).SerializeToString()
    for _ in range(depth):
        value = _ld(5, _ld(1, value))  # AnyValue{array_value{values: [value]}}
    kv = _ld(1, b"deep") + _ld(2, value)
    span = _ld(1, bytes(range(1, 17))) + _ld(2, bytes(range(1, 9))) + _ld(9, kv)
    return _ld(1, _ld(2, _ld(2, span)))


GOOD = make_request(2, seed=3).SerializeToString()
IDS = _ld(1, bytes(range(1, 17))) + _ld(2, bytes(range(1, 9)))


def _in_span(fields: bytes) -> bytes:
    return _ld(1, _ld(2, _ld(2, IDS + fields)))


def _in_scope(fields: bytes) -> bytes:
    return _ld(1, _ld(2, _ld(1, fields) + _ld(2, IDS)))


# A singular string field twice: the last one is kept, but upb checks the UTF-8 of each, so an
# invalid earlier copy fails the request (the 100k-case fuzz run found the native decoder
# accepting these). Each with a valid earlier copy too, which both decoders must accept.
SINGULAR_TWICE = {
    "span name": lambda first: _in_span(_ld(5, first) + _ld(5, b"ok")),
    "status message": lambda first: _in_span(_ld(15, _ld(2, first) + _ld(2, b"ok"))),
    "event name": lambda first: _in_span(_ld(11, _ld(2, first) + _ld(2, b"ok"))),
    "link trace_state": lambda first: _in_span(_ld(13, IDS + _ld(3, first) + _ld(3, b"ok"))),
    "attribute key": lambda first: _in_span(_ld(9, _ld(1, first) + _ld(1, b"k") + _ld(2, b""))),
    "any value member (a string, then an int)": lambda first: _in_span(
        _ld(9, _ld(1, b"k") + _ld(2, _ld(1, first) + b"\x18\x01"))
    ),
    "scope name": lambda first: _in_scope(_ld(1, first) + _ld(1, b"s")),
    "scope version": lambda first: _in_scope(_ld(2, first) + _ld(2, b"1")),
}

HOSTILE = {
    **{f"{k} twice, invalid UTF-8 first": f(b"\xff\xfe") for k, f in SINGULAR_TWICE.items()},
    **{f"{k} twice, both valid": f(b"first") for k, f in SINGULAR_TWICE.items()},
    "empty": b"",
    "garbage": b"\xde\xad\xbe\xef" * 8,
    "truncated": GOOD[: len(GOOD) // 2],
    "length past the end": b"\x0a\x10abc",
    "overlong varint": b"\x0a" + b"\xff" * 11,
    "ten byte length": b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    "wrong wire type (varint resource_spans)": b"\x08\x01",
    "group start": b"\x0b\x0c",
    "end group without start": b"\x0c",
    "field number zero": b"\x02\x00",
    "fixed32 cut short": b"\x0d\x01\x02",
    "trace_id as a varint": _ld(1, _ld(2, _ld(2, b"\x08\x01"))),
    "invalid UTF-8 name": _ld(1, _ld(2, _ld(2, _ld(1, bytes(16)) + _ld(5, b"\xff\xfe")))),
    "surrogate in a key": _ld(1, _ld(1, _ld(1, _ld(1, b"\xed\xa0\x80")))),
    "nested 15": _nested_arrays(15),
    "nested 16": _nested_arrays(16),
    "nested 17": _nested_arrays(17),
    "nested 200": _nested_arrays(200),
    "duplicate resource": _ld(1, _ld(1, b"") + _ld(1, b"")),
    "two values in one key": _ld(
        1, _ld(1, _ld(1, _ld(1, b"k") + _ld(2, b"\x18\x01") + _ld(2, b"\x10\x01")))
    ),
    "negative kind": _ld(
        1,
        _ld(
            2,
            _ld(
                2,
                _ld(1, bytes(range(1, 17)))
                + _ld(2, bytes(range(1, 9)))
                + b"\x30"
                + b"\xff" * 9
                + b"\x01",
            ),
        ),
    ),
    "fixed64 cut short": _ld(1, _ld(2, _ld(2, b"\x39\x01\x02"))),
    "huge declared string": _ld(1, b"\x0a" + _varint(1 << 40)),
    "every prefix of a good body": b"",  # expanded below
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bytes_get_the_same_answer(name: str) -> None:
    bodies = [GOOD[:i] for i in range(len(GOOD))] if name.startswith("every") else [HOSTILE[name]]
    for body in bodies:
        check(body)
        check(body, 0)


def test_nesting_limit_is_the_reference_one() -> None:
    ok, _ = run("native", HOSTILE["nested 15"], 1024)
    too_deep, _ = run("native", HOSTILE["nested 16"], 1024)
    assert ok[0] == "ok" and ok[2] == 1
    assert too_deep[:3] == ("error", "BadRequest", 400) and "nested deeper" in too_deep[3]


def test_truncation_counts_characters_not_bytes() -> None:
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add()
    sp.trace_id, sp.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    sp.attributes.add(key="s", value=AnyValue(string_value="é😀" * 10))  # 20 characters
    sp.attributes.add(key="b", value=AnyValue(bytes_value=bytes(100)))
    decoded = check(req.SerializeToString(), 7)
    assert decoded is not None and not decoded.deferred and decoded.truncated == 2
    assert decoded.table is not None
    assert decoded.table.column("attributes")[0].as_py() == (
        '{"s":"é😀é😀é😀é","b":"AAAAAAA="}'  # 7 characters; 7 * 3 // 4 = 5 bytes -> "AAAAAAA="
    )


def test_doubles_are_written_as_the_reference_writes_them() -> None:
    values = [0.0, -0.0, 1.0, 0.1, 1e16, 1e-5, -1.5e-5, 1e-7, 5e-324, 1.7976931348623157e308]
    values += [struct.unpack("<d", struct.pack("<Q", q))[0] for q in (1, 2**52, 2**62 + 12345)]
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add()
    sp.trace_id, sp.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    for i, v in enumerate(values):
        sp.attributes.add(key=f"d{i}", value=AnyValue(double_value=v))
    sp.attributes.add(key=k.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, value=AnyValue(double_value=0.25))
    decoded = check(req.SerializeToString())
    assert decoded is not None and not decoded.deferred
