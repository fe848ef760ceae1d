"""Hostile input: a mutation fuzz run over the OTLP protobuf and JSON decoders.

Cases are seeded with real requests of the reference workload and mutated: bit flips,
truncation, splicing, wrong JSON types, out-of-range integers, deep nesting, invalid UTF-8,
NaN/inf, huge strings and arrays, gzip bombs and broken gzip. Every case goes through
``prefixscope.collector.decoding.decode_body`` in process; what decodes is also committed through
the real DuckDB sink (a value that decodes but cannot be stored would poison a whole group
commit). A share of the cases is sent over HTTP to the real server. Finally slow-loris clients
send headers then dribble their bodies while a normal client must still be served.

A crash is any exception other than the taxonomy of ``prefixscope/errors.py``.

Usage:  .venv/bin/python bench/reliability/fuzz.py [--cases 100000] [--http-share 0.05]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import functools
import gzip
import http.client
import json
import random
import socket
import threading
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pyarrow as pa
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.reliability.common import (
    PROTOBUF,
    Report,
    ServerProcess,
    main_exit,
    percentile,
    scratch_dir,
    workload_request,
)
from prefixscope.collector.decoding import JSON, decode_body, running_decoder, use_decoder
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store
from prefixscope.errors import PrefixScopeError

MAX_DECOMPRESSED = 4 * 1024 * 1024
MAX_ATTR = 32 * 1024


@dataclass(slots=True)
class Case:
    kind: str
    body: bytes
    mtype: str
    encoding: str | None = None


# -- seeds -------------------------------------------------------------------------------------
def _otlp_json(req: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP JSON mapping (hex ids, as the spec wants, not protobuf's base64)."""
    doc = MessageToDict(req)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
    return doc


@dataclass(slots=True)
class Seeds:
    pb: list[bytes] = field(default_factory=list)
    docs: list[dict[str, Any]] = field(default_factory=list)
    js: list[bytes] = field(default_factory=list)
    paths: list[list[tuple[Any, ...]]] = field(default_factory=list)

    @classmethod
    def build(cls, n: int = 24) -> Seeds:
        s = cls()
        for k in range(n):
            req = workload_request(1 + k % 16, seed=10_000 + k)
            s.pb.append(req.SerializeToString())
            doc = _otlp_json(req)
            s.docs.append(doc)
            s.paths.append(_paths(doc))
            s.js.append(json.dumps(doc).encode())
        return s


# -- mutators ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=512)
def _request_bytes(n_spans: int, seed: int) -> bytes:
    return workload_request(n_spans, seed).SerializeToString()


def _fresh(n_spans: int, seed: int) -> ExportTraceServiceRequest:
    """A new (mutable) copy of a cached workload request."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(_request_bytes(n_spans, seed))
    return req


def _flip(rng: random.Random, b: bytes) -> bytes:
    out = bytearray(b)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(rng: random.Random, b: bytes) -> bytes:
    return b[: rng.randrange(len(b))]


def _splice(rng: random.Random, a: bytes, b: bytes) -> bytes:
    return a[: rng.randrange(len(a) + 1)] + b[rng.randrange(len(b) + 1) :]


def _insert(rng: random.Random, b: bytes) -> bytes:
    i = rng.randrange(len(b) + 1)
    junk = rng.choice(
        [rng.randbytes(rng.randint(1, 32)), b"\xff" * 10, b"\x00" * 10, b[i : i + 64]]
    )
    return b[:i] + junk + b[i:]


_WRONG: list[Any] = [
    None, True, False, 0, -1, 1.5, -0.0, 2**63, 2**64, -(2**63) - 1, 10**30, "9" * 40,
    "-" + "9" * 40, "NaN", "Infinity", "-Infinity", 1e308, "", "x", "zz" * 16, "00" * 16,
    [], {}, [1, 2], {"a": 1}, {"stringValue": 1}, {"intValue": "1e3"}, {"doubleValue": "NaN"},
    {"arrayValue": {"values": [None, {}, {"kvlistValue": {"values": [{"key": 1}]}}]}},
    {"bytesValue": "!!!"}, {"bytesValue": "AAAA"}, "\u0000", "\ud7ff\ue000", "é" * 10,
]  # fmt: skip


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return obj


def _wrong_type(rng: random.Random, doc: dict[str, Any], paths: list[tuple[Any, ...]]) -> bytes:
    doc = json.loads(json.dumps(doc))
    for _ in range(rng.randint(1, 3)):
        # a path may have vanished under an earlier replacement
        with contextlib.suppress(KeyError, IndexError, TypeError):
            # a copy: the same list or dict set twice, one inside the other, is a cycle
            doc = _set(doc, rng.choice(paths), copy.deepcopy(rng.choice(_WRONG)))
    return json.dumps(doc, allow_nan=True).encode()


def _span_doc(attrs: list[Any], **extra: Any) -> bytes:
    span = {
        "traceId": "ab" * 16, "spanId": "cd" * 8, "name": "fuzz",
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000",
        "attributes": attrs, **extra,
    }  # fmt: skip
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def _deep_json(rng: random.Random) -> bytes:
    depth = rng.choice([15, 16, 17, 100, 1000, 5000])
    if rng.random() < 0.5:  # built as text: json.dumps itself recurses
        head = '{"kvlistValue": {"values": [{"key": "k", "value": ' * depth
        tail = "}]}}" * depth
        deep = head + '{"stringValue": "leaf"}' + tail
        return _span_doc([{"key": "x", "value": {}}]).replace(
            b'{"key": "x", "value": {}}', f'{{"key": "deep", "value": {deep}}}'.encode()
        )
    return b"[" * depth + b"]" * depth


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field_no: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (built by hand: the library refuses deep messages)."""
    return _varint(field_no << 3 | 2) + _varint(len(payload)) + payload


def _deep_pb(rng: random.Random) -> bytes:
    """A span whose attribute is an AnyValue nested ``depth`` arrays deep."""
    depth = rng.choice([15, 16, 17, 60, 99, 101, 500, 5000])
    value = _ld(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        value = _ld(5, _ld(1, value))  # AnyValue.array_value(ArrayValue.values[0])
    req = _fresh(1, rng.randrange(100))
    span = req.resource_spans[0].scope_spans[0].spans[0].SerializeToString()
    span += _ld(9, _ld(1, b"deep") + _ld(2, value))  # Span.attributes += KeyValue
    return _ld(1, _ld(2, _ld(2, span)))  # request.resource_spans.scope_spans.spans


def _bad_utf8(rng: random.Random, seeds: Seeds) -> Case:
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"])
    if rng.random() < 0.5:
        req = _fresh(2, rng.randrange(100))
        req.resource_spans[0].scope_spans[0].spans[0].name = "MARKERMARKER"
        return Case(
            "invalid_utf8_pb", req.SerializeToString().replace(b"MARKERMARKER", bad * 12), PROTOBUF
        )
    body = _span_doc([{"key": "k", "value": {"stringValue": "MARKER"}}])
    return Case("invalid_utf8_json", body.replace(b"MARKER", bad * 6), JSON)


def _nan_inf(rng: random.Random) -> Case:
    if rng.random() < 0.5:
        v = rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "nan", "inf"])
        raw = f'{{"key": "d", "value": {{"doubleValue": {v}}}}}'.encode()
        quoted = f'{{"key": "d", "value": {{"doubleValue": "{v}"}}}}'.encode()
        body = _span_doc([{"key": "x", "value": {}}]).replace(
            b'{"key": "x", "value": {}}', rng.choice([raw, quoted])
        )
        return Case("nan_inf_json", body, JSON)
    req = _fresh(2, rng.randrange(100))
    kv = req.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    kv.key = rng.choice(["d", "gen_ai.response.time_to_first_chunk", "llm.token_count.prompt"])
    kv.value.double_value = rng.choice([float("nan"), float("inf"), float("-inf"), 1e308, -0.0])
    return Case("nan_inf_pb", req.SerializeToString(), PROTOBUF)


def _huge(rng: random.Random) -> Case:
    n = rng.choice([MAX_ATTR + 1, 200_000, 1_000_000])
    if rng.random() < 0.5:
        req = _fresh(1, rng.randrange(100))
        kv = req.resource_spans[0].scope_spans[0].spans[0].attributes.add()
        if rng.random() < 0.5:
            kv.key, kv.value.string_value = "big", "x" * n
        else:
            kv.key = "arr"
            kv.value.array_value.values.extend(
                [type(kv.value)(int_value=i) for i in range(n // 20)]
            )
        return Case("huge_pb", req.SerializeToString(), PROTOBUF)
    if rng.random() < 0.5:
        return Case(
            "huge_json", _span_doc([{"key": "big", "value": {"stringValue": "y" * n}}]), JSON
        )
    values = [{"intValue": str(i)} for i in range(n // 40)]
    return Case(
        "huge_json", _span_doc([{"key": "arr", "value": {"arrayValue": {"values": values}}}]), JSON
    )


_BOMBS: dict[int, bytes] = {}


def _bomb(size: int) -> bytes:
    if size not in _BOMBS:
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = b"\0" * (1 << 20)
        parts = [c.compress(zeros) for _ in range(size >> 20)]
        _BOMBS[size] = b"".join(parts) + c.flush()
    return _BOMBS[size]


def _gzip_case(rng: random.Random, seeds: Seeds) -> Case:
    body = rng.choice(seeds.pb)
    r = rng.random()
    if r < 0.25:
        return Case("gzip_bomb", _bomb(rng.choice([8, 64, 256]) << 20), PROTOBUF, "gzip")
    if r < 0.4:
        one = gzip.compress(body)
        return Case("gzip_members", one * rng.randint(2, 40), PROTOBUF, "gzip")
    if r < 0.6:
        return Case("gzip_truncated", _truncate(rng, gzip.compress(body)), PROTOBUF, "gzip")
    if r < 0.8:
        return Case("gzip_flipped", _flip(rng, gzip.compress(body)), PROTOBUF, "gzip")
    return Case("gzip_trailing", gzip.compress(body) + rng.randbytes(16), PROTOBUF, "gzip")


def _int_edges(rng: random.Random) -> Case:
    v = rng.choice([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**20, 10**40])
    as_str = rng.random() < 0.5
    val = str(v) if as_str else v
    where = rng.choice(["start", "end", "attr", "token"])
    if where in ("start", "end"):
        key = "startTimeUnixNano" if where == "start" else "endTimeUnixNano"
        body = _span_doc([], **{key: val})
    else:
        key = "gen_ai.usage.input_tokens" if where == "token" else "n"
        body = _span_doc([{"key": key, "value": {"intValue": val}}])
    return Case(f"int_edge_{where}", body, JSON)


def make_case(rng: random.Random, seeds: Seeds) -> Case:
    """One hostile case; the mix favours cheap mutations, with a tail of expensive ones."""
    r = rng.random()
    pb = rng.choice(seeds.pb)
    js = rng.choice(seeds.js)
    if r < 0.16:
        return Case("pb_bitflip", _flip(rng, pb), PROTOBUF)
    if r < 0.24:
        return Case("pb_truncate", _truncate(rng, pb), PROTOBUF)
    if r < 0.30:
        return Case("pb_splice", _splice(rng, pb, rng.choice(seeds.pb)), PROTOBUF)
    if r < 0.36:
        return Case("pb_insert", _insert(rng, pb), PROTOBUF)
    if r < 0.38:
        return Case(
            "random_bytes", rng.randbytes(rng.randint(0, 2048)), rng.choice([PROTOBUF, JSON])
        )
    if r < 0.48:
        return Case("json_bitflip", _flip(rng, js), JSON)
    if r < 0.53:
        return Case("json_truncate", _truncate(rng, js), JSON)
    if r < 0.57:
        return Case("json_splice", _splice(rng, js, rng.choice(seeds.js)), JSON)
    if r < 0.77:
        k = rng.randrange(len(seeds.docs))
        return Case("json_wrong_type", _wrong_type(rng, seeds.docs[k], seeds.paths[k]), JSON)
    if r < 0.83:
        return _int_edges(rng)
    if r < 0.86:
        return _bad_utf8(rng, seeds)
    if r < 0.90:
        return _nan_inf(rng)
    if r < 0.92:
        return Case("deep_json", _deep_json(rng), JSON)
    if r < 0.94:
        return Case("deep_pb", _deep_pb(rng), PROTOBUF)
    if r < 0.97:
        return _gzip_case(rng, seeds)
    if r < 0.985:
        return _huge(rng)
    return Case("seed", pb if rng.random() < 0.5 else js, PROTOBUF if pb else JSON)


# -- in-process run --------------------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    cases: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    examples: dict[str, Case] = field(default_factory=dict)
    committed: int = 0
    #: protobuf cases the native decoder answered differently from the reference
    mismatches: Counter[str] = field(default_factory=Counter)
    compared: int = 0

    def crash(self, exc: BaseException, case: Case, *, where: str) -> None:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        sig = f"{where}: {type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno} ({case.kind})"  # noqa: E501
        self.crashes[sig] += 1
        self.examples.setdefault(sig, case)


def classify(case: Case) -> tuple[str, pa.Table | None]:
    """('decoded' | 'decoded_empty' | 'refused:<kind>', table) or raises (a crash)."""
    try:
        d = decode_body(case.body, case.mtype, case.encoding, MAX_DECOMPRESSED, MAX_ATTR)
    except PrefixScopeError as err:
        return f"refused:{err.kind}", None
    return ("decoded" if d.spans else "decoded_empty"), d.table


def classify_reference(case: Case) -> tuple[str, pa.Table | None]:
    """``classify`` with the pure-Python decoder, whichever one this process runs."""
    running = running_decoder()
    use_decoder("python")
    try:
        return classify(case)
    finally:
        use_decoder(running)


def _same(a: tuple[str, pa.Table | None], b: tuple[str, pa.Table | None]) -> bool:
    if a[0] != b[0]:
        return False
    if a[1] is None or b[1] is None:
        return a[1] is None and b[1] is None
    return a[1].schema == b[1].schema and a[1].equals(b[1])


class CommitCheck:
    """Commits what decoded through the real DuckDB sink, in groups like the group commit;
    a failing group is bisected to the cases that cannot be stored."""

    def __init__(self, workdir: Path, group: int = 64) -> None:
        self.store = Store(workdir)
        self.sink = DuckDBSink(self.store)
        self.sink.open()
        self.group = group
        self.pending: list[tuple[Case, pa.Table]] = []
        self.batch_no = 0
        self.committed = 0

    def add(self, case: Case, table: pa.Table, out: Outcome) -> None:
        self.pending.append((case, table))
        if len(self.pending) >= self.group:
            self.flush(out)

    def flush(self, out: Outcome) -> None:
        self._write(self.pending, out)
        self.pending = []

    def _write(self, items: list[tuple[Case, pa.Table]], out: Outcome) -> None:
        if not items:
            return
        self.batch_no += 1
        try:
            self.sink.write(pa.concat_tables([t for _, t in items]), self.batch_no)
            self.committed += len(items)
        except Exception as exc:
            if len(items) == 1:
                out.crash(exc, items[0][0], where="commit")
                return
            half = len(items) // 2
            self._write(items[:half], out)
            self._write(items[half:], out)

    def close(self) -> None:
        self.sink.close()
        self.store.close()


def fuzz_in_process(
    cases: int, seed: int, workdir: Path, on_case: Callable[[Case], None] | None = None
) -> Outcome:
    rng = random.Random(seed)
    seeds = Seeds.build()
    check = CommitCheck(workdir / "inproc")
    out = Outcome()
    try:
        for _ in range(cases):
            case = make_case(rng, seeds)
            out.cases += 1
            out.by_kind[case.kind] += 1
            try:
                result, table = classify(case)
            except Exception as exc:  # a crash: outside the error taxonomy
                out.crash(exc, case, where="decode")
            else:
                out.results[result] += 1
                if table is not None:
                    check.add(case, table, out)
                if case.mtype == PROTOBUF and running_decoder() == "native":
                    out.compared += 1  # differential: the reference must answer the same
                    try:
                        reference = classify_reference(case)
                    except Exception as exc:
                        out.crash(exc, case, where="reference decode")
                    else:
                        if not _same((result, table), reference):
                            out.mismatches[case.kind] += 1
                            out.examples.setdefault(f"mismatch {case.kind}", case)
            if on_case is not None:
                on_case(case)
        check.flush(out)
        out.committed = check.committed
    finally:
        check.close()
    return out


# -- over HTTP -------------------------------------------------------------------------------
class HttpShare:
    """Sends a share of the cases to the real server from a few threads; counts statuses."""

    def __init__(self, srv: ServerProcess, share: float, seed: int) -> None:
        self.srv = srv
        self.share = share
        self.rng = random.Random(seed ^ 0x5EED)
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.five_xx: list[str] = []
        self.pool = ThreadPoolExecutor(max_workers=4)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.sent = 0

    def maybe_send(self, case: Case) -> None:
        if self.rng.random() < self.share:
            self.sent += 1
            self.pool.submit(self._send, case)

    def _send(self, case: Case) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        headers = {"Content-Type": case.mtype}
        if case.encoding:
            headers["Content-Encoding"] = case.encoding
        for attempt in range(2):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.srv.http_port, timeout=60)
                conn.request("POST", "/v1/traces", case.body, headers)
                resp = conn.getresponse()
                resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn = None
                if attempt:
                    with self._lock:
                        self.errors[type(exc).__name__] += 1
                    self._local.conn = None
                    return
        self._local.conn = conn
        with self._lock:
            self.statuses[resp.status] += 1
            if resp.status >= 500:
                self.five_xx.append(case.kind)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# -- slow loris ------------------------------------------------------------------------------
def slow_loris(srv: ServerProcess, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` connections send headers then one body byte per second; meanwhile one
    normal client sends valid requests. Returns its success count and latency."""
    body = workload_request(64, seed=424242).SerializeToString()
    socks: list[socket.socket] = []
    stop = threading.Event()

    def dribble() -> None:
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=5)
            s.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            socks.append(s)
        sent = 0
        while not stop.wait(1.0) and sent < len(body):
            for s in list(socks):
                try:
                    s.send(body[sent : sent + 1])
                except OSError:
                    socks.remove(s)
            sent += 1

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    time.sleep(1.0)
    lat: list[float] = []
    codes: Counter[int] = Counter()
    failures = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
            conn.request("POST", "/v1/traces", body, {"Content-Type": PROTOBUF})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            codes[resp.status] += 1
            if resp.status == 200:
                lat.append(time.monotonic() - t0)
        except (OSError, http.client.HTTPException):
            failures += 1
        time.sleep(0.2)
    stop.set()
    t.join(10)
    for s in socks:
        s.close()
    total = sum(codes.values()) + failures
    return {
        "slow_clients": clients,
        "normal_requests": total,
        "normal_served_200": codes.get(200, 0),
        "normal_p99_s": percentile(lat, 99),
        "normal_statuses": dict(codes),
    }


def run(
    *,
    cases: int = 100_000,
    http_share: float = 0.05,
    seed: int = 7,
    loris_clients: int = 16,
    loris_s: float = 10.0,
    decoder: str = "auto",
) -> Report:
    """``decoder``: the protobuf decoder of the in-process cases and of the server (auto:
    native when built). With the native one, every protobuf case is also decoded by the
    Python reference and must get the same answer (a differential fuzz)."""
    rep = Report("fuzz")
    work = scratch_dir("fuzz")
    running, _ = use_decoder(decoder)
    srv = ServerProcess(work / "data", ["--lake-roll-interval-s", "0", "--decoder", running,
                                        "--max-decompressed-bytes", str(64 << 20)])  # fmt: skip
    srv.start()
    try:
        share = HttpShare(srv, http_share, seed)
        t0 = time.monotonic()
        out = fuzz_in_process(cases, seed, work, share.maybe_send)
        share.close()
        elapsed = time.monotonic() - t0
        alive = srv.proc is not None and srv.proc.poll() is None
        loris = slow_loris(srv, loris_clients, loris_s) if loris_clients else None
        healthy = alive and _healthz(srv)
    finally:
        srv.stop() if srv.proc and srv.proc.poll() is None else None
    n_crash = sum(out.crashes.values())
    n5xx = sum(v for k, v in share.statuses.items() if k >= 500)
    rep.add("protobuf decoder", running)
    rep.add("cases (in process)", out.cases, f">= {cases:,}", out.cases >= cases)
    if running == "native":
        n_diff = sum(out.mismatches.values())
        rep.add("protobuf cases also decoded by the Python reference", out.compared, "> 0",
                out.compared > 0)  # fmt: skip
        rep.add("answers differing from the reference", n_diff, "0", n_diff == 0)
    rep.add("crashes (exceptions outside the taxonomy)", n_crash, "0", n_crash == 0)
    rep.add("cases sent over HTTP", sum(share.statuses.values()))
    rep.add("HTTP 5xx", n5xx, "0", n5xx == 0)
    rep.add("HTTP transport errors (reset, timeout)", sum(share.errors.values()), "0",
            not share.errors)  # fmt: skip
    rep.add("server alive and healthy after the run", "yes" if healthy else "no", "yes", healthy)
    if loris is not None:
        served = loris["normal_served_200"] == loris["normal_requests"] > 0
        rep.add(f"slow-loris ({loris_clients} clients): normal requests served",
                f"{loris['normal_served_200']:.0f}/{loris['normal_requests']:.0f}",
                "all", served)  # fmt: skip
        rep.add("slow-loris: normal request p99 (s)", round(loris["normal_p99_s"], 3))
        if not served:
            rep.notes.append(f"slow-loris: normal client statuses {loris['normal_statuses']}")
    rep.add("decoded cases committed through the DuckDB sink", out.committed)
    rep.add("cases/s (in process)", out.cases / elapsed)
    rep.notes.append("outcomes: " + ", ".join(f"{k}={v}" for k, v in out.results.most_common()))
    rep.notes.append(
        "HTTP statuses: " + ", ".join(f"{k}={v}" for k, v in sorted(share.statuses.items()))
    )
    for kind, count in out.mismatches.most_common():
        path = work / f"mismatch-{kind}.bin"
        path.write_bytes(out.examples[f"mismatch {kind}"].body)
        rep.notes.append(f"MISMATCH x{count}: {kind}; example body {path}")
    for sig, count in out.crashes.most_common():
        ex = out.examples[sig]
        path = work / f"crash-{len(rep.notes)}.bin"
        path.write_bytes(ex.body)
        rep.notes.append(f"CRASH x{count}: {sig}; example body {path} ({ex.mtype}, {ex.encoding})")
    if share.five_xx:
        rep.notes.append(f"5xx case kinds: {Counter(share.five_xx).most_common()}")
    return rep


def _healthz(srv: ServerProcess) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=5)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument(
        "--http-share", type=float, default=0.05, help="share of cases also sent over HTTP"
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--loris-clients", type=int, default=16, help="slow-loris connections (0: skip)"
    )
    ap.add_argument("--loris-s", type=float, default=10.0, help="seconds of slow-loris")
    ap.add_argument(
        "--decoder",
        choices=["auto", "native", "python"],
        default="auto",
        help="protobuf decoder (native: also compared with the Python reference, case by case)",
    )
    a = ap.parse_args(argv)
    return main_exit(run(**vars(a)))


if __name__ == "__main__":
    main()
