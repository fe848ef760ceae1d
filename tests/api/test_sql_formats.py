"""``POST /api/v1/sql`` in every format, through the real server: each format holds the JSON
answer's rows and types (NULLs, zoned timestamps, JSON columns, lists, maps, the row limit),
and the rows of the traffic the test sent; negotiation, limits and errors."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from prefixscope.api.jsonsafe import json_safe
from prefixscope.api.sql_sandbox import SqlSandbox
from prefixscope.collector.storage.store import Store
from prefixscope.errors import QueryError
from tests.support.serverproc import ServerProcess
from tests.support.sql_fixtures import NOTE, TRACES, expected_request, seed

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial

MAX_ROWS = 300
EXPORT_MB = 1
TIMEOUT_S = 2.0
MEDIA = {
    "json": "application/json",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
}
EXPORTS = ["arrow", "parquet", "csv", "ndjson"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("formats") / "data"
    server = ServerProcess(
        data,
        [
            "--sql-max-rows",
            str(MAX_ROWS),
            "--sql-export-max-rows",
            str(MAX_ROWS),
            "--sql-export-max-mb",
            str(EXPORT_MB),
            "--sql-timeout-s",
            str(TIMEOUT_S),
            "--lake-roll-interval-s",
            "0",
        ],
    ).start()
    seed(server.base_url)
    yield server
    server.stop()


def post(
    srv: ServerProcess,
    query: str,
    accept: str | None = None,
    *,
    params: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    headers = {"Accept": accept} if accept is not None else {}
    return httpx.post(
        f"{srv.base_url}/api/v1/sql",
        json={"sql": query, **(body or {})},
        params=params,
        headers=headers,
        timeout=60,
    )


def answer(srv: ServerProcess, query: str, fmt: str) -> httpx.Response:
    resp = post(srv, query, MEDIA[fmt])
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].split(";")[0] == MEDIA[fmt]
    return resp


# -- reading each format back into JSON values --------------------------------------------------
def strict_equal(a: Any, b: Any) -> bool:
    """Equal values of equal JSON types (1 is not 1.0, NaN is NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(strict_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def assert_rows(got: list[list[Any]], want: list[list[Any]], columns: list[str]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        for name, x, y in zip(columns, g, w, strict=True):
            assert strict_equal(x, y), f"row {i} column {name}: {x!r} != {y!r}"


def arrow_rows(table: pa.Table) -> list[list[Any]]:
    """An Arrow table's rows as the JSON answer writes them (:mod:`prefixscope.api.jsonsafe`
    is the JSON answer's own conversion of DuckDB's Python values)."""
    cols = []
    for field, column in zip(table.schema, table.columns, strict=True):
        values = column.to_pylist(maps_as_pydicts="strict")
        if pa.types.is_decimal(field.type) and field.type.scale == 0:  # a HUGEINT
            values = [None if v is None else int(v) for v in values]
        cols.append(values)
    return [[json.loads(json.dumps(json_safe(v))) for v in row] for row in zip(*cols)]


def read_arrow(resp: httpx.Response) -> pa.Table:
    with pa.ipc.open_stream(resp.content) as reader:
        return reader.read_all()


def read_parquet(resp: httpx.Response) -> pa.Table:
    return pq.read_table(io.BytesIO(resp.content))


def read_ndjson(resp: httpx.Response, columns: list[str]) -> list[list[Any]]:
    lines = resp.content.decode().split("\n")
    assert lines[-1] == ""
    objects = [json.loads(line) for line in lines[:-1]]
    assert all(list(o) == columns for o in objects)
    return [list(o.values()) for o in objects]


def read_csv(resp: httpx.Response, columns: list[str]) -> list[list[str | None]]:
    """Every field as text; an unquoted empty field is NULL, a quoted one an empty string."""
    table = pa_csv.read_csv(
        io.BytesIO(resp.content),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    assert table.column_names == columns
    return [list(r) for r in zip(*(c.to_pylist() for c in table.columns))]


def csv_field_matches(field: str | None, value: Any, duck_type: str) -> bool:
    """A CSV field against the JSON answer's value for a column of DuckDB type ``duck_type``."""
    if value is None:
        return field is None
    if field is None:
        return False
    if isinstance(value, bool):
        return field == ("true" if value else "false")
    if duck_type in ("DOUBLE", "FLOAT") or duck_type.startswith("DECIMAL"):
        special = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}
        if isinstance(value, str):
            return field == special[value]
        return float(field) == value
    if isinstance(value, int):
        return field == str(value)
    if isinstance(value, str):
        return field == value
    return strict_equal(json.loads(field), value)  # lists, structs, maps: their JSON


#: DuckDB type → the Arrow type of an Arrow/Parquet answer (DuckDB's documented mapping)
ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "UUID": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
    "VARCHAR[]": pa.list_(pa.string()),
    "INTEGER[]": pa.list_(pa.int32()),
    "INTEGER[][]": pa.list_(pa.list_(pa.int32())),
    "MAP(VARCHAR, DOUBLE)": pa.map_(pa.string(), pa.float64()),
    "MAP(VARCHAR, BIGINT)": pa.map_(pa.string(), pa.int64()),
    "MAP(VARCHAR, INTEGER)": pa.map_(pa.string(), pa.int32()),
    "STRUCT(k VARCHAR, n INTEGER)": pa.struct([("k", pa.string()), ("n", pa.int32())]),
    "DECIMAL(5,2)": pa.decimal128(5, 2),
    "HUGEINT": pa.decimal128(38, 0),
}


def assert_arrow_types(schema: pa.Schema, types: list[str]) -> None:
    for field, duck in zip(schema, types, strict=True):
        if duck == "TIMESTAMP WITH TIME ZONE":
            assert pa.types.is_timestamp(field.type) and field.type.tz is not None, field
        elif duck.startswith("ENUM"):
            assert pa.types.is_dictionary(field.type), field
        elif duck == '"NULL"':
            assert pa.types.is_null(field.type), field
        else:
            # list item names differ between writers ("l", "element"): compare shapes
            assert field.type.equals(ARROW_TYPES[duck], check_metadata=False) or str(
                field.type
            ).replace("element", "l") == str(ARROW_TYPES[duck]).replace("element", "l"), (
                field.name,
                field.type,
                duck,
            )


#: literals of every awkward kind, then a row of NULLs
LITERALS = r"""SELECT * FROM (
SELECT 1 AS i, TIMESTAMP '2025-01-02 03:04:05.5' AS ts, TIMESTAMP '2025-01-02 03:04:05' AS ts0,
  TIMESTAMPTZ '2025-01-02 03:04:05.25+02' AS tstz, DATE '2025-01-02' AS d,
  '{"a": [1, {"b": null}], "q": "x\"y"}'::JSON AS j, [1, 2] AS l, [[1], [2, 3]] AS ll,
  ['a', NULL]::VARCHAR[] AS vl, MAP {'x': 1, 'y': 2} AS m, {'k': 'v', 'n': 7} AS s,
  'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, '-inf'::DOUBLE AS ninf, 0.1 ::DOUBLE AS f,
  1.0::DOUBLE AS f1, 1.25::DECIMAL(5,2) AS dec, 170141183460469231731687303715884105727::HUGEINT
  AS big, true AS b, E'q"uote\n\ttab\\ ü \x01' AS txt, '' AS empty,
  '00000000-0000-0000-0000-000000000001'::UUID AS u, 'x'::ENUM('x', 'y') AS e
UNION ALL
SELECT 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL) ORDER BY i"""

QUERIES = {
    "spans": "SELECT * FROM spans ORDER BY trace_id, span_id",
    "requests": "SELECT * FROM requests ORDER BY trace_id, span_id",
    "literals": LITERALS,
}


@pytest.mark.parametrize("fmt", EXPORTS)
@pytest.mark.parametrize("name", list(QUERIES))
def test_every_format_holds_the_json_answer(srv: ServerProcess, name: str, fmt: str) -> None:
    query = QUERIES[name]
    ref = answer(srv, query, "json").json()
    columns, types, want = ref["columns"], ref["types"], ref["rows"]
    assert ref["truncated"] is False and want
    resp = answer(srv, query, fmt)
    assert resp.headers["x-prefixscope-truncated"] == "false"
    assert resp.headers["x-prefixscope-rows"] == str(len(want))
    if fmt in ("arrow", "parquet"):
        table = read_arrow(resp) if fmt == "arrow" else read_parquet(resp)
        assert table.column_names == columns
        assert_arrow_types(table.schema, types)
        assert_rows(arrow_rows(table), want, columns)
    elif fmt == "ndjson":
        assert_rows(read_ndjson(resp, columns), want, columns)
    else:
        got = read_csv(resp, columns)
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            for name_, field, value, duck in zip(columns, g, w, types, strict=True):
                assert csv_field_matches(field, value, duck), (i, name_, field, value)


def test_the_answers_hold_the_traffic_sent(srv: ServerProcess) -> None:
    """The Arrow answer against the traffic itself (so a format cannot agree with a wrong
    JSON answer): every span, request, list of span ids and map of scores/feedback."""
    spans = read_arrow(answer(srv, QUERIES["spans"], "arrow")).to_pylist()
    assert [(s["trace_id"], s["span_id"]) for s in spans] == sorted(
        (t.trace_id, sid) for t in TRACES for sid in (t.root_id, t.call_id)
    )
    calls = {t.call_id: t for t in TRACES}
    for span in spans:
        t = calls.get(span["span_id"])
        if t is None:  # the HTTP root
            assert span["prefix_id"] is None and span["attributes"] == "{}"
            continue
        assert span["start_time"] == t.start + dt.timedelta(milliseconds=5)
        assert span["status_code"] == ("ERROR" if t.error else "OK")
        assert (span["prefix_id"], span["output_tokens"]) == (t.prefix_id, t.output_tokens)
        assert json.loads(span["attributes"])["note"] == NOTE
        assert json.loads(span["cohort"]) == {"specialty": t.specialty}
    table = read_arrow(answer(srv, QUERIES["requests"], "arrow"))
    assert table.schema.field("span_ids").type == pa.list_(pa.string())
    assert table.schema.field("scores").type == pa.map_(pa.string(), pa.float64())
    got = table.to_pylist(maps_as_pydicts="strict")
    assert len(got) == len(TRACES)
    for row, t in zip(got, TRACES, strict=True):
        want = expected_request(t)
        row = {k: row[k] for k in want} | {
            "span_ids": sorted(row["span_ids"]),
            "cohort": json.loads(row["cohort"]),
        }
        assert row == want


def test_a_row_limit_cuts_every_format_alike(srv: ServerProcess) -> None:
    query = "SELECT i, i * 0.5 AS half, 'r' || i::BIGINT AS label FROM range(1000) t(i) ORDER BY i"
    ref = answer(srv, query, "json")
    body = ref.json()
    assert body["truncated"] is True and len(body["rows"]) == MAX_ROWS
    assert ref.headers["x-prefixscope-truncated-by"] == "rows"
    assert body["rows"] == [[i, i * 0.5, f"r{i}"] for i in range(MAX_ROWS)]
    for fmt in EXPORTS:
        resp = answer(srv, query, fmt)
        assert resp.headers["x-prefixscope-truncated"] == "true", fmt
        assert resp.headers["x-prefixscope-truncated-by"] == "rows", fmt
        assert resp.headers["x-prefixscope-rows"] == str(MAX_ROWS), fmt
        if fmt == "arrow":
            assert arrow_rows(read_arrow(resp)) == body["rows"]
        elif fmt == "parquet":
            assert arrow_rows(read_parquet(resp)) == body["rows"]
        elif fmt == "ndjson":
            assert_rows(read_ndjson(resp, body["columns"]), body["rows"], body["columns"])
        else:
            assert read_csv(resp, body["columns"]) == [
                [str(i), str(i * 0.5), f"r{i}"] for i in range(MAX_ROWS)
            ]
    # exactly the limit is not cut
    exact = answer(srv, f"SELECT i FROM range({MAX_ROWS}) t(i)", "arrow")
    assert exact.headers["x-prefixscope-truncated"] == "false"
    assert read_arrow(exact).num_rows == MAX_ROWS


def test_a_size_limit_cuts_exports_at_the_configured_bytes(srv: ServerProcess) -> None:
    """200 rows of 10 kB are 2 MB of Arrow data: the export keeps the leading rows that fit
    in --sql-export-max-mb (1 MB) and says so."""
    query = "SELECT i, repeat('x', 10000) AS pad FROM range(200) t(i) ORDER BY i"
    for fmt in EXPORTS:
        resp = answer(srv, query, fmt)
        assert resp.headers["x-prefixscope-truncated"] == "true", fmt
        assert resp.headers["x-prefixscope-truncated-by"] == "bytes", fmt
        rows = int(resp.headers["x-prefixscope-rows"])
        assert 50 < rows < 105, rows  # ~1 MiB / 10 kB per row
        if fmt == "arrow":
            table = read_arrow(resp)
            assert table.num_rows == rows
            assert table.column("i").to_pylist() == list(range(rows))
            assert table.nbytes <= EXPORT_MB * 2**20


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (None, "json"),
        ("*/*", "json"),
        ("application/*", "json"),
        ("text/*", "csv"),
        ("text/html, text/csv;q=0.8", "csv"),
        ("application/json;q=0.5, application/vnd.apache.parquet", "parquet"),
        ("application/vnd.apache.arrow.stream;q=0, application/x-ndjson;q=0.1", "ndjson"),
        ("Application/VND.Apache.Arrow.Stream", "arrow"),
    ],
)
def test_accept_chooses_the_format(srv: ServerProcess, accept: str | None, fmt: str) -> None:
    resp = post(srv, "SELECT 1 AS one", accept)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].split(";")[0] == MEDIA[fmt]


def test_format_parameter_overrides_accept(srv: ServerProcess) -> None:
    for how in ({"params": {"format": "csv"}}, {"body": {"format": "csv"}}):
        resp = post(srv, "SELECT 1 AS one", "application/vnd.apache.arrow.stream", **how)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/csv")
        assert resp.text == '"one"\n1\n'
    by_media = post(srv, "SELECT 1 AS one", params={"format": "application/x-ndjson"})
    assert by_media.text == '{"one":1}\n'
    clash = post(srv, "SELECT 1", params={"format": "csv"}, body={"format": "arrow"})
    assert clash.status_code == 400 and "format given twice" in clash.json()["message"]


@pytest.mark.parametrize(
    ("accept", "params"),
    [
        ("text/html", None),
        ("application/xml, image/png", None),
        ("application/vnd.apache.arrow.file", None),
        ("application/json;q=0", None),
        (None, {"format": "xlsx"}),
    ],
)
def test_unsupported_format_is_406_naming_the_supported(
    srv: ServerProcess, accept: str | None, params: dict[str, str] | None
) -> None:
    resp = post(srv, "SELECT 1", accept, params=params)
    assert resp.status_code == 406, resp.text
    body = resp.json()
    assert body["error"] == "not_acceptable"
    for media in MEDIA.values():
        assert media in body["message"]


@pytest.mark.parametrize("fmt", EXPORTS)
def test_export_errors_are_json_errors(srv: ServerProcess, fmt: str) -> None:
    cases = [
        ("SELECT nope FROM spans", 400, "binder_error", '"nope" not found'),
        ("SELECT * FROM read_csv('/etc/passwd')", 400, "forbidden", "file and network access"),
        ("DELETE FROM scores", 400, "forbidden", "DELETE statements are not allowed"),
        # fails while the answer streams from DuckDB (the Arrow reader's error)
        (
            "SELECT (CASE WHEN i > 100 THEN 'x' ELSE i::VARCHAR END)::INT AS v "
            "FROM range(300000) t(i)",
            400,
            "query_error",
            "Could not convert string 'x'",
        ),
    ]
    for query, status, code, fragment in cases:
        resp = post(srv, query, MEDIA[fmt])
        assert resp.status_code == status, (query, resp.text)
        assert resp.headers["content-type"] == "application/json"
        assert resp.json()["code"] == code and fragment in resp.json()["message"], resp.text


def test_export_time_limit(srv: ServerProcess) -> None:
    started = time.monotonic()
    resp = post(
        srv, "SELECT sum(a * b) FROM range(1000000000000) t(a), range(3) u(b)", MEDIA["arrow"]
    )
    assert resp.status_code == 408, resp.text
    assert resp.json()["code"] == "timeout"
    assert time.monotonic() - started < TIMEOUT_S + 5
    assert read_arrow(answer(srv, "SELECT 42 AS x", "arrow")).to_pylist() == [{"x": 42}]


def test_intervals_and_blobs(srv: ServerProcess) -> None:
    """Types some formats cannot carry as they are: an INTERVAL is seconds in JSON, NDJSON,
    CSV and Parquet (which has no such type); a BLOB is base64 text."""
    query = "SELECT INTERVAL 90 SECOND AS iv, INTERVAL 1 MONTH AS month, 'ab'::BLOB AS b"
    assert answer(srv, query, "json").json()["rows"] == [[90.0, 2592000.0, "YWI="]]
    nd = answer(srv, query, "ndjson").content
    assert json.loads(nd) == {"iv": 90.0, "month": 2592000.0, "b": "YWI="}
    assert read_csv(answer(srv, query, "csv"), ["iv", "month", "b"]) == [["90", "2592000", "YWI="]]
    parquet = read_parquet(answer(srv, query, "parquet"))
    assert parquet.schema.field("iv").type == pa.float64()
    assert parquet.to_pylist() == [{"iv": 90.0, "month": 2592000.0, "b": b"ab"}]
    arrow = read_arrow(answer(srv, query, "arrow"))
    assert arrow.schema.field("iv").type == pa.month_day_nano_interval()
    assert arrow.column("b").to_pylist() == [b"ab"]


def test_empty_answers(srv: ServerProcess) -> None:
    query = "SELECT i, 'x' AS s FROM range(3) t(i) WHERE i > 5"
    assert read_arrow(answer(srv, query, "arrow")).schema.names == ["i", "s"]
    assert read_parquet(answer(srv, query, "parquet")).num_rows == 0
    assert answer(srv, query, "csv").text == '"i","s"\n'
    assert answer(srv, query, "ndjson").content == b""


def test_arrow_answers_build_no_python_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Arrow path never goes through the JSON path's Python rows: with those made to
    fail, it still answers, in record batches."""
    import prefixscope.api.sql_results as results_mod

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("Python rows were built")

    with Store(tmp_path / "d") as store:
        sandbox = SqlSandbox(store, timeout_s=10, max_rows=10)
        monkeypatch.setattr(results_mod, "json_safe_row", refuse)
        result = sandbox.run_arrow(
            "SELECT i, i::VARCHAR AS s FROM range(200000) t(i)",
            max_rows=150_000,
            max_bytes=2**30,
        )
        assert all(isinstance(b, pa.RecordBatch) for b in result.batches)
        assert result.num_rows == 150_000 and result.truncated_by == "rows"
        assert sum(b.num_rows for b in result.batches) == 150_000
        with pytest.raises(AssertionError, match="Python rows"):
            sandbox.run("SELECT 1")


def test_an_error_after_the_first_batches_is_a_query_error(tmp_path: Path) -> None:
    """DuckDB fails on row 100,001, long after the first batches were read: pyarrow's reader
    raises it (an OSError carrying DuckDB's message), the sandbox answers a QueryError."""
    with Store(tmp_path / "d") as store:
        sandbox = SqlSandbox(store, timeout_s=10, max_rows=10)
        query = (
            "SELECT (CASE WHEN i > 100000 THEN 'x' ELSE i::VARCHAR END)::INT AS v "
            "FROM range(300000) t(i)"
        )
        with pytest.raises(QueryError, match="Could not convert string 'x'") as err:
            sandbox.run_arrow(query, max_rows=10**6, max_bytes=2**30)
        assert err.value.code == "query_error"
        # the cursor is clean again: the next query answers
        assert sandbox.run_arrow("SELECT 1 AS x", max_rows=5, max_bytes=2**20).num_rows == 1


def _vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_exports_past_memory_are_stopped_while_ingest_goes_on(tmp_path: Path) -> None:
    """An export bigger than the server's memory is cut at --sql-export-max-mb, and a query
    whose work outgrows it is stopped with memory_limit; ingest is acknowledged throughout."""
    from tests.support.otlp import json_spans as _json_spans

    store_mb, sql_mb = 512, 128
    server = ServerProcess(
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
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/traces", json=_json_spans(i))
                (acked if r.status_code == 200 else failures).append(i)
                i += 1
                time.sleep(0.02)

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        # 6 GB of answer: cut at half of --sql-memory-mb (64 MB), not a crash
        big = post(server, "SELECT repeat('x', 6000) AS pad FROM range(1000000)", MEDIA["arrow"])
        assert big.status_code == 200, big.text
        assert big.headers["x-prefixscope-truncated-by"] == "bytes"
        assert 0 < read_arrow(big).nbytes <= (sql_mb // 2) * 2**20
        for query in (
            "SELECT length(string_agg(repeat('x', 1000), '')) AS n FROM range(100000000)",
            "SELECT len(list(i)) AS n FROM range(1000000000) t(i)",
        ):
            for fmt in ("arrow", "csv"):
                resp = post(server, query, MEDIA[fmt])
                assert resp.status_code == 400, (query, resp.text)
                assert resp.json()["code"] == "memory_limit", resp.text
        assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200
        assert server.proc is not None
        peak_mb = _vm_rss_mb(server.proc.pid)
    finally:
        stop.set()
        thread.join(30)
    try:
        assert not failures, failures[:3]
        assert len(acked) >= 5
        assert peak_mb < store_mb + sql_mb + 400, peak_mb
        count = post(server, "SELECT count(*) FROM spans").json()["rows"][0][0]
        assert count == 50 * len(acked)
    finally:
        server.stop()
