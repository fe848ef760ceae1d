"""The embedded store alone over many millions of spans: does a write or a roll cost more as
the store fills? One process, no server, no HTTP, no concurrency.

Groups of 5 distinct 512-span requests of the reference workload (the soak's templates; 5
requests is the soak's mean group commit with 8 clients) go through ``DuckDBSink.write`` into
a fresh store with the server's defaults (store budget 1,024 MB, checkpoint at 512 MB of
WAL, 15-minute dedupe window). After each million, the rows of that million are rolled to
Parquet the way the lake roll does (``write_partitioned`` over DuckDB's Arrow stream). Per
million it prints the seconds inside ``write`` (decoding excluded) and, of those, the dedupe
window's lookups (``RecentKeys.seen``: one bitmap read per key and time bucket, so it grows
with the buckets in the window), the slowest commit (a checkpoint) and the seconds of the
roll. ``bench/soak.py`` measures the same through the
server, where these costs share two cores with HTTP and decoding.

Usage:  .venv/bin/python bench/store_growth.py [--millions 14]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from bench.soak import MARK, MILLION, templates  # noqa: E402
from prefixscope.collector.decoding import PROTOBUF, decode_body  # noqa: E402
from prefixscope.collector.spans.model import SPAN_COLUMN_NAMES  # noqa: E402
from prefixscope.collector.storage.lake import ROLL_BATCH_ROWS, write_partitioned  # noqa: E402
from prefixscope.collector.storage.sinks import DuckDBSink  # noqa: E402
from prefixscope.collector.storage.store import Store  # noqa: E402

REQUESTS_PER_GROUP = 5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--millions", type=int, default=14)
    args = ap.parse_args()
    bodies = templates()
    folder = Path(tempfile.mkdtemp(prefix="ps-growth-"))
    print(f"load average: {os.getloadavg()}")
    print(
        "| million | write s | of which dedupe lookup s | window buckets "
        "| slowest commit ms | roll s |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    cols = ", ".join(SPAN_COLUMN_NAMES)
    k = batch = 0
    try:
        with Store(folder, memory_mb=1024, checkpoint_wal_mb=512) as store:
            sink = DuckDBSink(store, dedupe_window_s=900)
            sink.open()
            lookups = [0.0]
            seen = sink.recent.seen

            def timed_seen(keys: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return seen(keys)
                finally:
                    lookups[0] += time.perf_counter() - t0

            sink.recent.seen = timed_seen  # type: ignore[method-assign]
            for m in range(args.millions):
                spent = worst = lookups[0] = 0.0
                rows, first = 0, batch + 1
                while rows < MILLION:
                    parts = []
                    for _ in range(REQUESTS_PER_GROUP):
                        body = bodies[k % len(bodies)].replace(MARK, k.to_bytes(4, "big"))
                        table = decode_body(body, PROTOBUF, None, 1 << 26, 32768).table
                        assert table is not None
                        parts.append(table)
                        k += 1
                    group = pa.concat_tables(parts)
                    batch += 1
                    t0 = time.perf_counter()
                    sink.write(group, batch)
                    took = time.perf_counter() - t0
                    spent, worst, rows = spent + took, max(worst, took), rows + group.num_rows
                con = store.cursor()
                t0 = time.perf_counter()
                reader = con.sql(
                    f"SELECT {cols}, CAST(start_time AS DATE)::VARCHAR AS _date FROM span_rows "
                    "WHERE ingest_batch BETWEEN $1 AND $2",
                    params=[first, batch],
                ).to_arrow_reader(ROLL_BATCH_ROWS)
                out = folder / "roll"
                write_partitioned(reader, out, "part.parquet", 1_000_000, "bench")
                roll = time.perf_counter() - t0
                con.close()
                shutil.rmtree(out)
                print(
                    f"| {m + 1} | {spent:.2f} | {lookups[0]:.2f} | {sink.recent.buckets} | "
                    f"{worst * 1000:.0f} | {roll:.2f} |",
                    flush=True,
                )
            sink.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
