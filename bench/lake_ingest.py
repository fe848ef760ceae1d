"""Scale-out ingest benchmark: N stateless collectors (``serve --store lake``) into one lake.

For each N in ``--collectors`` (default 1 2 4): start N collector processes on 127.0.0.1
writing to one fresh local lake, drive them with C client threads (round-robin over the
collectors) sending the reference workload (512-span requests, bench/workload.py),
then stop them and count the spans in the lake with DuckDB. Reports spans/s acknowledged
(a 200 means the segment holding the span is published) and request p50/p99.

Usage:  .venv/bin/python bench/lake_ingest.py [--collectors 1 2 4] [--clients 8] [--requests 240]
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

import duckdb  # noqa: E402

from bench.workload import make_payloads  # noqa: E402
from tests.support.serverproc import ServerProcess  # noqa: E402

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def run(n_collectors: int, payloads: list[bytes], clients: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="ps-lakebench-"))
    lake = tmp / "lake"
    servers = [
        ServerProcess(tmp / f"c{i}", ["--store", "lake", "--lake-path", str(lake)]).start()
        for i in range(n_collectors)
    ]
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    it = iter(range(len(payloads)))

    def client(k: int) -> None:
        nonlocal errors
        srv = servers[k % n_collectors]
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=120)
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                return
            t0 = time.perf_counter()
            conn.request("POST", "/v1/traces", payloads[i], PROTOBUF)
            resp = conn.getresponse()
            resp.read()
            with lock:
                latencies.append(time.perf_counter() - t0)
                errors += resp.status != 200

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for s in servers:
        s.stop()
    rows = (
        duckdb.connect()
        .execute(
            "SELECT count(*) FROM read_parquet(?, hive_partitioning = true)",
            [str(lake / "spans" / "*" / "*.parquet")],
        )
        .fetchall()[0][0]
    )
    lat = sorted(latencies)
    return {
        "spans_per_s": rows / wall,
        "rows": rows,
        "errors": errors,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--collectors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=240)
    args = ap.parse_args()
    payloads = make_payloads(args.requests)
    print(f"{'collectors':>10} {'spans/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for n in args.collectors:
        r = run(n, payloads, args.clients)
        assert r["rows"] == args.requests * 512, r
        print(
            f"{n:>10} {r['spans_per_s']:>10,.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['errors']:>6.0f}"
        )


if __name__ == "__main__":
    main()
