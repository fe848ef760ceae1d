"""Decode-only benchmark: the compiled protobuf decoder vs the pure-Python reference.

Both decode the same OTLP protobuf requests through ``decode_body`` (bytes to the span
columns' Arrow table, normalized, limits applied), each in a fresh interpreter prepared
exactly like a decode worker (``prepare_process``), one core, nothing else running. Rounds
alternate the decoders; a round's ratio is native over the mean of the Python measurements
right before and after it, and the table shows every round and the median. For scale, the
same requests through upb's ``ParseFromString`` alone (the parser, no Python walk).

Measured in CPU seconds of the decoding process (``time.process_time``), so a busy machine
slows both sides alike; say the load average in any figure you quote (it is printed).

Usage:  .venv/bin/python bench/decode.py [--requests 20] [--spans 512] [--seconds 5] [--rounds 3]
        .venv/bin/python bench/decode.py --fixtures   # the golden fixtures instead
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import make_request  # noqa: E402

MODES = ("python", "native", "parse")


def write_payloads(payloads: list[bytes]) -> str:
    """A temporary file of length-prefixed request bodies (for a child interpreter)."""
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as fh:
        for p in payloads:
            fh.write(len(p).to_bytes(8, "little") + p)
    return fh.name


def read_payloads(path: str) -> list[bytes]:
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 8], "little")
        out.append(data[i + 8 : i + 8 + n])
        i += 8 + n
    return out


def measure(path: str, mode: str, seconds: float) -> float:
    """Spans per CPU second of ``mode`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", path, mode, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split()[-1])


def _child(path: str, mode: str, seconds: float) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from prefixscope.collector.decoding import PROTOBUF, decode_body, use_decoder
    from prefixscope.collector.decoding.worker import prepare_process

    payloads = read_payloads(path)
    if mode != "parse":
        running, why = use_decoder(mode)
        if running != mode:
            raise SystemExit(f"asked for the {mode} decoder, running {running}: {why}")
    prepare_process()
    n, i = 0, 0
    start = time.process_time()
    while time.process_time() - start < seconds:
        body = payloads[i % len(payloads)]
        if mode == "parse":
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            n += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        else:
            d = decode_body(body, PROTOBUF, None, 1 << 30, 32 * 1024)
            if d.deferred:
                raise SystemExit("the native decoder deferred a benchmark request")
            n += d.spans
        i += 1
    print(n / (time.process_time() - start))


def _fixtures() -> list[bytes]:
    """The golden fixtures (OTLP JSON, as protobuf) and the real clients' captures."""
    from tests.support.otlp import SOURCES, fixture_bytes, otlp_json_to_protobuf

    interop = ROOT / "tests" / "fixtures" / "otlp" / "interop"
    bodies = [otlp_json_to_protobuf(fixture_bytes(src)) for src in SOURCES]
    return bodies + [p.read_bytes() for p in sorted(interop.glob("*.traces.pb"))]


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--spans", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fixtures", action="store_true", help="decode tests/fixtures/otlp/")
    args = ap.parse_args()
    if args.fixtures:
        payloads = _fixtures()
        what = f"{len(payloads)} golden fixtures"
    else:
        payloads = [make_request(args.spans, seed=k).SerializeToString() for k in range(20)]
        payloads = payloads[: args.requests]
        what = f"{len(payloads)} reference requests of {args.spans} spans"
    path = write_payloads(payloads)
    try:
        print(f"{what}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
        python = [measure(path, "python", args.seconds)]
        native: list[float] = []
        ratios: list[float] = []
        for _ in range(args.rounds):
            native.append(measure(path, "native", args.seconds))
            python.append(measure(path, "python", args.seconds))
            ratios.append(native[-1] / statistics.mean(python[-2:]))
        parse = measure(path, "parse", args.seconds)
    finally:
        os.unlink(path)
    print(f"{'decoder':<28} {'spans per CPU s (median)':>24} {'range':>20}")
    for name, xs in (("python (reference)", python), ("native (compiled)", native)):
        rng = f"{min(xs):,.0f}-{max(xs):,.0f}"
        print(f"{name:<28} {statistics.median(xs):>24,.0f} {rng:>20}")
    print(f"{'upb ParseFromString only':<28} {parse:>24,.0f}")
    each = " / ".join(f"{r:.1f}" for r in ratios)
    print(f"native / python: median {statistics.median(ratios):.1f}x (rounds: {each})")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
