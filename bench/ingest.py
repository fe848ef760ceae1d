"""Ingest benchmark: the real server under concurrent OTLP/HTTP clients vs its two limits.

Measured in ONE run so the ratios are meaningful on a noisy machine:
  1. decode-only limit of each decoder (``--decoder``): bytes to the span columns' Arrow
     table, no server, on one core, in a fresh interpreter prepared exactly like a decode
     worker running that decoder (spans/s);
  2. insert-only limit: the writer's part alone, ``DuckDBSink.write`` into a fresh store with
     the server's default settings, of already-decoded groups of ``--clients`` requests (the
     largest group the writer can form when each client has one request in flight);
  3. the real ``prefixscope serve --decoder D`` (subprocess, 127.0.0.1) driven by client
     threads sending the reference workload (512-span requests, 15 attributes/span,
     bench/workload.py): spans/s acknowledged (a 200 means committed, hence queryable),
     request latency p50/p99, ack-to-queryable lag measured by a probe that looks each
     acknowledged request's first span up through ``POST /api/v1/sql``, and the mean group
     the writer committed;
  4. server peak RSS, and the CPU used by the serving process and by its decode workers.

``--workers 0`` decodes in the serving process; ``--workers N`` in N decode worker processes
(the serving process then receives, commits and answers).

Each (worker count, decoder) runs ``--rounds`` times; the limits are measured again after
every round. A row shows the median round; "% decode" compares it with the decoder's
decode-only limit and "% insert" with the insert-only limit measured around it; "native /
python" is the median over rounds of the two decoders' rates in the same round.

Usage:  .venv/bin/python bench/ingest.py [--workers 0 1 2] [--decoder python native]
                                         [--clients 8] [--rounds 3]
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

from bench.decode import read_payloads, write_payloads  # noqa: E402
from bench.workload import make_request  # noqa: E402
from prefixscope.collector.decoding import PROTOBUF, decode_body  # noqa: E402
from tests.support.serverproc import ServerProcess, metric_values  # noqa: E402


def _child(mode: str, payloads: list[bytes], *args: str) -> float:
    """Run this script's ``--<mode>-child`` in a fresh interpreter; its last word, a rate."""
    path = write_payloads(payloads)
    try:
        out = subprocess.run(
            [sys.executable, __file__, f"--{mode}-child", path, *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(path)
    return float(out.split()[-1])


def decode_only(payloads: list[bytes], seconds: float, decoder: str) -> float:
    """spans/s of ``decode_body`` in a fresh interpreter set up like a decode worker."""
    return _child("decode-only", payloads, str(seconds), decoder)


def insert_only(payloads: list[bytes], group_requests: int) -> float:
    """spans/s of the writer's ``DuckDBSink.write`` alone, groups of ``group_requests``."""
    return _child("insert-only", payloads, str(group_requests))


def _insert_only_child(path: str, group_requests: int) -> None:
    import pyarrow as pa

    from prefixscope.collector.decoding import use_decoder
    from prefixscope.collector.storage.sinks import DuckDBSink
    from prefixscope.collector.storage.store import Store
    from prefixscope.config import Settings, duration

    use_decoder("auto")  # the tables are the same either way; native gets there sooner
    payloads = read_payloads(path)
    tables = [decode_body(p, PROTOBUF, None, 1 << 30, 32 * 1024).table for p in payloads]
    groups = [
        pa.concat_tables(tables[i : i + group_requests])
        for i in range(0, len(tables), group_requests)
    ]
    defaults = Settings()
    with (
        tempfile.TemporaryDirectory(prefix="ps-insert-") as folder,
        Store(
            folder, checkpoint_wal_mb=defaults.checkpoint_wal_mb, memory_mb=defaults.store_memory_mb
        ) as store,
    ):
        window = duration(defaults.dedupe_window).total_seconds()
        sink = DuckDBSink(store, dedupe_window_s=window)
        sink.open()
        start = time.perf_counter()
        n = sum(sink.write(g, i + 1) for i, g in enumerate(groups))
        elapsed = time.perf_counter() - start
        sink.close()
    assert n == sum(t.num_rows for t in tables)
    print(n / elapsed)


def _decode_only_child(path: str, seconds: float, decoder: str) -> None:
    from prefixscope.collector.decoding import use_decoder
    from prefixscope.collector.decoding.worker import prepare_process

    payloads = read_payloads(path)
    assert use_decoder(decoder)[0] == decoder
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


def _commit_group_mean(srv: ServerProcess) -> float:
    """Mean spans per group commit so far, from the server's own histogram."""
    m = metric_values(srv)
    count = m.get(("prefixscope_commit_batch_spans_count", ()), 0.0)
    return m.get(("prefixscope_commit_batch_spans_sum", ()), 0.0) / count if count else float("nan")


def run_server(
    workers: int,
    decoder: str,
    payloads: list[bytes],
    clients: int,
    probe: bool,
    extra: list[str],
) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="ps-bench-"))
    args = ["--workers", str(workers), "--decoder", decoder, "--lake-roll-interval-s", "0", *extra]
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
    group = _commit_group_mean(srv)
    healthz = httpx.get(srv.base_url + "/healthz", timeout=10).json()
    assert healthz["decoder"] == decoder, healthz
    srv.stop()
    from tests.support.store import query_store

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
        "group": group,
        "cpu_server": (cpu1[0] - cpu0[0]) / wall,
        "cpu_workers": (cpu1[1] - cpu0[1]) / wall,
        "cpu_clients": (me1 - me0) / wall,
    }


first_trace_ids: list[bytes] = []


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--decode-only-child":
        _decode_only_child(sys.argv[2], float(sys.argv[3]), sys.argv[4])
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--insert-only-child":
        _insert_only_child(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--decoder", nargs="+", choices=["python", "native"], default=["python", "native"]
    )
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
    if "native" in args.decoder:
        from prefixscope.collector.decoding import native

        if native.UNAVAILABLE is not None:
            sys.exit(f"--decoder native: {native.UNAVAILABLE}")
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    payloads = []
    for k in range(args.requests):
        req = make_request(args.spans, seed=k)
        first_trace_ids.append(req.resource_spans[0].scope_spans[0].spans[0].trace_id)
        payloads.append(req.SerializeToString())
    extra = shlex.split(args.server_args)
    sample = payloads[:20]

    def measure_limits() -> None:
        for d in args.decoder:
            decode[d].append(decode_only(sample, args.decode_seconds, d))
        insert.append(insert_only(payloads, args.clients))

    # Rounds alternate limits and server runs: each server run is compared with the limits
    # measured right before and after its round, and the median round is shown.
    decode: dict[str, list[float]] = {d: [] for d in args.decoder}
    insert: list[float] = []
    measure_limits()
    keys = [(w, d) for w in args.workers for d in args.decoder]
    rounds: dict[tuple[int, str], list[dict[str, float]]] = {key: [] for key in keys}
    for _ in range(args.rounds):
        for w, d in keys:
            r = run_server(w, d, payloads, args.clients, not args.no_probe, extra)
            assert r["stored"] == args.requests * args.spans, r
            rounds[w, d].append(r)
        measure_limits()
        for w, d in keys:
            r = rounds[w, d][-1]
            r["of_decode"] = r["spans_per_s"] / statistics.mean(decode[d][-2:])
            r["of_insert"] = r["spans_per_s"] / statistics.mean(insert[-2:])
    print(f"limits ({len(insert)} measurements, between the rounds): median spans/s, range")
    for d, xs in decode.items():
        print(
            f"  decode-only, {d:6} (1 core)     {statistics.median(xs):>10,.0f}   "
            f"{min(xs):,.0f}-{max(xs):,.0f}"
        )
    print(
        f"  insert-only, groups of {args.clients} requests  {statistics.median(insert):>10,.0f}   "
        f"{min(insert):,.0f}-{max(insert):,.0f}"
    )
    print(
        f"{'workers':>7} {'decoder':>7} {'spans/s':>10} {'(rounds)':>20} {'% decode':>8} "
        f"{'% insert':>8} {'group':>6} {'p50 ms':>7} {'p99 ms':>7} {'lag p99':>7} "
        f"{'RSS MB':>6} {'CPU srv':>7} {'CPU wrk':>7} {'CPU cli':>7} {'errors':>6}"
    )
    for (w, d), runs in rounds.items():
        r = sorted(runs, key=lambda x: x["spans_per_s"])[len(runs) // 2]
        each = "/".join(f"{x['spans_per_s'] / 1000:.1f}k" for x in runs)
        print(
            f"{w:>7} {d:>7} {r['spans_per_s']:>10,.0f} {each:>20} "
            f"{100 * r['of_decode']:>7.0f}% {100 * r['of_insert']:>7.0f}% {r['group']:>6,.0f} "
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['lag_p99_ms']:>7.1f} "
            f"{r['rss_mb']:>6.0f} {100 * r['cpu_server']:>6.0f}% {100 * r['cpu_workers']:>6.0f}% "
            f"{100 * r['cpu_clients']:>6.0f}% {r['errors']:>6}"
        )
    if {"python", "native"} <= set(args.decoder):
        for w in args.workers:
            ratios = [
                n["spans_per_s"] / p["spans_per_s"]
                for n, p in zip(rounds[w, "native"], rounds[w, "python"], strict=True)
            ]
            each = " / ".join(f"{q:.2f}" for q in ratios)
            print(
                f"native / python end to end, --workers {w}: median "
                f"{statistics.median(ratios):.2f}x (rounds: {each})"
            )
    print(f"CPU: % of one core, averaged over the run; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
