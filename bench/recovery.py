"""Crash recovery cost of the checkpoint setting: restart time after ``kill -9``.

The server checkpoints DuckDB's write-ahead log into the database file when the WAL reaches
``--checkpoint-wal-mb``. Rare checkpoints make ingest cheaper; after a crash the WAL since the
last checkpoint is replayed on start. This measures, per setting: ingest rate while filling,
the WAL size at the kill, the time from restart to a healthy server, and that every
acknowledged span is back.

Usage:  .venv/bin/python bench/recovery.py [--spans 300000] [--checkpoint-wal-mb 16 512]
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import make_request  # noqa: E402
from tests.support.serverproc import ServerProcess  # noqa: E402
from tests.support.store import query_store  # noqa: E402


def fill(srv: ServerProcess, payloads: list[bytes], clients: int = 8) -> float:
    it = iter(payloads)
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=120)
        while True:
            with lock:
                body = next(it, None)
            if body is None:
                return
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--spans", type=int, default=300_000)
    ap.add_argument("--checkpoint-wal-mb", type=int, nargs="+", default=[16, 512])
    args = ap.parse_args()
    n_req = args.spans // 512
    payloads = [make_request(512, seed=k).SerializeToString() for k in range(n_req)]
    print(
        f"{'ckpt MB':>7} {'fill spans/s':>12} {'WAL MB at kill':>14} {'restart s':>9} "
        f"{'spans back':>10}"
    )
    for mb in args.checkpoint_wal_mb:
        data = Path(tempfile.mkdtemp(prefix="ps-recovery-")) / "data"
        opts = ["--checkpoint-wal-mb", str(mb), "--lake-roll-interval-s", "0"]
        srv = ServerProcess(data, opts).start()
        wall = fill(srv, payloads)
        wal = data / "prefixscope.duckdb.wal"
        wal_mb = wal.stat().st_size / 1e6 if wal.exists() else 0.0
        srv.kill()
        t0 = time.perf_counter()
        srv2 = ServerProcess(data, opts).start(timeout=600)
        restart = time.perf_counter() - t0
        srv2.stop()
        back = query_store(data, "SELECT count(*) FROM spans")[0][0]
        print(f"{mb:>7} {n_req * 512 / wall:>12,.0f} {wal_mb:>14.0f} {restart:>9.1f} {back:>10,}")
        assert back == n_req * 512, back


if __name__ == "__main__":
    main()
