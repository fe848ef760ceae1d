"""``prefixscope sql`` and ``prefixscope alerts`` end to end: the CLI in a subprocess against
the real server, checked against the traffic sent and the server's JSON answer."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefixscope.collector.storage.store import Store
from tests.support.api_fixtures import insert_alert
from tests.support.serverproc import ServerProcess
from tests.support.sql_fixtures import TRACES, seed

TOKEN = "cli-token"
MAX_ROWS = 100


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("cli") / "data"
    with Store(data) as store:
        insert_alert(store)
        insert_alert(store, id="alert-2", fingerprint="fp-2", prefix_id="cardio", delta=-0.2)
    server = ServerProcess(
        data,
        ["--token", TOKEN, "--sql-max-rows", str(MAX_ROWS), "--sql-export-max-rows",
         str(2 * MAX_ROWS), "--lake-roll-interval-s", "0"],
    ).start()  # fmt: skip
    seed(server.base_url, TOKEN)
    yield server
    server.stop()


def cli(
    srv: ServerProcess,
    *args: str,
    stdin: str | None = None,
    server: bool = True,
    token: str | None = TOKEN,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "prefixscope.cli", *args]
    if server:
        cmd += ["--server", srv.base_url]
    if token is not None:
        cmd += ["--token", token]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFIXSCOPE_")}
    environ |= {"COLUMNS": "200"} | (env or {})
    return subprocess.run(
        cmd,
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        timeout=120,
        env=environ,
    )


def json_answer(srv: ServerProcess, query: str) -> dict[str, Any]:
    resp = httpx.post(
        f"{srv.base_url}/api/v1/sql",
        json={"sql": query},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


QUERY = (
    "SELECT trace_id, prefix_id, input_tokens, output_tokens, error, span_ids, scores "
    "FROM requests ORDER BY trace_id"
)


def test_sql_csv_to_stdout(srv: ServerProcess) -> None:
    """Piped (no terminal), the default is CSV: one line per request, NULL as empty."""
    proc = cli(srv, "sql", QUERY)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout.decode())))
    assert rows[0] == ["trace_id", "prefix_id", "input_tokens", "output_tokens", "error",
                       "span_ids", "scores"]  # fmt: skip
    assert len(rows) == len(TRACES) + 1
    for row, t in zip(rows[1:], TRACES, strict=True):
        assert row[:5] == [
            t.trace_id,
            t.prefix_id or "",
            str(t.input_tokens),
            "" if t.output_tokens is None else str(t.output_tokens),
            "true" if t.error else "false",
        ]
        assert sorted(json.loads(row[5])) == sorted([t.root_id, t.call_id])
        assert (json.loads(row[6]) if row[6] else None) == (
            None if t.score is None else {"Groundedness": t.score}
        )
    assert proc.stderr == b""


def test_sql_json_is_the_apis_answer(srv: ServerProcess) -> None:
    proc = cli(srv, "sql", QUERY, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    ref = json_answer(srv, QUERY)
    assert (body["columns"], body["rows"], body["truncated"]) == (
        ref["columns"],
        ref["rows"],
        False,
    )


def test_sql_to_files(srv: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "requests.parquet"
    proc = cli(srv, "sql", QUERY, "-o", str(out))  # the format from the suffix
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out} ({len(TRACES)} rows" in proc.stderr.decode()
    table = pq.read_table(out)
    assert table.column("trace_id").to_pylist() == [t.trace_id for t in TRACES]
    assert table.schema.field("span_ids").type == pa.list_(pa.string())
    assert table.column("output_tokens").to_pylist() == [t.output_tokens for t in TRACES]
    nd = tmp_path / "requests.jsonl"
    assert cli(srv, "sql", QUERY, "-o", str(nd)).returncode == 0
    lines = [json.loads(line) for line in nd.read_text().splitlines()]
    ref = json_answer(srv, QUERY)
    assert lines == [dict(zip(ref["columns"], r, strict=True)) for r in ref["rows"]]
    arrow = tmp_path / "x.bin"
    assert cli(srv, "sql", QUERY, "--format", "arrow", "-o", str(arrow)).returncode == 0
    with pa.ipc.open_stream(arrow.read_bytes()) as reader:
        assert reader.read_all().num_rows == len(TRACES)


def test_sql_table(srv: ServerProcess, tmp_path: Path) -> None:
    proc = cli(srv, "sql", "SELECT prefix_id, count(*) AS n FROM requests GROUP BY 1 ORDER BY 1",
               "--format", "table")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    assert "prefix_id" in text and "3 rows" in text
    lines = {line.replace("│", " ").split()[0]: line for line in text.splitlines() if "│" in line}
    for prefix, shown in (("cardio", "cardio"), ("radiology", "radiology"), (None, "NULL")):
        n = sum(t.prefix_id == prefix for t in TRACES)
        assert lines[shown].replace("│", " ").split() == [shown, str(n)]


def test_sql_from_stdin_and_env(srv: ServerProcess) -> None:
    proc = cli(
        srv,
        "sql",
        "-",
        "--format",
        "csv",
        stdin="SELECT count(*) AS n FROM spans",
        server=False,
        token=None,
        env={"PREFIXSCOPE_SERVER": srv.base_url, "PREFIXSCOPE_API_TOKEN": TOKEN},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f'"n"\n{2 * len(TRACES)}\n'.encode()


def test_sql_says_when_a_limit_cut_the_answer(srv: ServerProcess) -> None:
    query = "SELECT i FROM range(1000) t(i) ORDER BY i"
    proc = cli(srv, "sql", query, "--format", "csv")
    assert proc.returncode == 0
    assert proc.stdout.decode().split() == ['"i"', *map(str, range(2 * MAX_ROWS))]
    assert (
        f"cut at {2 * MAX_ROWS} rows by the server's row limit (--sql-export-max-rows)"
        in proc.stderr.decode()
    )
    proc = cli(srv, "sql", query, "--format", "json")
    assert len(json.loads(proc.stdout)["rows"]) == MAX_ROWS
    assert "(--sql-max-rows)" in proc.stderr.decode()


def test_sql_errors(srv: ServerProcess, tmp_path: Path) -> None:
    query = "SELECT trace_id\nFROM spans WHERE WHERE"
    proc = cli(srv, "sql", query)
    assert proc.returncode == 1 and proc.stdout == b""
    err = proc.stderr.decode()
    assert 'syntax error at or near "WHERE"' in err
    # the caret under the offending word of the offending line
    lines = err.splitlines()
    at = lines.index("  FROM spans WHERE WHERE")
    assert lines[at + 1] == "  " + " " * len("FROM spans WHERE ") + "^"
    bad = cli(srv, "sql", "SELECT 1", token="wrong")
    assert bad.returncode == 1 and "401" in bad.stderr.decode()
    out = tmp_path / "out.parquet"
    failed = cli(srv, "sql", "SELECT nope", "-o", str(out))
    assert failed.returncode == 1 and not out.exists() and list(tmp_path.iterdir()) == []
    binary = cli(srv, "sql", "SELECT 1", "--format", "parquet")
    assert binary.returncode == 2 and b"give it with -o FILE" in binary.stderr
    down = cli(
        srv, "sql", "SELECT 1", server=False, env={"PREFIXSCOPE_SERVER": "http://127.0.0.1:9"}
    )
    assert down.returncode == 1 and b"cannot reach http://127.0.0.1:9" in down.stderr


def test_alerts_list_and_ack(srv: ServerProcess) -> None:
    proc = cli(srv, "alerts", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {a["id"] for a in json.loads(proc.stdout)} == {"alert-1", "alert-2"}
    table = cli(srv, "alerts")
    assert table.returncode == 0, table.stderr
    text = table.stdout.decode()
    assert "alert-1" in text and "alert-2" in text and "radiology@3" in text
    assert "specialty=radiology" in text and "2 alerts" in text
    ack = cli(srv, "alerts", "ack", "alert-1")
    assert ack.returncode == 0, ack.stderr
    assert ack.stdout.decode().strip() == "alert-1: acked (radiology Groundedness)"
    still_open = json.loads(cli(srv, "alerts", "list", "--json").stdout)
    assert [a["id"] for a in still_open] == ["alert-2"]
    acked = json.loads(cli(srv, "alerts", "list", "--status", "acked", "--json").stdout)
    assert [(a["id"], a["status"]) for a in acked] == [("alert-1", "acked")]
    # group options work before the subcommand too
    before = cli(srv, "alerts", "--server", srv.base_url, "--token", TOKEN, "list", "--json",
                 server=False, token=None)  # fmt: skip
    assert before.returncode == 0 and len(json.loads(before.stdout)) == 1
    missing = cli(srv, "alerts", "ack", "nope")
    assert missing.returncode == 1 and "404: no alert with id 'nope'" in missing.stderr.decode()


def test_sql_on_a_terminal_is_a_table(srv: ServerProcess) -> None:
    """With a terminal on stdout and no --format, the answer is a table, not CSV."""
    import pty

    master, slave = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFIXSCOPE_")}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "prefixscope.cli", "sql", "SELECT 41 + 1 AS answer",
             "--server", srv.base_url, "--token", TOKEN],
            stdout=slave,
            stderr=subprocess.PIPE,
            timeout=120,
            env=environ | {"COLUMNS": "80", "TERM": "dumb"},
        )  # fmt: skip
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0, proc.stderr
    text = out.decode()
    assert "answer" in text and "42" in text and "1 row" in text and '"answer"' not in text
