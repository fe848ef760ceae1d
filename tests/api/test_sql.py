"""The sandboxed SQL endpoint, through the real server: escapes refused, limits enforced."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.reliability.common import vm_hwm_mb
from prefixscope.api.annotation_store import write_feedback
from prefixscope.api.models import FeedbackIn
from prefixscope.api.sql_sandbox import SqlSandbox
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store, scalar
from prefixscope.errors import QueryError
from tests.support.otlp import json_spans as _json_spans
from tests.support.serverproc import ServerProcess

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial

MAX_ROWS = 1000
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def sql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("sql")
    data = root / "data"
    (data / "lake" / "custom").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2, 3]}), data / "lake" / "custom" / "inside.parquet")
    pq.write_table(pa.table({"a": [7]}), root / "outside.parquet")
    srv = ServerProcess(
        data,
        [
            "--sql-timeout-s",
            str(TIMEOUT_S),
            "--sql-max-rows",
            str(MAX_ROWS),
            "--lake-roll-interval-s",
            "0",
        ],
    ).start()
    yield srv
    srv.stop()


def sql(srv: ServerProcess, query: str) -> httpx.Response:
    return httpx.post(f"{srv.base_url}/api/v1/sql", json={"sql": query}, timeout=30)


ESCAPES = [
    # (query, error code, fragment of the message)
    ("SELECT * FROM read_csv('/etc/passwd')", "forbidden", "file and network access"),
    ("SELECT * FROM read_text('/etc/passwd')", "forbidden", "file and network access"),
    ("SELECT * FROM glob('/etc/*')", "forbidden", "file and network access"),
    ("SELECT * FROM read_parquet('{outside}')", "forbidden", "only Parquet files under"),
    ("SELECT * FROM read_parquet('{lake}/../../outside.parquet')", "forbidden", "file and"),
    ("SELECT * FROM read_json('http://127.0.0.1:9/x.json')", "forbidden", "file and network"),
    ("ATTACH ':memory:' AS other", "forbidden", "ATTACH statements are not allowed"),
    ("ATTACH '{root}/evil.duckdb' AS evil", "forbidden", "ATTACH statements are not allowed"),
    ("DETACH other", "forbidden", "DETACH statements are not allowed"),
    ("COPY spans TO '{root}/spans.csv'", "forbidden", "COPY statements are not allowed"),
    ("COPY (SELECT 1) TO '{lake}/x.parquet'", "forbidden", "COPY statements are not allowed"),
    ("EXPORT DATABASE '{root}/dump'", "forbidden", "EXPORT statements are not allowed"),
    ("INSTALL httpfs", "forbidden", "INSTALL statements are not allowed"),
    ("LOAD httpfs", "forbidden", "LOAD statements are not allowed"),
    ("SET enable_external_access = true", "forbidden", "SET statements are not allowed"),
    ("SET threads = 1", "forbidden", "SET statements are not allowed"),
    ("RESET threads", "forbidden", "RESET statements are not allowed"),
    ("PRAGMA table_info('spans')", "forbidden", "PRAGMA statements are not allowed"),
    ("CALL checkpoint()", "forbidden", "CALL statements are not allowed"),
    ("CREATE TABLE evil (a INT)", "forbidden", "CREATE statements are not allowed"),
    ("CREATE MACRO evil() AS 1", "forbidden", "CREATE statements are not allowed"),
    ("INSERT INTO prefixes (prefix_id) VALUES ('x')", "forbidden", "INSERT statements"),
    ("UPDATE alerts SET status = 'acked'", "forbidden", "UPDATE statements are not allowed"),
    ("DELETE FROM scores", "forbidden", "DELETE statements are not allowed"),
    ("DROP TABLE scores", "forbidden", "DROP statements are not allowed"),
    ("VACUUM", "forbidden", "VACUUM statements are not allowed"),
    ("BEGIN TRANSACTION", "forbidden", "BEGIN statements are not allowed"),
    (
        "WITH d AS (DELETE FROM scores RETURNING *) SELECT * FROM d",
        "forbidden",
        "data-modifying DELETE inside a query",
    ),
    (
        "EXPLAIN ANALYZE WITH d AS (DELETE FROM scores RETURNING *) SELECT * FROM d",
        "forbidden",
        "data-modifying DELETE",
    ),
    ("SELECT * FROM query('DELETE FROM scores')", "forbidden", "function query() is not"),
    ("SELECT * FROM checkpoint()", "forbidden", "function checkpoint() is not allowed"),
    ("SELECT 1; SELECT 2", "multiple_statements", "exactly one statement is allowed, got 2"),
    ("SELECT 1; DROP TABLE scores", "multiple_statements", "exactly one statement"),
    ("  ;  ", "empty", "no SQL statement given"),
]


@pytest.mark.parametrize(("query", "code", "fragment"), ESCAPES, ids=[e[0][:40] for e in ESCAPES])
def test_escape_is_refused_with_a_clear_error(
    sql_server: ServerProcess, query: str, code: str, fragment: str
) -> None:
    root = sql_server.data_dir.parent
    outside = root / "outside.parquet"
    resp = sql(sql_server, query.format(lake=lake_dir(sql_server), outside=outside, root=root))
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"] == "query_error"
    assert body["code"] == code
    assert fragment in body["message"]


def lake_dir(srv: ServerProcess) -> Path:
    return (srv.data_dir / "lake").resolve()


def test_escapes_left_the_store_unchanged(sql_server: ServerProcess) -> None:
    tables = sql(
        sql_server,
        "SELECT table_name FROM duckdb_tables() UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1",
    ).json()
    names = [r[0] for r in tables["rows"]]
    assert {"spans", "span_rows", "scores", "feedback", "alerts", "prefixes"} <= set(names)
    assert "evil" not in names
    dbs = sql(sql_server, "SELECT database_name FROM duckdb_databases() WHERE NOT internal")
    assert [r[0] for r in dbs.json()["rows"]] == ["prefixscope"]
    root = sql_server.data_dir.parent
    assert sorted(p.name for p in root.iterdir()) == ["data", "data-server.log", "outside.parquet"]


def test_engine_settings_are_locked(sql_server: ServerProcess) -> None:
    resp = sql(
        sql_server,
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')",
    )
    assert resp.json()["rows"] == [[False, True]]


def test_engine_sandbox_cannot_be_changed_even_on_a_raw_cursor(tmp_path: Path) -> None:
    with Store(tmp_path / "d") as store:
        cur = store.cursor()
        for stmt in (
            "SET enable_external_access = true",
            "SET lock_configuration = false",
            "RESET allowed_directories",
        ):
            with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
                cur.execute(stmt)
        with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
            cur.execute("SELECT * FROM read_csv('/etc/passwd')")


def test_read_parquet_inside_the_lake_is_allowed(sql_server: ServerProcess) -> None:
    lake = lake_dir(sql_server)
    resp = sql(sql_server, f"SELECT sum(a) FROM read_parquet('{lake}/custom/*.parquet')")
    assert resp.status_code == 200, resp.text
    assert resp.json()["rows"] == [[6]]


@pytest.mark.parametrize(
    "query",
    [
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "DESCRIBE spans",
        "SHOW TABLES",
        "EXPLAIN SELECT 1",
        "SUMMARIZE SELECT 1 AS a",
        "FROM range(3)",
        "SELECT 1 AS a UNION ALL SELECT 2",
    ],
)
def test_read_statements_are_allowed(sql_server: ServerProcess, query: str) -> None:
    resp = sql(sql_server, query)
    assert resp.status_code == 200, resp.text
    assert resp.json()["rows"]


def test_syntax_error_has_position(sql_server: ServerProcess) -> None:
    query = "SELECT trace_id\nFROM spans WHERE WHERE"
    resp = sql(sql_server, query)
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "syntax_error"
    assert body["position"] == query.index("WHERE WHERE") + len("WHERE ")
    assert 'near "WHERE"' in body["message"]


def test_binder_error_names_column_and_position(sql_server: ServerProcess) -> None:
    query = "SELECT nope FROM spans"
    body = sql(sql_server, query).json()
    assert body["code"] == "binder_error"
    assert '"nope" not found' in body["message"]
    assert body["position"] == query.index("nope")


def test_runaway_query_times_out(sql_server: ServerProcess) -> None:
    started = time.monotonic()
    resp = sql(sql_server, "SELECT sum(a * b) FROM range(1000000000000) t(a), range(3) u(b)")
    elapsed = time.monotonic() - started
    assert resp.status_code == 408, resp.text
    assert resp.json()["code"] == "timeout"
    assert "1s time limit" in resp.json()["message"]
    assert elapsed < TIMEOUT_S + 5
    # the server is still healthy and the sandbox usable afterwards
    assert sql(sql_server, "SELECT 42").json()["rows"] == [[42]]


def test_runaway_cross_join_is_stopped(sql_server: ServerProcess) -> None:
    """Its right side is materialised: the memory watchdog or the time limit stops it."""
    resp = sql(sql_server, "SELECT count(*) FROM range(100000000) a, range(100000000) b")
    assert resp.json()["code"] in ("timeout", "memory_limit"), resp.text
    assert resp.status_code in (400, 408)


def test_huge_result_is_truncated(sql_server: ServerProcess) -> None:
    resp = sql(sql_server, "SELECT range AS i FROM range(100000000)")
    assert resp.status_code == 200
    body = resp.json()
    assert body["truncated"] is True
    assert len(body["rows"]) == MAX_ROWS
    assert body["rows"][-1] == [MAX_ROWS - 1]
    exact = sql(sql_server, f"SELECT range FROM range({MAX_ROWS})").json()
    assert exact["truncated"] is False and len(exact["rows"]) == MAX_ROWS


def test_values_are_json_safe(sql_server: ServerProcess) -> None:
    resp = sql(
        sql_server,
        "SELECT TIMESTAMP '2025-01-02 03:04:05.5' AS ts, DATE '2025-01-02' AS d, "
        "1.25::DECIMAL(5,2) AS dec, 'ab'::BLOB AS b, [1, 2] AS l, {'k': 'v'} AS s, "
        "MAP {'x': 1} AS m, 'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, INTERVAL 90 SECOND AS iv, "
        "170141183460469231731687303715884105727::HUGEINT AS big, NULL AS nothing, "
        "'00000000-0000-0000-0000-000000000001'::UUID AS u",
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    row = dict(zip(body["columns"], body["rows"][0], strict=True))
    assert row == {
        "ts": "2025-01-02T03:04:05.500000",
        "d": "2025-01-02",
        "dec": 1.25,
        "b": "YWI=",
        "l": [1, 2],
        "s": {"k": "v"},
        "m": {"x": 1},
        "nan": "NaN",
        "inf": "Infinity",
        "iv": 90.0,
        "big": 170141183460469231731687303715884105727,
        "nothing": None,
        "u": "00000000-0000-0000-0000-000000000001",
    }
    assert body["types"][0] == "TIMESTAMP"


def test_query_does_not_block_ingest_or_other_requests(sql_server: ServerProcess) -> None:
    result: dict[str, httpx.Response] = {}

    def slow() -> None:
        result["slow"] = sql(sql_server, "SELECT count(*) FROM range(100000000) a, range(10) b")

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    resp = httpx.post(
        f"{sql_server.base_url}/api/v1/scores",
        json={"trace_id": "ab" * 16, "name": "Groundedness", "value": 0.5},
        timeout=10,
    )
    assert resp.status_code == 200
    assert httpx.get(f"{sql_server.base_url}/healthz", timeout=5).status_code == 200
    assert time.monotonic() - started < TIMEOUT_S
    thread.join(30)
    assert result["slow"].status_code in (200, 408)


def test_outcomes_are_counted(sql_server: ServerProcess) -> None:
    sql(sql_server, "DROP TABLE spans")
    text = httpx.get(f"{sql_server.base_url}/metrics", timeout=5).text
    assert 'prefixscope_sql_queries_total{outcome="forbidden"}' in text
    assert 'prefixscope_sql_queries_total{outcome="ok"}' in text


def test_request_validation(sql_server: ServerProcess) -> None:
    resp = httpx.post(f"{sql_server.base_url}/api/v1/sql", json={"query": "SELECT 1"})
    assert resp.status_code == 422
    assert resp.json()["error"] == "unprocessable"
    assert resp.json()["detail"][0]["loc"][:2] == ["body", "sql"]


def test_concurrent_queries_are_bounded(sql_server: ServerProcess) -> None:
    slow = "SELECT sum(a * b) FROM range(1000000000000) t(a), range(3) u(b)"
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def run() -> None:
        resp = sql(sql_server, slow)
        with lock:
            results.append(resp)

    threads = [threading.Thread(target=run) for _ in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in results)
    # at most 4 run at once (each hits the 1 s limit); the ones beyond are shed, not queued
    assert set(codes) == {408, 429} and codes.count(408) >= 4, codes
    shed = next(r for r in results if r.status_code == 429)
    assert shed.headers["retry-after"] == "1" and shed.json()["error"] == "overloaded"


#: Issue 15's bypasses of the old per-call check, and their siblings: each would allocate
#: gigabytes or more. (query, the defence expected to stop it)
MEMORY_ATTACKS = [
    ("SELECT repeat(repeat('x', 1000000), 1000000)", "value_too_large"),
    ("SELECT lpad('x', 2000000000, 'y')", "value_too_large"),
    ("SELECT rpad('x', 2000000000, 'y')", "value_too_large"),
    ("SELECT array_resize([1], 2000000000)", "value_too_large"),
    ("SELECT range(1000000) FROM range(100000)", "value_too_large"),
    ("SELECT generate_series(1, 100000) FROM range(100000)", "value_too_large"),
    ("SELECT format('{:>1000000000}', 1)", "value_too_large"),
    ("SELECT printf('%1000000000d', 1)", "value_too_large"),
    ("SELECT len(range(x)) FROM (SELECT 1000000000 AS x)", "value_too_large"),
    ("WITH t AS (SELECT repeat('x', 60000) s) SELECT s || s || s FROM t", "value_too_large"),
    ("SELECT repeat(string_agg('x', ''), 3) FROM range(10)", "value_too_large"),
    ("SELECT length(string_agg(repeat('x', 1000), '')) FROM range(100000000)", "memory_limit"),
    ("SELECT len(list(i)) FROM range(1000000000) t(i)", "memory_limit"),
]


def test_a_write_stops_ad_hoc_queries_when_duckdb_memory_is_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DuckDB's memory limit is shared by every cursor. A user's query that fills it made the
    ingest commit running beside it fail (a 503 under load in CI); now the write stops the
    user's queries and retries, and the user gets a memory_limit error instead."""
    from tests.support.otlp import decoded_table as _table

    caplog.set_level(logging.WARNING, logger="prefixscope.collector.storage.store")
    with Store(tmp_path, memory_mb=256) as store:  # DuckDB's floor: 128 MB
        sandbox = SqlSandbox(store, timeout_s=20, max_rows=10, memory_budget_bytes=128 << 20)
        sink = DuckDBSink(store)
        sink.open()
        stop = threading.Event()
        codes: list[str] = []

        def attack() -> None:
            while not stop.is_set():
                for query, defence in MEMORY_ATTACKS[-2:]:
                    assert defence == "memory_limit"
                    try:
                        sandbox.run(query)
                    except QueryError as err:
                        codes.append(err.code)

        def collisions() -> int:
            return sum("write ran out of DuckDB memory" in r.message for r in caplog.records)

        thread = threading.Thread(target=attack)
        thread.start()
        written = batches = 0
        try:
            # until writes have met full memory a few times (a few hundred writes usually)
            while batches < 3000 and (collisions() < 3 or batches < 100):
                batches += 1
                written += sink.write(_table(batches, 50), batches)
                if batches % 5 == 0:  # the API's writes take the same path
                    fb = FeedbackIn(trace_id=f"{batches:032x}", kind="thumb", value=1.0)
                    # (after a commit DuckDB reported as failed but kept, the retry sees its
                    # own row as a duplicate: stored once either way)
                    assert write_feedback(store, [fb]).accepted == 1
        finally:
            stop.set()
            thread.join(60)
        assert collisions() >= 1, "no write met DuckDB's memory full: the test proved nothing"
        assert codes and set(codes) == {"memory_limit"}, codes
        assert written == 50 * batches
        assert scalar(store.cursor(), "SELECT count(*) FROM span_rows") == written
        assert scalar(store.cursor(), "SELECT count(*) FROM feedback_rows") == batches // 5


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_memory_attacks_are_stopped_while_ingest_goes_on(tmp_path: Path) -> None:
    store_mb, sql_mb = 512, 128
    srv = ServerProcess(
        tmp_path / "data",
        [
            "--store-memory-mb",
            str(store_mb),
            "--sql-memory-mb",
            str(sql_mb),
            "--sql-timeout-s",
            "20",
            "--lake-roll-interval-s",
            "0",
        ],
    ).start()
    stop = threading.Event()
    acked: list[int] = []
    failures: list[str] = []

    def ingest() -> None:
        i = 0
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/traces", json=_json_spans(i))
                if r.status_code == 200:
                    acked.append(i)
                else:
                    failures.append(f"{r.status_code} {r.text[:100]}")
                i += 1
                time.sleep(0.02)

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        assert srv.proc is not None
        base_mb = _vm_hwm_mb(srv.proc.pid)
        for query, defence in MEMORY_ATTACKS:
            resp = sql(srv, query)
            assert resp.status_code == 400, (query, resp.text)
            assert resp.json()["code"] == defence, (query, resp.text)
            assert httpx.get(srv.base_url + "/healthz", timeout=5).status_code == 200
        peak_mb = _vm_hwm_mb(srv.proc.pid)
    finally:
        stop.set()
        thread.join(30)
    try:
        assert not failures, failures[:3]
        assert len(acked) >= 10, acked
        # RSS stays within the configured bounds (the store's limit, the SQL budget, plus the
        # server's own ~400 MB), not "80 % of RAM"
        assert peak_mb < store_mb + sql_mb + 400, (base_mb, peak_mb)
        count = sql(srv, "SELECT count(*) FROM spans").json()["rows"][0][0]
        assert count == 50 * len(acked)
    finally:
        srv.stop()


def _post_big_spans(srv: ServerProcess, n: int = 64, attrs: int = 8, size: int = 30_000) -> None:
    """Spans whose attributes are large (each value under --max-attribute-bytes)."""
    now = time.time_ns()
    spans = [
        {
            "traceId": f"{i + 1:032x}",
            "spanId": f"{i + 1:016x}",
            "name": "chat",
            "startTimeUnixNano": str(now),
            "endTimeUnixNano": str(now + 1000),
            "attributes": [
                {"key": f"big.{k}", "value": {"stringValue": chr(97 + k) * size}}
                for k in range(attrs)
            ],
        }
        for i in range(n)
    ]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=body, timeout=60)
    assert resp.status_code == 200, resp.text


def test_concatenation_and_the_stores_own_files_are_refused_with_rss_bounded(
    sql_server: ServerProcess,
) -> None:
    """Issue 35: chained ``||`` (and its kin) over values of no bound, and reads of the
    store's file, WAL and spill folder, are refused before they run; RSS stays put."""
    _post_big_spans(sql_server)
    assert sql_server.proc is not None
    d, lake = sql_server.data_dir.resolve(), lake_dir(sql_server)
    chain = "||".join(["attributes::varchar"] * 8)
    too_large = [
        f"SELECT octet_length({'||'.join(['content'] * 8)}) "
        f"FROM read_blob('{d}/prefixscope.duckdb.wal')",
        f"SELECT max(strlen({chain})) FROM spans",
        f"SELECT max(strlen(concat({', '.join(['attributes'] * 8)}))) FROM spans",
        "SELECT max(strlen(concat_ws(',', events, events, attributes))) FROM spans",
        "SELECT strlen(string_agg(attributes::varchar, '')) FROM spans",
        "SELECT max(strlen(printf('%s%s%s', attributes, attributes, attributes))) FROM spans",
        "SELECT len(list_concat(l, l)) FROM (SELECT list(attributes) l FROM spans)",
        "SELECT max(strlen(x || x)) FROM (SELECT attributes::varchar AS x FROM spans)",
        # an alias that takes a small column's name is not that column
        "SELECT max(strlen(trace_id || trace_id)) "
        "FROM (SELECT attributes::varchar AS trace_id FROM spans)",
        "WITH t(span_id) AS (SELECT resource::varchar FROM spans) SELECT span_id || span_id FROM t",
        f"SELECT max(strlen({'||'.join(['prefix_id'] * 64)})) FROM spans",
    ]
    files = [
        f"SELECT size FROM read_blob('{d}/prefixscope.duckdb')",
        f"SELECT size FROM read_blob('{d}/prefixscope.duckdb.wal')",
        f"SELECT * FROM read_blob('{d}/prefixscope.duckdb.tmp/**')",
        f"SELECT * FROM read_text('{lake}/../prefixscope.duckdb')",
        f"SELECT * FROM read_duckdb('{d}/prefixscope.duckdb')",
        f"SELECT * FROM glob('{lake}/**')",
    ]
    before = vm_hwm_mb(sql_server.proc.pid)
    for query in too_large + files:
        resp = sql(sql_server, query)
        assert resp.status_code == 400, (query, resp.text)
        body = resp.json()
        if query in files:
            assert body["code"] == "forbidden", (query, body)
            assert "only Parquet files under the data lake's table folders" in body["message"]
        else:
            assert body["code"] == "value_too_large", (query, body)
            assert "2,048 rows" in body["message"], body
    assert vm_hwm_mb(sql_server.proc.pid) - before < 64
    # bounded parts still concatenate, and the lake's Parquet files still read
    ok = sql(
        sql_server, "SELECT max(prefix_id || '@' || left(attributes::varchar, 100)) FROM spans"
    )
    assert ok.status_code == 200, ok.text
    # a cast to a number, time or id is a few bytes, whatever the column it reads
    for query in (
        "SELECT 'r' || i::BIGINT FROM range(3) t(i)",
        "SELECT max(concat(attributes::varchar::TIMESTAMPTZ, '/', x::DECIMAL(10, 2))) "
        "FROM spans, (SELECT 1 AS x) WHERE false",
    ):
        resp = sql(sql_server, query)
        assert resp.status_code == 200, (query, resp.text)
    resp = sql(sql_server, "SELECT 'r' || i::VARCHAR FROM range(3) t(i)")
    assert resp.json()["code"] == "value_too_large", resp.text
    ok = sql(sql_server, f"SELECT sum(a) FROM read_parquet('{lake}/custom/*.parquet')")
    assert ok.status_code == 200 and ok.json()["rows"] == [[6]], ok.text


def _copies(n: int, value: str = "attributes::varchar") -> str:
    return ", ".join([value] * n)


#: Issue 35, after the concatenation check: calls that copy one value many times without a
#: concatenation (lists, JSON, structs, encodings, replace, split), each with the construct the
#: refusal must name. ``{blob}`` is a Parquet file of the lake, read whole by read_blob.
COPYING = [
    (f"SELECT max(strlen(array_to_string([{_copies(8)}], ''))) FROM spans", "list_value()"),
    (
        "SELECT max(strlen(array_to_string(["
        + ", ".join([f"array_to_string([{_copies(8)}], '')"] * 8)
        + "], ''))) FROM spans",
        "list_value()",
    ),
    (f"SELECT max(strlen(list_string_agg([{_copies(8)}]))) FROM spans", "list_value()"),
    (
        f"SELECT max(strlen(list_aggregate(list_value({_copies(2)}), 'string_agg', ''))) "
        "FROM spans",
        "list_value()",
    ),
    (f"SELECT max(strlen(json_array({_copies(4)}))) FROM spans", "json_array()"),
    (f"SELECT max(strlen(to_json([{_copies(8)}]))) FROM spans", "list_value()"),
    ("SELECT max(strlen(to_json(attributes::varchar))) FROM spans", "to_json()"),
    (
        "SELECT max(strlen(struct_pack("
        + ", ".join(f"k{i} := attributes::varchar" for i in range(8))
        + ")::varchar)) FROM spans",
        "struct_pack()",
    ),
    ("SELECT octet_length(" + "hex(" * 8 + "content" + ")" * 8 + ") FROM {blob}", "hex()"),
    (
        "SELECT octet_length(" + "to_base64(" * 8 + "content" + ")" * 8 + ") FROM {blob}",
        "to_base64()",
    ),
    ("SELECT max(strlen(replace(attributes::varchar, 'a', 'aaaaaaaa'))) FROM spans", "replace()"),
    ("SELECT max(strlen(replace(attributes::varchar, 'a', name))) FROM spans", "replace()"),
    ("SELECT max(len(string_split(attributes::varchar, ''))) FROM spans", "string_split()"),
    (
        "SELECT strlen(string_agg(name, '') OVER (ORDER BY start_time)) FROM spans",
        "string_agg() OVER",
    ),
    ("SELECT len(list(prefix_id) OVER (ORDER BY start_time)) FROM spans", "list() OVER"),
    (
        "SELECT max(strlen(regexp_replace(attributes::varchar, '', 'xx', 'g'))) FROM spans",
        "regexp_replace()",
    ),
    (f"SELECT max(len(map([{_copies(4)}], [{_copies(4)}]))) FROM spans", "list_value()"),
    # a bounded column, 64 times: bounded, but 64 x --max-attribute-bytes per row
    (
        f"SELECT max(strlen(array_to_string([{_copies(64, 'prefix_id')}], ''))) FROM spans",
        "list_value()",
    ),
]


def test_copies_of_a_value_are_refused_whatever_builds_them(sql_server: ServerProcess) -> None:
    """Issue 35: every call is bounded by its inputs, not only the concatenations: lists,
    JSON, structs, hex/base64, replace and split that copy a value of no known size are
    refused before they run, naming the call, and RSS stays put."""
    _post_big_spans(sql_server)
    assert sql_server.proc is not None
    blob = f"read_blob('{lake_dir(sql_server)}/custom/inside.parquet')"
    before = vm_hwm_mb(sql_server.proc.pid)
    for template, construct in COPYING:
        query = template.replace("{blob}", blob)
        resp = sql(sql_server, query)
        assert resp.status_code == 400, (query, resp.text)
        body = resp.json()
        assert body["code"] == "value_too_large", (query, body)
        assert body["message"].startswith(construct), (construct, body["message"])
        assert "2,048 rows" in body["message"], body
    assert vm_hwm_mb(sql_server.proc.pid) - before < 64
    # one copy of such a value, or a few bounded ones, still answers
    for query in (
        "SELECT max(strlen(hex(left(attributes::varchar, 1000)))) FROM spans",
        "SELECT max(strlen(replace(attributes::varchar, 'aaa', 'b'))) FROM spans",
        "SELECT max(len(string_split(left(prefix_id, 1000), ','))) FROM spans",
        "SELECT max(strlen(array_to_string([prefix_id, 'x'], '/'))) FROM spans",
        "SELECT max(strlen(coalesce(json_extract_string(attributes, '$.x'), name))) FROM spans",
        f"SELECT octet_length(content) FROM {blob}",
    ):
        resp = sql(sql_server, query)
        assert resp.status_code == 200, (query, resp.text)


def test_the_heaviest_accepted_query_keeps_rss_within_the_budget(tmp_path: Path) -> None:
    """The bound on what one row may build (MAX_CONCAT_BYTES) is what keeps an accepted query
    within the server's memory: the longest chain of bounded values it accepts, built over
    4,096 spans whose every value is at its bound (two vectors of 2,048 rows), keeps the
    server's peak RSS within its budget (store + SQL + the server's own ~400 MB), and answers
    with the generator's figure unless the watchdog stops it first."""
    from prefixscope.api.sql_sizes import MAX_CONCAT_BYTES

    store_mb, sql_mb, attribute_bytes = 1024, 256, 16 * 1024
    srv = ServerProcess(
        tmp_path / "data",
        ["--store-memory-mb", str(store_mb), "--sql-memory-mb", str(sql_mb),
         "--max-attribute-bytes", str(attribute_bytes), "--sql-timeout-s", "60",
         "--lake-roll-interval-s", "0"],
    ).start()  # fmt: skip
    try:
        assert srv.proc is not None
        size, spans, batch = attribute_bytes - 100, 4096, 128
        now = time.time_ns()
        for start in range(0, spans, batch):
            body = {"resourceSpans": [{"scopeSpans": [{"spans": [
                {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "chat",
                 "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000),
                 "attributes": [{"key": "prefix.id",
                                 "value": {"stringValue": chr(97 + i % 26) * size}}]}
                for i in range(start, start + batch)
            ]}]}]}  # fmt: skip
            resp = httpx.post(f"{srv.base_url}/v1/traces", json=body, timeout=60)
            assert resp.status_code == 200, resp.text
        # the longest chain of one attribute column the bound accepts: every intermediate
        # result of prefix_id || prefix_id || ... counts (2, 3, ... columns and 16 bytes each)
        copies = 1
        while sum(j * attribute_bytes + 16 * (j - 1) for j in range(2, copies + 2)) <= (
            MAX_CONCAT_BYTES
        ):
            copies += 1
        assert copies >= 3
        query = f"SELECT count(*), max(strlen({' || '.join(['prefix_id'] * copies)})) FROM spans"
        base_mb = vm_hwm_mb(srv.proc.pid)
        resp = sql(srv, query)
        peak_mb = vm_hwm_mb(srv.proc.pid)
        # every value at its bound is the worst case: the watchdog (the second defence, which
        # counts the scan's pages too) may stop it; either way RSS stays within the budget
        if resp.status_code == 200:
            assert resp.json()["rows"] == [[spans, copies * size]]
        else:
            assert resp.json()["code"] == "memory_limit", resp.text
        assert peak_mb < store_mb + sql_mb + 400, (base_mb, peak_mb)
        # one copy more is refused before it runs
        more = query.replace("(prefix_id || ", "(prefix_id || prefix_id || ")
        resp = sql(srv, more)
        assert resp.status_code == 400 and resp.json()["code"] == "value_too_large", resp.text
    finally:
        srv.stop()


def test_a_link_in_the_lake_is_not_followed_out(tmp_path: Path) -> None:
    from prefixscope.api.sql_files import check_path

    lake = tmp_path / "lake"
    (lake / "spans").mkdir(parents=True)
    (tmp_path / "prefixscope.duckdb").write_bytes(b"secret")
    (lake / "spans" / "a.parquet").symlink_to(tmp_path / "prefixscope.duckdb")
    for path in (f"{lake}/spans/*.parquet", f"{lake}/spans/a.parquet", f"{lake}/x.parquet"):
        with pytest.raises(QueryError, match="only Parquet files under"):
            check_path(path, lake)
    (lake / "spans" / "a.parquet").unlink()
    check_path(f"{lake}/spans/**/*.parquet", tmp_path / "x" / ".." / "lake")  # no link: allowed
