"""Annotation writes on a lake collector: scores/s in batches of 1,000, 200 after publication.

Starts one ``serve --store lake`` collector (and, for reference in the same run, one embedded
server) on 127.0.0.1, drives each with C client threads posting ``POST /api/v1/scores`` bodies
of ``--batch`` scores (distinct ids, JSON as an evaluator job sends them, bodies built before
the clock starts) for ``--seconds``, and reports scores/s acknowledged and request p50/p99.
At the end every acknowledged id is looked up in the lake's published segments (a 200 means
published), and the embedded server's count is read back through its SQL API.

Goal (issue 34): at least 20,000 scores/s on the lake collector.

Usage:  .venv/bin/python bench/lake_annotations.py [--clients 4] [--batch 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import httpx  # noqa: E402

from tests.support.serverproc import ServerProcess  # noqa: E402

JSON = {"Content-Type": "application/json"}


def bodies(n: int, batch: int, tag: str) -> list[tuple[list[str], bytes]]:
    out = []
    for b in range(n):
        recs = [
            {
                "id": f"{tag}-{b}-{i}",
                "trace_id": f"{b * batch + i:032x}",
                "span_id": f"{i + 1:016x}",
                "name": "Groundedness",
                "value": (i % 100) / 100,
                "source": "judge",
            }
            for i in range(batch)
        ]
        out.append(([r["id"] for r in recs], json.dumps(recs).encode()))
    return out


def drive(
    srv: ServerProcess, payloads: list[tuple[list[str], bytes]], clients: int, seconds: float
) -> tuple[dict[str, float], set[str]]:
    acked: set[str] = set()
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    it = iter(payloads)
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=120)
        while time.perf_counter() < stop_at:
            with lock:
                item = next(it, None)
            if item is None:
                return
            ids, body = item
            t0 = time.perf_counter()
            conn.request("POST", "/api/v1/scores", body, JSON)
            resp = conn.getresponse()
            resp.read()
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if resp.status == 200:
                    acked.update(ids)
                else:
                    errors += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "scores_per_s": len(acked) / wall,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "wall_s": wall,
    }, acked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ps-annbench-"))
    n_bodies = int(args.seconds * 60_000 / args.batch) + 10  # more than 60k/s can use
    print(f"load average at start: {os.getloadavg()[0]:.2f}; building {n_bodies} bodies ...")
    results = {}
    for mode in ("lake", "embedded"):
        payloads = bodies(n_bodies, args.batch, mode)
        extra = ["--store", "lake", "--lake-path", str(tmp / "lake")] if mode == "lake" else []
        srv = ServerProcess(tmp / mode, extra).start()
        try:
            stats, acked = drive(srv, payloads, args.clients, args.seconds)
            if mode == "embedded":
                resp = httpx.post(
                    srv.base_url + "/api/v1/sql",
                    json={"sql": "SELECT count(*) FROM scores"},
                    timeout=60,
                )
                stored = int(resp.json()["rows"][0][0])
                assert stored == len(acked), (stored, len(acked))
        finally:
            srv.stop()
        if mode == "lake":
            files = [str(p) for p in (tmp / "lake" / "scores").glob("date=*/*.parquet")]
            ids = {r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet({files!r})").fetchall()}
            missing = len(acked - ids)
            assert missing == 0, f"{missing} acknowledged scores not in the lake"
            stats["segments"] = len(files)
        results[mode] = stats
        print(
            f"{mode:9s} {stats['scores_per_s']:>9,.0f} scores/s  "
            f"p50 {stats['p50_ms']:.0f} ms  p99 {stats['p99_ms']:.0f} ms  "
            f"({stats['requests']} requests of {args.batch}, {stats['errors']} errors)"
        )
    ratio = results["lake"]["scores_per_s"] / results["embedded"]["scores_per_s"]
    goal = "met" if results["lake"]["scores_per_s"] >= 20_000 else "NOT met"
    print(f"lake / embedded: {ratio:.2f}; goal >= 20,000 scores/s on the lake collector: {goal}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
