"""``prefixscope.client.Client`` against the real server (tokens on): SQL answers as Arrow,
polars and pandas hold the traffic sent; scorecard, alerts and acks; scores and feedback on
the current span; the prefix registry; every error typed, with the server's message."""

from __future__ import annotations

import datetime as dt
import io
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider

from prefixscope.client import (
    AuthError,
    BadQuery,
    Client,
    ClientTimeout,
    InvalidRequest,
    NotFound,
    QueryTimeout,
    ResultTruncated,
    TransportError,
    Unavailable,
)
from prefixscope.collector.storage.store import Store
from tests.support.api_fixtures import insert_alert
from tests.support.serverproc import ServerProcess, free_port
from tests.support.sql_fixtures import TRACES, expected_request, seed

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial

WRITE, READ = "w-token", "r-token"
EXPORT_ROWS = 500
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("client") / "data"
    with Store(data) as store:
        insert_alert(store)
        insert_alert(store, id="alert-2", fingerprint="fp-2", metric="latency_p99")
    server = ServerProcess(
        data,
        [
            "--token", WRITE, "--read-token", READ,
            "--sql-export-max-rows", str(EXPORT_ROWS),
            "--sql-timeout-s", str(TIMEOUT_S),
            "--lake-roll-interval-s", "0",
        ],
    ).start()  # fmt: skip
    seed(server.base_url, WRITE)
    yield server
    server.stop()


@pytest.fixture
def client(srv: ServerProcess) -> Client:
    return Client(srv.base_url, token=WRITE, timeout=30)


def json_answer(srv: ServerProcess, query: str) -> dict[str, Any]:
    resp = httpx.post(
        f"{srv.base_url}/api/v1/sql",
        json={"sql": query},
        headers={"Authorization": f"Bearer {READ}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


REQUESTS = "SELECT * FROM requests ORDER BY trace_id"


def test_sql_answers_hold_the_traffic(srv: ServerProcess) -> None:
    result = Client(srv.base_url, token=READ).sql(REQUESTS)
    assert not result.truncated and len(result) == len(TRACES)
    table = result.to_arrow()
    assert isinstance(table, pa.Table)
    ref = json_answer(srv, REQUESTS)
    assert result.columns == ref["columns"]
    # the same rows as the JSON answer, column by column
    by_name = dict(zip(ref["columns"], zip(*ref["rows"], strict=True), strict=True))
    assert table.column("trace_id").to_pylist() == list(by_name["trace_id"])
    assert [t.isoformat() for t in table.column("start_time").to_pylist()] == list(
        by_name["start_time"]
    )
    assert table.column("span_ids").to_pylist() == list(by_name["span_ids"])
    # ... and the traffic sent
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
    for row, t in zip(rows, TRACES, strict=True):
        want = expected_request(t)
        assert row["span_id"] == want["span_id"] and row["prefix_id"] == want["prefix_id"]
        assert row["scores"] == want["scores"] and row["feedback"] == want["feedback"]
        assert sorted(row["span_ids"]) == want["span_ids"]
        assert row["start_time"] == t.start + dt.timedelta(milliseconds=5)
        assert json.loads(row["cohort"]) == want["cohort"]


def test_to_polars_and_to_pandas(client: Client) -> None:
    import pandas as pd
    import polars as pl

    result = client.sql(REQUESTS)
    df = result.to_polars()
    assert isinstance(df, pl.DataFrame) and df.height == len(TRACES)
    assert df.schema["start_time"] == pl.Datetime("us")
    assert df.schema["span_ids"] == pl.List(pl.String)
    assert df["output_tokens"].to_list() == [t.output_tokens for t in TRACES]  # NULLs kept
    n_by_prefix = dict(df.group_by("prefix_id").len().iter_rows())
    for prefix in ("radiology", "cardio", None):
        assert n_by_prefix[prefix] == sum(t.prefix_id == prefix for t in TRACES)
    pdf = result.to_pandas()
    assert isinstance(pdf, pd.DataFrame) and list(pdf.columns) == result.columns
    assert str(pdf["start_time"].dtype).startswith("datetime64")
    assert pdf["error"].tolist() == [t.error for t in TRACES]
    assert pdf["input_tokens"].tolist() == [t.input_tokens for t in TRACES]


def test_download_writes_the_answer_or_nothing(client: Client, tmp_path: Path) -> None:
    out = tmp_path / "requests.parquet"
    answer = client.download(REQUESTS, out, format="parquet")
    assert answer.rows == len(TRACES) and not answer.truncated
    assert pq.read_table(out).column("trace_id").to_pylist() == [t.trace_id for t in TRACES]
    buf = io.BytesIO()
    client.download("SELECT 1 AS one", buf, format="csv")
    assert buf.getvalue() == b'"one"\n1\n'
    bad = tmp_path / "bad.parquet"
    with pytest.raises(BadQuery):
        client.download("SELECT nope", bad, format="parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requests.parquet"]


def test_a_cut_answer_warns(client: Client) -> None:
    with pytest.warns(ResultTruncated, match=f"cut at {EXPORT_ROWS} rows"):
        result = client.sql("SELECT i FROM range(2000) t(i) ORDER BY i")
    assert result.truncated and result.truncated_by == "rows"
    assert result.to_arrow().column("i").to_pylist() == list(range(EXPORT_ROWS))


def test_bad_sql_is_bad_query_with_the_servers_message(client: Client) -> None:
    query = "SELECT trace_id\nFROM spans WHERE WHERE"
    with pytest.raises(BadQuery) as err:
        client.sql(query)
    assert err.value.status == 400 and err.value.code == "syntax_error"
    assert err.value.position == query.index("WHERE WHERE") + len("WHERE ")
    assert 'syntax error at or near "WHERE"' in err.value.message
    with pytest.raises(BadQuery) as forbidden:
        client.sql("DROP TABLE spans")
    assert forbidden.value.code == "forbidden"
    assert "DROP statements are not allowed" in str(forbidden.value)


def test_tokens(srv: ServerProcess) -> None:
    with pytest.raises(AuthError) as unknown:
        Client(srv.base_url, token="wrong").sql("SELECT 1")
    assert unknown.value.status == 401 and unknown.value.kind == "unauthorized"
    with pytest.raises(AuthError) as missing:
        Client(srv.base_url, token="").alerts()
    assert missing.value.status == 401
    with pytest.raises(AuthError) as scope:
        Client(srv.base_url, token=READ).ack("alert-2")
    assert scope.value.status == 403 and scope.value.message
    # nothing changed
    assert Client(srv.base_url, token=READ).alert("alert-2")["status"] == "open"


def test_timeouts(srv: ServerProcess, client: Client) -> None:
    runaway = "SELECT sum(a * b) FROM range(1000000000000) t(a), range(3) u(b)"
    with pytest.raises(QueryTimeout) as server_side:
        client.sql(runaway)
    assert server_side.value.status == 408 and server_side.value.code == "timeout"
    assert f"{TIMEOUT_S:g}s time limit" in server_side.value.message
    impatient = Client(srv.base_url, token=WRITE, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ClientTimeout, match=r"within 0\.3s"):
        impatient.sql(runaway)
    assert time.monotonic() - started < TIMEOUT_S
    time.sleep(TIMEOUT_S + 0.5)  # the server's own limit ends the abandoned query
    assert client.sql("SELECT 42 AS x").rows == [(42,)]


def test_other_errors(srv: ServerProcess, client: Client) -> None:
    with pytest.raises(NotFound, match="no alert with id 'nope'"):
        client.ack("nope")
    with pytest.raises(InvalidRequest) as invalid:
        client.scores.log("Groundedness", 2.0, trace_id="ab" * 16)
    assert invalid.value.status == 422 and "less than or equal to 1" in invalid.value.message
    with pytest.raises(TransportError, match="cannot reach"):
        Client(f"http://127.0.0.1:{free_port()}").alerts()
    with pytest.raises(ValueError, match="http"):
        Client("ftp://example")


def test_too_many_queries_is_unavailable_with_retry_after(client: Client) -> None:
    runaway = "SELECT sum(a * b) FROM range(1000000000000) t(a), range(3) u(b)"
    errors: list[Exception] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            client.sql(runaway)
        except Exception as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    shed = [e for e in errors if isinstance(e, Unavailable)]
    assert shed and all(e.status == 429 and e.retry_after == 1.0 for e in shed), errors
    assert len(errors) == 7 and all(isinstance(e, Unavailable | QueryTimeout) for e in errors)


def test_alerts_and_ack(client: Client) -> None:
    open_ids = {a["id"] for a in client.alerts(status="open")}
    assert open_ids == {"alert-1", "alert-2"}
    alert = client.alert("alert-1")
    assert (alert["prefix_id"], alert["metric"], alert["cohort"]) == (
        "radiology",
        "Groundedness",
        {"specialty": "radiology"},
    )
    acked = client.ack("alert-1")
    assert acked["id"] == "alert-1" and acked["status"] == "acked"
    assert client.ack("alert-1")["status"] == "acked"  # idempotent
    assert {a["id"] for a in client.alerts(status="open")} == {"alert-2"}
    assert [a["id"] for a in client.alerts(status="acked")] == ["alert-1"]
    assert {a["id"] for a in client.alerts()} == {"alert-1", "alert-2"}
    assert [a["id"] for a in client.alerts(metric="latency_p99")] == ["alert-2"]


def test_scores_and_feedback_go_on_the_current_span(srv: ServerProcess, client: Client) -> None:
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("answer") as span:
        ctx = span.get_span_context()
        trace_id = otel_trace.format_trace_id(ctx.trace_id)
        span_id = otel_trace.format_span_id(ctx.span_id)
        written = client.scores.log("Helpfulness", 0.75, reason="cites the guideline")
        client.feedback.log("thumbs_up", comment="clear")
        client.feedback.log("rating", 4.0)
    assert written["inserted"] == 1 and written["unknown_trace_ids"] == [trace_id]
    scores = json_answer(
        srv,
        f"SELECT trace_id, span_id, name, value, reason FROM scores WHERE trace_id = '{trace_id}'",
    )["rows"]
    assert scores == [[trace_id, span_id, "Helpfulness", 0.75, "cites the guideline"]]
    feedback = json_answer(
        srv,
        "SELECT trace_id, span_id, kind, value, comment FROM feedback "
        f"WHERE trace_id = '{trace_id}' ORDER BY kind",
    )["rows"]
    assert feedback == [
        [trace_id, span_id, "rating", 4.0, None],
        [trace_id, span_id, "thumbs_up", 1.0, "clear"],
    ]
    # explicit ids win; a trace id alone is trace-level feedback
    other = TRACES[3].trace_id
    with tracer.start_as_current_span("elsewhere"):
        client.feedback.log("escalation", trace_id=other)
    assert json_answer(
        srv,
        f"SELECT span_id, kind FROM feedback WHERE trace_id = '{other}' AND kind = 'escalation'",
    )["rows"] == [[None, "escalation"]]
    # outside any span and without ids: refused before anything is sent
    with pytest.raises(ValueError, match="no trace_id given and no current span"):
        client.scores.log("Helpfulness", 0.5)


def test_prefix_registration(srv: ServerProcess, client: Client) -> None:
    info = client.prefixes.register(
        "dermatology",
        base_model="llama-3-8b",
        prefix_type="lora",
        version="4",
        served_model_names=["derm-v4"],
        owner="skin-team",
    )
    assert info["registered"] is True and info["served_model_names"] == ["derm-v4"]
    assert client.prefixes.get("dermatology")["owner"] == "skin-team"
    assert "dermatology" in {p["prefix_id"] for p in client.prefixes.list()}
    rows = json_answer(
        srv, "SELECT base_model, prefix_type, version FROM prefixes WHERE prefix_id = 'dermatology'"
    )["rows"]
    assert rows == [["llama-3-8b", "lora", "4"]]
    with pytest.raises(NotFound):
        client.prefixes.get("never-seen")


def test_scorecard(client: Client) -> None:
    card = client.scorecard(["prefix_id"], metrics=["Groundedness"])
    assert card["group_by"] == ["prefix_id"]
    rows = {r["group"]["prefix_id"]: r for r in card["rows"]}
    for name, prefix in (("radiology", "radiology"), ("cardio", "cardio"), ("base", None)):
        mine = [t for t in TRACES if t.prefix_id == prefix]
        assert rows[name]["n"] == len(mine)
        scores = [t.score for t in mine if t.score is not None]
        got = rows[name]["metrics"]["Groundedness"]
        assert got["n"] == len(scores)
        assert got["value"] == pytest.approx(statistics.mean(scores))


BLOCKER = """
import importlib.abc, sys
SERVER_ONLY = {"duckdb", "pyarrow", "polars", "pandas", "numpy", "fastapi", "starlette",
               "uvicorn", "httpx", "click", "rich", "pydantic", "orjson", "scipy", "grpc"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in SERVER_ONLY:
            raise ImportError(f"No module named {name!r} (instrumentation-only install)")
sys.meta_path.insert(0, Block())
"""


def test_works_in_the_instrumentation_only_install(srv: ServerProcess) -> None:
    """With every server-side package unimportable, the client still logs scores and reads
    alerts; ``sql()`` says which package it needs."""
    script = (
        BLOCKER
        + f"""
from prefixscope.client import Client
c = Client({srv.base_url!r}, token={WRITE!r})
print(c.scores.log("Offline", 0.5, trace_id={TRACES[0].trace_id!r})["inserted"])
print(len(c.alerts()))
try:
    c.sql("SELECT 1")
except ImportError as exc:
    print(exc)
print(sorted(m for m in SERVER_ONLY if m in sys.modules))
"""
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "1" and lines[1] == "2"
    assert "Client.sql() needs pyarrow: pip install pyarrow" in lines[2]
    assert lines[3] == "[]"
