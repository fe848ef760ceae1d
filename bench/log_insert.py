"""GenAI log events into the store: row by row (``executemany``, the old path) vs Arrow slices.

Both write the same decoded records (bench/reliability/logflood.py's bodies) into
``log_events`` of a fresh store with ``INSERT OR IGNORE`` on the key; prints rows/s of each.

Usage:  .venv/bin/python bench/log_insert.py [--rows 200000] [--row-by-row 3000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reliability.logflood import log_body
from prefixscope.collector.decoding.common import Limits
from prefixscope.collector.decoding.logs import decode_logs_json
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store

#: the statement the receiver ran per row before issue 35
ROW_INSERT = (
    "INSERT OR IGNORE INTO log_events (id, trace_id, span_id, time, event_name, body, "
    "attributes, resource, scope_name, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000, help="records in Arrow slices")
    ap.add_argument("--row-by-row", type=int, default=3_000, help="records with executemany")
    ap.add_argument("--slice", type=int, default=10_000, help="records per Arrow slice")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "data", memory_mb=1024)
        sink = DuckDBSink(store)
        sink.open()
        old = decode_logs_json(log_body(0, 0, a.row_by_row), Limits())
        cur = store.cursor()
        t0 = time.perf_counter()
        cur.executemany(ROW_INSERT, [[*row, row[3]] for row in old.rows])
        row_s = time.perf_counter() - t0
        cur.close()
        tables = [
            decode_logs_json(log_body(1, k, a.slice), Limits()).table()
            for k in range(a.rows // a.slice)
        ]
        t0 = time.perf_counter()
        stored = sum(sink.write_logs(t) for t in tables)
        arrow_s = time.perf_counter() - t0
        again = sum(sink.write_logs(t) for t in tables[:2])  # a retried export: nothing new
        sink.close()
        store.close()
    print(f"row by row (executemany): {a.row_by_row:,} rows in {row_s:.2f} s = "
          f"{a.row_by_row / row_s:,.0f} rows/s")  # fmt: skip
    print(f"Arrow slices of {a.slice:,}: {stored:,} rows in {arrow_s:.2f} s = "
          f"{stored / arrow_s:,.0f} rows/s; a retry of 2 slices stored {again}")  # fmt: skip


if __name__ == "__main__":
    main()
