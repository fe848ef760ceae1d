"""Scale-out ingest: stateless collectors writing one Parquet lake (local and S3), compaction."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.dataset as ds
import pytest

from tests.support.otlp import PROTOBUF_HEADERS as PROTOBUF
from tests.support.otlp import make_body
from tests.support.serverproc import ServerProcess, free_port


def post(srv: ServerProcess, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=30)
    conn.request("POST", "/v1/traces", body, PROTOBUF)
    resp = conn.getresponse()
    resp.read()
    return resp.status


def lake_count(lake: Path) -> tuple[int, int]:
    """(rows, distinct span keys) in the lake, read by plain DuckDB with hive partitioning."""
    con = duckdb.connect()
    rows = con.execute(
        "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM read_parquet(?, "
        "hive_partitioning = true)",
        [str(lake / "spans" / "*" / "*.parquet")],
    ).fetchall()
    return int(rows[0][0]), int(rows[0][1])


def compact_cli(lake: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "prefixscope.cli", "lake", "compact", "--lake-path", lake],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return out.stdout


def test_two_collectors_one_lake_then_compaction(start_server: Any, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    a = start_server("--store", "lake", "--lake-path", str(lake))
    b = start_server("--store", "lake", "--lake-path", str(lake))
    # API routes do not exist on a stateless collector
    assert httpx.get(a.base_url + "/api/v1/alerts").status_code == 404
    for i in range(10):
        body, _ = make_body(i, 20)
        assert post(a, body) == 200
        assert post(b if i % 2 else a, body) == 200  # retries land on either collector
    a.stop()
    b.stop()
    files = list(lake.glob("spans/date=*/*.parquet"))
    assert len(files) >= 2
    assert not list(lake.rglob(".*.tmp")), "a temporary file was left visible"
    rows, distinct = lake_count(lake)
    assert (rows, distinct) == (400, 200)
    out = compact_cli(str(lake))
    assert "200 duplicates removed" in out
    assert lake_count(lake) == (200, 200)
    assert len(list(lake.glob("spans/date=*/*.parquet"))) == 1
    # polars reads the lake without PrefixScope too
    import polars as pl

    df = pl.scan_parquet(str(lake / "spans" / "**" / "*.parquet"), hive_partitioning=True)
    assert df.select(pl.len()).collect().item() == 200


@pytest.fixture
def moto_s3() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_collector_writes_to_s3_compatible_lake(start_server: Any, moto_s3: str) -> None:
    import boto3
    import s3fs

    creds = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_s3,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    s3.create_bucket(Bucket="traces")
    env = {**creds, "PREFIXSCOPE_S3_ENDPOINT_URL": moto_s3}
    srv = start_server("--store", "lake", "--lake-path", "s3://traces/lake", env=env)
    for i in range(4):
        body, _ = make_body(i, 25)
        assert post(srv, body) == 200
        assert post(srv, body) == 200  # duplicate export
    srv.stop()
    fs = s3fs.S3FileSystem(key="test", secret="test", client_kwargs={"endpoint_url": moto_s3})
    keys = fs.glob("traces/lake/spans/date=*/*.parquet")
    assert keys
    table = ds.dataset(
        "traces/lake/spans", filesystem=fs, format="parquet", partitioning="hive"
    ).to_table()
    assert table.num_rows == 200
    out = compact_cli("s3://traces/lake", env=env)
    assert "100 duplicates removed" in out
    fs.invalidate_cache()  # s3fs caches listings; another process changed the bucket
    table = ds.dataset(
        "traces/lake/spans", filesystem=fs, format="parquet", partitioning="hive"
    ).to_table()
    assert table.num_rows == 100
    assert len(fs.glob("traces/lake/spans/date=*/*.parquet")) == 1


def test_lake_files_from_before_the_new_columns_still_read_and_compact(tmp_path: Path) -> None:
    """A lake written before events/links/scope/request_model existed: the analytics views
    read its rows (new columns NULL) beside new files, and compaction carries both."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prefixscope.analytics.engines import DuckDBEngine
    from prefixscope.collector.spans.model import SPAN_ARROW_SCHEMA
    from prefixscope.collector.storage.compact import compact
    from prefixscope.collector.storage.schema import _V1_SPAN_COLUMNS

    def rows(span_id: str, **extra: Any) -> dict[str, Any]:
        base: dict[str, Any] = {f.name: None for f in SPAN_ARROW_SCHEMA}
        base.update(trace_id="a" * 32, span_id=span_id, name="chat", attributes="{}")
        base["start_time"] = pa.scalar(1_780_000_000_000_000, pa.timestamp("us")).as_py()
        base.update(extra)
        return base

    part = tmp_path / "lake" / "spans" / "date=2026-05-28"
    part.mkdir(parents=True)
    old_schema = pa.schema([(n, t) for n, t, _ in _V1_SPAN_COLUMNS])
    old = pa.Table.from_pylist([rows("1" * 16)], schema=SPAN_ARROW_SCHEMA).select(old_schema.names)
    pq.write_table(old, part / "part-old.parquet")
    # only old files: the new columns exist and are NULL
    eng = DuckDBEngine.over_lake(str(tmp_path / "lake"))
    got = eng.arrow("SELECT span_id, events, scope_name FROM spans").to_pylist()
    assert got == [{"span_id": "1" * 16, "events": None, "scope_name": None}]
    new = pa.Table.from_pylist(
        [rows("2" * 16, events='[{"name": "exception"}]', scope_name="s", request_model="m")],
        schema=SPAN_ARROW_SCHEMA,
    )
    pq.write_table(new, part / "part-new.parquet")
    for _ in range(2):  # views over mixed files, then over the compacted file
        eng = DuckDBEngine.over_lake(str(tmp_path / "lake"))
        got = eng.arrow(
            "SELECT span_id, events, scope_name, request_model FROM spans ORDER BY span_id"
        ).to_pylist()
        assert got == [
            {"span_id": "1" * 16, "events": None, "scope_name": None, "request_model": None},
            {
                "span_id": "2" * 16,
                "events": '[{"name": "exception"}]',
                "scope_name": "s",
                "request_model": "m",
            },
        ]
        report = compact(str(tmp_path / "lake"))
    assert report.files_out == 0  # the second pass had one file left: nothing to do
    compacted = list(part.glob("*.parquet"))
    assert len(compacted) == 1
    assert pq.read_schema(compacted[0]).names == SPAN_ARROW_SCHEMA.names
