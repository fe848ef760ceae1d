"""Ingest benchmark: the real server under concurrent OTLP/HTTP clients vs the decode-only limit.

Measured in ONE run so the ratio is meaningful on a noisy machine:
  1. decode-only limit: parse + flatten to Arrow columns in this process, no server (spans/s);
  2. the real ``prefixscope serve`` (subprocess, 127.0.0.1) driven by C client threads sending
     the reference workload (512-span requests, 15 attributes/span, ../shared/bench/workload.py):
     spans/s acknowledged (a 200 means committed, hence queryable), request latency p50/p99,
     and ack-to-queryable lag measured by a probe that looks each acknowledged request's first
     span up through ``POST /api/v1/sql`` (when the API is present);
  3. server peak RSS.

Usage:  .venv/bin/python bench/ingest.py [--workers 1 2] [--clients 4] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for cand in (ROOT.parent / "shared" / "bench", ROOT / "shared" / "bench"):
    if cand.exists():
        sys.path.insert(0, str(cand))

import httpx  # noqa: E402
from prefixscope.collector.ingest import PROTOBUF, decode_body  # noqa: E402
from workload import make_request  # noqa: E402

from tests.serverproc import ServerProcess  # noqa: E402


def decode_only(payloads: list[bytes], seconds: float = 8.0) -> float:
    n = 0
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        d = decode_body(payloads[i % len(payloads)], PROTOBUF, None, 1 << 30, 32 * 1024)
        n += d.spans
        i += 1
    return n / (time.perf_counter() - start)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_server(workers: int, payloads: list[bytes], clients: int, probe: bool) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="ps-bench-"))
    srv = ServerProcess(tmp / "data", ["--workers", str(workers), "--lake-roll-interval-s", "0"])
    srv.start()
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    lock = threading.Lock()
    next_i = iter(range(len(payloads)))
    acked: list[tuple[float, str]] = []
    acked_cv = threading.Condition()
    done = threading.Event()

    def client() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=120)
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                return
            body = payloads[i]
            t0 = time.perf_counter()
            conn.request("POST", "/v1/traces", body, {"Content-Type": PROTOBUF})
            resp = conn.getresponse()
            resp.read()
            t1 = time.perf_counter()
            with lock:
                latencies.append(t1 - t0)
                if resp.status != 200:
                    errors += 1
            if resp.status == 200 and probe and i % 10 == 0:
                tid = bytes(first_trace_ids[i]).hex()
                with acked_cv:
                    acked.append((time.monotonic(), tid))
                    acked_cv.notify()

    def prober() -> None:
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            while not (done.is_set() and not acked):
                with acked_cv:
                    while not acked and not done.is_set():
                        acked_cv.wait(0.1)
                    if not acked:
                        continue
                    t_ack, tid = acked.pop(0)
                while True:
                    r = c.post(
                        "/api/v1/sql",
                        json={"sql": f"SELECT count(*) FROM spans WHERE trace_id = '{tid}'"},
                    )
                    if r.status_code != 200:
                        return
                    if r.json()["rows"][0][0] > 0:
                        lags.append(time.monotonic() - t_ack)
                        break
                    time.sleep(0.005)

    has_api = httpx.post(srv.base_url + "/api/v1/sql", json={"sql": "SELECT 1"}).status_code == 200
    probe = probe and has_api
    threads = [threading.Thread(target=client) for _ in range(clients)]
    p = threading.Thread(target=prober) if probe else None
    start = time.perf_counter()
    if p:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    done.set()
    if p:
        p.join()
    peak = rss_mb(srv.proc.pid) if srv.proc else float("nan")
    srv.stop()
    from tests.conftest import query_store

    stored = query_store(srv.data_dir, "SELECT count(*) FROM spans")[0][0]
    lat = sorted(latencies)
    return {
        "spans_per_s": stored / wall,
        "stored": stored,
        "errors": errors,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1000,
        "lag_p99_ms": (sorted(lags)[int(0.99 * (len(lags) - 1))] * 1000) if lags else float("nan"),
        "rss_mb": peak,
    }


first_trace_ids: list[bytes] = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--spans", type=int, default=512)
    ap.add_argument("--no-probe", action="store_true")
    args = ap.parse_args()
    reqs = [make_request(args.spans, seed=k) for k in range(args.requests)]
    first_trace_ids.extend(r.resource_spans[0].scope_spans[0].spans[0].trace_id for r in reqs)
    payloads = [r.SerializeToString() for r in reqs]
    limit = decode_only(payloads[:20])
    print(f"decode-only limit (1 core, this run): {limit:,.0f} spans/s")
    print(
        f"{'workers':>7} {'spans/s':>10} {'% of decode':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'lag p99 ms':>10} {'RSS MB':>7} {'errors':>6}"
    )
    for w in args.workers:
        r = run_server(w, payloads, args.clients, not args.no_probe)
        assert r["stored"] == args.requests * args.spans - 0, r
        print(
            f"{w:>7} {r['spans_per_s']:>10,.0f} {100 * r['spans_per_s'] / limit:>10.0f}% "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['lag_p99_ms']:>10.1f} "
            f"{r['rss_mb']:>7.0f} {r['errors']:>6}"
        )


if __name__ == "__main__":
    main()
