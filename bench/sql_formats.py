"""``POST /api/v1/sql``: a 1M-row answer as JSON vs as an Arrow IPC stream (and, for
reference, Parquet, CSV and NDJSON), through a real server on 127.0.0.1.

The answer is ``SELECT * FROM bench_spans``: a table of the store holding 1,000,000 rows
shaped like spans (a 32-hex trace id, a 16-hex span id, a timestamp, a latency, a prefix
name, a token count, an error flag, a JSON cohort), written into the store before the server
starts, so the time is the answer's, not the computation of its values. The server is
started with its row and size limits raised so the whole answer fits every format (the
defaults cut JSON at 10,000 rows and exports at 1,000,000 rows / half of --sql-memory-mb):
``--sql-max-rows 1000000 --sql-max-result-mb 4096 --sql-export-max-rows 1000000
--sql-export-max-mb 2048 --sql-memory-mb 8192 --sql-timeout-s 600``.

Per format and round: the time from sending the request to the last byte received, the
bytes received, and the time until the client holds the answer in memory (JSON:
``json.loads``; Arrow: ``pyarrow.ipc`` ``read_all``; others: received only). Formats
alternate in each round, the order reversed every other round; the table gives medians.
Before timing, the Arrow answer is checked to hold the JSON answer's rows.

Usage:  .venv/bin/python bench/sql_formats.py [--rows 1000000] [--rounds 5]
        [--formats json,arrow,parquet,csv,ndjson]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.serverproc import ServerProcess  # noqa: E402

MEDIA = {
    "json": "application/json",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
}
SERVER_ARGS = [
    "--sql-max-rows", "1000000", "--sql-max-result-mb", "4096",
    "--sql-export-max-rows", "1000000", "--sql-export-max-mb", "2048",
    "--sql-memory-mb", "8192", "--sql-timeout-s", "600", "--lake-roll-interval-s", "0",
]  # fmt: skip


SQL = "SELECT * FROM bench_spans"


def fill(data_dir: Path, rows: int) -> None:
    """The table the benchmark reads, written into the store before the server owns it."""
    from prefixscope.collector.storage.store import Store

    with Store(data_dir) as store:
        cur = store.cursor()
        cur.execute(
            f"""CREATE TABLE bench_spans AS
SELECT md5(i::VARCHAR) AS trace_id, md5((i * 7)::VARCHAR)[1:16] AS span_id,
  TIMESTAMP '2026-01-01' + to_microseconds(i * 1000) AS start_time,
  (i % 997) * 1.37::DOUBLE AS latency_ms,
  ['radiology', 'cardiology', 'oncology'][i % 3 + 1] AS prefix_id,
  i % 4096 AS output_tokens, i % 50 = 0 AS error,
  ('{{"specialty":"' || ['chest', 'heart'][i % 2 + 1] || '"}}')::JSON AS cohort
FROM range({rows}) t(i) ORDER BY i"""
        )
        cur.close()


def fetch(client: httpx.Client, sql: str, fmt: str) -> tuple[float, float, int, dict[str, str]]:
    """(seconds to the last byte, seconds until decoded, bytes, headers)."""
    started = time.perf_counter()
    chunks = []
    with client.stream(
        "POST", "/api/v1/sql", json={"sql": sql}, headers={"Accept": MEDIA[fmt]}
    ) as resp:
        if resp.status_code != 200:
            raise SystemExit(f"{fmt}: {resp.status_code} {resp.read()[:500]!r}")
        for chunk in resp.iter_raw(1 << 20):
            chunks.append(chunk)
        headers = dict(resp.headers)
    received = time.perf_counter()
    body = b"".join(chunks)
    if fmt == "json":
        json.loads(body)
    elif fmt == "arrow":
        with pa.ipc.open_stream(body) as reader:
            reader.read_all()
    decoded = time.perf_counter()
    return received - started, decoded - started, len(body), headers


def check_same(client: httpx.Client, sql: str, rows: int) -> None:
    resp = client.post("/api/v1/sql", json={"sql": sql})
    body = resp.json()
    assert not body["truncated"] and len(body["rows"]) == rows, "JSON answer incomplete"
    arrow = client.post("/api/v1/sql", json={"sql": sql}, headers={"Accept": MEDIA["arrow"]})
    assert arrow.headers["x-prefixscope-truncated"] == "false", "Arrow answer incomplete"
    with pa.ipc.open_stream(arrow.content) as reader:
        table = reader.read_all()
    assert table.column_names == body["columns"] and table.num_rows == rows
    for i in (0, 1, rows // 2, rows - 1):
        got = [table.column(c)[i].as_py() for c in range(table.num_columns)]
        got[2] = got[2].isoformat()
        assert got == body["rows"][i], (i, got, body["rows"][i])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--formats", default="json,arrow,parquet,csv,ndjson")
    args = ap.parse_args()
    formats = args.formats.split(",")
    sql = SQL
    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout)
    with tempfile.TemporaryDirectory() as tmp:
        fill(Path(tmp) / "data", args.rows)
        srv = ServerProcess(Path(tmp) / "data", SERVER_ARGS).start()
        try:
            with httpx.Client(base_url=srv.base_url, timeout=900) as client:
                check_same(client, sql, args.rows)
                fetch(client, sql, "arrow")  # warm up (DuckDB, allocator)
                results: dict[str, list[tuple[float, float, int, float]]] = {f: [] for f in formats}
                for r in range(args.rounds):
                    order = formats if r % 2 == 0 else formats[::-1]
                    for fmt in order:
                        wire, total, size, headers = fetch(client, sql, fmt)
                        server = float(headers.get("x-prefixscope-elapsed-ms", "nan"))
                        results[fmt].append((wire, total, size, server))
                        print(f"round {r + 1} {fmt:8s} {wire:7.3f} s to last byte, "
                              f"{total:7.3f} s decoded, {size / 1e6:8.1f} MB")  # fmt: skip
        finally:
            srv.stop()
    print("uptime after: ", subprocess.run(["uptime"], capture_output=True, text=True).stdout)
    print(f"load average: {os.getloadavg()}, {os.cpu_count()} cores")
    print(f"\n{args.rows:,} rows, {args.rounds} rounds, medians")
    print("| format | to last byte (s) | decoded in the client (s) | MB | vs JSON: time | bytes |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = results.get("json")
    for fmt in formats:
        wire = statistics.median(x[0] for x in results[fmt])
        total = statistics.median(x[1] for x in results[fmt])
        size = statistics.median(x[2] for x in results[fmt])
        if base:
            b_total = statistics.median(x[1] for x in base)
            b_size = statistics.median(x[2] for x in base)
            ratio = f"{b_total / total:.1f}x faster | {size / b_size:.2f}"
        else:
            ratio = "| "
        decoded = f"{total:.3f}" if fmt in ("json", "arrow") else "-"
        print(f"| {fmt} | {wire:.3f} | {decoded} | {size / 1e6:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
