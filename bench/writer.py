"""Writer A/B in one process: the store's cost per span with the dedupe window (no key) vs
the primary key it replaced (issue 14).

The same decoded groups of the soak's requests (distinct 512-span requests of the reference
workload, about 49k spans per group, like the writer's biggest group commits) go into a fresh
store each round:

* ``window``: ``DuckDBSink.write`` — 64-bit key hashes checked against the window, then a
  plain ``INSERT`` into ``span_rows`` (no index);
* ``pk``: a plain ``INSERT`` into a copy of the table with the ``(trace_id, span_id)``
  primary key (the previous design's fast path).

Rounds alternate; each line gives spans/s and the DuckDB file's bytes per span once the store
is closed (checkpointed).

Usage:  .venv/bin/python bench/writer.py [--groups 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from bench.soak import MARK, templates  # noqa: E402
from prefixscope.collector.decoding import PROTOBUF, decode_body  # noqa: E402
from prefixscope.collector.storage.schema import _V4_SPAN_COLUMNS, _spans_ddl  # noqa: E402
from prefixscope.collector.storage.sinks import DuckDBSink  # noqa: E402
from prefixscope.collector.storage.store import Store  # noqa: E402

REQUESTS_PER_GROUP = 96


def groups(n: int) -> list[pa.Table]:
    bodies = templates()
    out, k = [], 0
    for _ in range(n):
        parts = []
        for _ in range(REQUESTS_PER_GROUP):
            body = bodies[k % len(bodies)].replace(MARK, k.to_bytes(4, "big"))
            k += 1
            table = decode_body(body, PROTOBUF, None, 1 << 26, 32768).table
            assert table is not None
            parts.append(table)
        out.append(pa.concat_tables(parts))
    return out


def _with_batch(table: pa.Table, batch: int) -> pa.Table:
    n = table.num_rows
    now = pa.scalar(int(time.time() * 1e6), pa.timestamp("us"))
    return table.append_column("ingested_at", pa.repeat(now, n)).append_column(
        "ingest_batch", pa.repeat(pa.scalar(batch, pa.int64()), n)
    )


def run(mode: str, data: list[pa.Table]) -> tuple[float, float]:
    """(spans/s, bytes per span) of one round in a fresh store."""
    n = sum(t.num_rows for t in data)
    folder = Path(tempfile.mkdtemp(prefix="ps-writer-"))
    with Store(folder) as store:
        if mode == "pk":
            con = store.cursor()
            con.execute(_spans_ddl("span_pk", _V4_SPAN_COLUMNS))
            started = time.perf_counter()
            for i, table in enumerate(data):
                con.register("_b", _with_batch(table, i + 1))
                con.execute("INSERT INTO span_pk SELECT * FROM _b")
                con.unregister("_b")
            elapsed = time.perf_counter() - started
            con.close()
        else:
            sink = DuckDBSink(store)
            sink.open()
            started = time.perf_counter()
            for i, table in enumerate(data):
                assert sink.write(table, i + 1) == table.num_rows
            elapsed = time.perf_counter() - started
            sink.close()
        size = (folder / "prefixscope.duckdb").stat().st_size
    return n / elapsed, size / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    data = groups(args.groups)
    print(f"{sum(t.num_rows for t in data):,} spans; load average {os.getloadavg()[0]:.1f}")
    for rnd in range(args.rounds):
        for mode in ("pk", "window"):
            rate, per_span = run(mode, data)
            print(f"round {rnd}  {mode:6}  {rate:9,.0f} spans/s  {per_span:5.0f} B/span")


if __name__ == "__main__":
    main()
