"""Ingest benchmark: the real server under concurrent OTLP/HTTP clients vs the decode-only limit.

Measured in ONE run so the ratio is meaningful on a noisy machine:
  1. decode-only limit: parse + flatten to Arrow columns, no server, on one core, in a fresh
     interpreter prepared exactly like a decode worker (spans/s);
  2. the real ``prefixscope serve`` (subprocess, 127.0.0.1) driven by C client threads sending
     the reference workload (512-span requests, 15 attributes/span, bench/workload.py):
     spans/s acknowledged (a 200 means committed, hence queryable), request latency p50/p99,
     and ack-to-queryable lag measured by a probe that looks each acknowledged request's first
     span up through ``POST /api/v1/sql`` (when the API is present);
  3. server peak RSS, and the CPU used by the serving process and by its decode workers.

``--workers 0`` decodes in the serving process; ``--workers N`` in N decode worker processes
(the serving process then receives, commits and answers).

Each worker count runs ``--rounds`` times, alternating with decode-only measurements; a row
shows the median round (its ratio uses the decode-only limits measured right around it).

Usage:  .venv/bin/python bench/ingest.py [--workers 0 1 2] [--clients 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.workload import make_request  # noqa: E402
from prefixscope.collector.ingest import PROTOBUF, decode_body  # noqa: E402
from tests.serverproc import ServerProcess  # noqa: E402


def decode_only(payloads: list[bytes], seconds: float = 8.0) -> float:
    """spans/s of ``decode_body`` in a fresh interpreter set up like a decode worker."""
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as fh:
        for p in payloads:
            fh.write(len(p).to_bytes(8, "little") + p)
    out = subprocess.run(
        [sys.executable, __file__, "--decode-only-child", fh.name, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(fh.name)
    return float(out.split()[-1])


def _decode_only_child(path: str, seconds: float) -> None:
    from prefixscope.collector.decoding.worker import prepare_process

    data = Path(path).read_bytes()
    payloads, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 8], "little")
        payloads.append(data[i + 8 : i + 8 + n])
        i += 8 + n
    prepare_process()
    n = 0
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        d = decode_body(payloads[i % len(payloads)], PROTOBUF, None, 1 << 30, 32 * 1024)
        n += d.spans
        i += 1
    print(n / (time.perf_counter() - start))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_server(
    workers: int, payloads: list[bytes], clients: int, probe: bool, extra: list[str]
) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="ps-bench-"))
    args = ["--workers", str(workers), "--lake-roll-interval-s", "0", *extra]
    srv = ServerProcess(tmp / "data", args)
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
    assert srv.proc is not None
    workers_pids = children(srv.proc.pid)
    cpu0 = cpu_seconds(srv.proc.pid), sum(cpu_seconds(w) for w in workers_pids)
    me0 = cpu_seconds(os.getpid())
    start = time.perf_counter()
    if p:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu1 = cpu_seconds(srv.proc.pid), sum(cpu_seconds(w) for w in workers_pids)
    me1 = cpu_seconds(os.getpid())
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
        "cpu_server": (cpu1[0] - cpu0[0]) / wall,
        "cpu_workers": (cpu1[1] - cpu0[1]) / wall,
        "cpu_clients": (me1 - me0) / wall,
    }


first_trace_ids: list[bytes] = []


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--decode-only-child":
        _decode_only_child(sys.argv[2], float(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--spans", type=int, default=512)
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="server runs per worker count")
    ap.add_argument("--decode-seconds", type=float, default=5.0)
    ap.add_argument(
        "--server-args",
        default="",
        help="extra 'prefixscope serve' options for every server, e.g. '--commit-linger-ms 0'",
    )
    args = ap.parse_args()
    payloads = []
    for k in range(args.requests):
        req = make_request(args.spans, seed=k)
        first_trace_ids.append(req.resource_spans[0].scope_spans[0].spans[0].trace_id)
        payloads.append(req.SerializeToString())
    extra = shlex.split(args.server_args)
    # Rounds alternate decode-only and server runs: each server run is compared with the
    # decode-only limit measured right before and after it, and the median round is shown.
    limits = [decode_only(payloads[:20], args.decode_seconds)]
    rounds: dict[int, list[tuple[float, dict[str, float]]]] = {w: [] for w in args.workers}
    for _ in range(args.rounds):
        for w in args.workers:
            r = run_server(w, payloads, args.clients, not args.no_probe, extra)
            assert r["stored"] == args.requests * args.spans, r
            limits.append(decode_only(payloads[:20], args.decode_seconds))
            rounds[w].append((r["spans_per_s"] / statistics.mean(limits[-2:]), r))
    print(
        f"decode-only limit (1 core, {len(limits)} measurements between the server runs): "
        f"median {statistics.median(limits):,.0f} spans/s, range {min(limits):,.0f}-"
        f"{max(limits):,.0f}"
    )
    print(
        f"{'workers':>7} {'spans/s':>10} {'% of decode':>11} {'(rounds)':>16} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'lag p99 ms':>10} {'RSS MB':>7} {'CPU srv':>7} {'CPU wrk':>7} "
        f"{'CPU cli':>7} {'errors':>6}"
    )
    for w, runs in rounds.items():
        runs.sort(key=lambda x: x[0])
        ratio, r = runs[len(runs) // 2]
        each = "/".join(f"{100 * q:.0f}" for q, _ in runs)
        print(
            f"{w:>7} {r['spans_per_s']:>10,.0f} {100 * ratio:>10.0f}% {each:>16} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['lag_p99_ms']:>10.1f} "
            f"{r['rss_mb']:>7.0f} {100 * r['cpu_server']:>6.0f}% {100 * r['cpu_workers']:>6.0f}% "
            f"{100 * r['cpu_clients']:>6.0f}% "
            f"{r['errors']:>6}"
        )
    print(f"CPU: % of one core, averaged over the run ({os.cpu_count()} cores here)")


if __name__ == "__main__":
    main()
