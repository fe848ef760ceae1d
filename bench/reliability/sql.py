"""SQL sandbox: escape attempts against ``POST /api/v1/sql`` of the real server.

The API issue's escape list plus more: functions that touch files or the network, extension
loading, configuration changes and probes, catalog/file side effects, resource exhaustion.
Every attempt names the defence expected to stop it (the error ``code`` of the answer:
``forbidden``, ``multiple_statements``, ``syntax_error``, ``value_too_large``, ``memory_limit``,
``timeout``, ``too_long``, or ``truncated`` for the row and byte caps). An attempt counts as
refused only when that defence answered (a 4xx whose code is one of those expected, or 200
with ``truncated: true`` within the cap); anything else (another 4xx such as an unexpected
408, a 200 with data, a 5xx, a hang) is an escape. A file planted outside the data dir must
never be read.

Usage:  .venv/bin/python bench/reliability/sql.py [--timeout-s 2] [--max-rows 1000] [--only LABEL]
"""

from __future__ import annotations

import argparse
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from bench.reliability.common import (
    Report,
    ServerProcess,
    main_exit,
    post,
    scratch_dir,
    vm_hwm_mb,
    workload_request,
)

#: The defence expected for attempts not listed in EXPECTED: the statement/tree check or the
#: engine's file and extension sandbox.
DEFAULT_DEFENCE = frozenset({"forbidden"})
#: Attempts stopped by another defence.
EXPECTED: dict[str, frozenset[str]] = {
    "multiple statements": frozenset({"multiple_statements"}),
    "multiple statements, comment": frozenset({"multiple_statements"}),
    "runaway cross join (timeout)": frozenset({"timeout", "memory_limit"}),
    "getenv": frozenset({"binder_error"}),  # not a function of the embedded engine at all
    "write via COPY in CTE": frozenset({"syntax_error"}),  # not valid SQL
    "huge result (truncated)": frozenset({"truncated"}),
    "huge range() aggregation": frozenset({"timeout"}),
    "huge string repeat": frozenset({"value_too_large"}),
    "huge string returned": frozenset({"value_too_large"}),
    # growth-bound: the watchdog normally answers first; on a slow moment the 1 s clock can
    "string_agg memory": frozenset({"memory_limit", "timeout"}),
    "recursive CTE unbounded": frozenset({"memory_limit", "timeout"}),
    "sort huge": frozenset({"timeout", "memory_limit"}),
    "very long SQL": frozenset({"too_long", "unprocessable"}),  # request validation (422)
    "list aggregate memory": frozenset({"memory_limit", "timeout"}),
    "wide rows over the byte cap": frozenset({"truncated"}),
    # the size check sees the chain before the file check sees the file: either refuses
    "|| x8 over the WAL": frozenset({"value_too_large", "forbidden"}),
    "|| x8 over attributes": frozenset({"value_too_large"}),
    "concat() x8 over attributes": frozenset({"value_too_large"}),
    "concat_ws() over events": frozenset({"value_too_large"}),
    "string_agg of attributes": frozenset({"value_too_large"}),
    "list_concat of aggregates": frozenset({"value_too_large"}),
    "printf %s of attributes": frozenset({"value_too_large"}),
    "nested: concat(a || a, format(...))": frozenset({"value_too_large"}),
    "|| through an alias": frozenset({"value_too_large"}),
    "|| x64 of a bounded column": frozenset({"value_too_large"}),
    "|| through an alias named like a small column": frozenset({"value_too_large"}),
    # issue 35's audit (COPYING, value_too_large): the size check or the file check refuses
    "hex() nested x8 over the WAL": frozenset({"value_too_large", "forbidden"}),
}


A = "attributes::varchar"


def _n(n: int, value: str = A) -> str:
    return ", ".join([value] * n)


#: Issue 35's audit: calls that copy one large value many times with no ``||`` in sight.
#: ``{d}`` is the data dir. (label, sql)
COPYING = [
    ("array_to_string of [a x8]", f"SELECT max(strlen(array_to_string([{_n(8)}], ''))) FROM spans"),
    ("array_to_string nested x64",
     "SELECT max(strlen(array_to_string([" + ", ".join([f"array_to_string([{_n(8)}], '')"] * 8)
     + "], ''))) FROM spans"),
    ("list_string_agg of [a x8]", f"SELECT max(strlen(list_string_agg([{_n(8)}]))) FROM spans"),
    ("list_aggregate string_agg", f"SELECT max(strlen(list_aggregate(list_value({_n(2)}), 'string_agg', ''))) FROM spans"),  # noqa: E501
    ("json_array(a x4)", f"SELECT max(strlen(json_array({_n(4)}))) FROM spans"),
    ("to_json([a x8])", f"SELECT max(strlen(to_json([{_n(8)}]))) FROM spans"),
    ("struct_pack(a x8)::varchar", "SELECT max(strlen(struct_pack(" + ", ".join(f"k{i} := {A}" for i in range(8)) + ")::varchar)) FROM spans"),  # noqa: E501
    ("hex() nested x8 over the WAL", "SELECT octet_length(" + "hex(" * 8 + "content" + ")" * 8 + ") FROM read_blob('{d}/prefixscope.duckdb.wal')"),  # noqa: E501
    ("hex() nested x8 over attributes", "SELECT max(strlen(" + "hex(" * 8 + A + ")" * 8 + ")) FROM spans"),  # noqa: E501
    ("to_base64() nested x8 over attributes", "SELECT max(strlen(" + "to_base64(" * 8 + A + ")" * 8 + ")) FROM spans"),  # noqa: E501
    ("replace() with a longer constant", f"SELECT max(strlen(replace({A}, 'a', 'aaaaaaaa'))) FROM spans"),  # noqa: E501
    ("replace() with a computed replacement", f"SELECT max(strlen(replace({A}, 'a', name))) FROM spans"),  # noqa: E501
    ("string_split() into bytes", f"SELECT max(len(string_split({A}, ''))) FROM spans"),
    ("regexp_replace() of every empty match", f"SELECT max(strlen(regexp_replace({A}, '', 'xx', 'g'))) FROM spans"),  # noqa: E501
    ("array_to_string of [prefix_id x64]", f"SELECT max(strlen(array_to_string([{_n(64, 'prefix_id')}], ''))) FROM spans"),  # noqa: E501
    ("string_agg() as a running window", f"SELECT strlen(string_agg({A}, '') OVER (ORDER BY start_time)) FROM spans"),  # noqa: E501
]  # fmt: skip


def attempts(outside: Path, data: Path) -> list[tuple[str, str]]:
    """(label, sql). ``outside`` is a planted file outside the data dir; ``data`` the data dir."""
    o, d = str(outside), str(data)
    return [
        # -- the API issue's list ------------------------------------------------------------
        ("read_csv /etc/passwd", "SELECT * FROM read_csv('/etc/passwd')"),
        ("read_csv_auto planted file", f"SELECT * FROM read_csv_auto('{o}')"),
        ("read_parquet outside data dir", f"SELECT * FROM read_parquet('{o}')"),
        ("read_parquet ../ traversal", f"SELECT * FROM read_parquet('{d}/lake/../../x.parquet')"),
        ("ATTACH", f"ATTACH '{o}.db' AS x"),
        ("ATTACH in-memory", "ATTACH ':memory:' AS m"),
        ("COPY TO", f"COPY spans TO '{o}.csv'"),
        ("COPY (query) TO", f"COPY (SELECT 1) TO '{o}.parquet' (FORMAT parquet)"),
        ("COPY FROM", f"COPY spans FROM '{o}'"),
        ("INSTALL", "INSTALL httpfs"),
        ("LOAD", "LOAD httpfs"),
        ("FORCE INSTALL", "FORCE INSTALL json"),
        ("SET", "SET enable_external_access = true"),
        ("SET lock_configuration", "SET lock_configuration = false"),
        ("RESET", "RESET allowed_directories"),
        ("PRAGMA", "PRAGMA enable_profiling"),
        ("PRAGMA database_list", "PRAGMA database_list"),
        ("CREATE TABLE", "CREATE TABLE x AS SELECT 1"),
        ("CREATE MACRO", "CREATE MACRO m(a) AS a"),
        ("CREATE SECRET", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')"),
        ("INSERT", "INSERT INTO scores VALUES ('a', NULL, 'x', 0.5, NULL, NULL, NULL, now())"),
        ("UPDATE", "UPDATE spans SET name = 'x'"),
        ("DELETE", "DELETE FROM spans"),
        ("DROP", "DROP TABLE spans"),
        ("ALTER", "ALTER TABLE spans ADD COLUMN x INT"),
        ("multiple statements", "SELECT 1; DROP TABLE spans"),
        ("multiple statements, comment", "SELECT 1; -- x\nDELETE FROM spans"),
        ("data-modifying CTE", "WITH d AS (DELETE FROM spans RETURNING *) SELECT * FROM d"),
        ("runaway cross join (timeout)",
         "SELECT count(*) FROM range(100000000) a, range(100000000) b"),
        ("huge result (truncated)", "SELECT * FROM range(10000000)"),
        # -- more: files and network ---------------------------------------------------------
        ("glob /", "SELECT * FROM glob('/*')"),
        ("glob data dir", f"SELECT * FROM glob('{d}/*')"),
        ("read_text /etc/passwd", "SELECT * FROM read_text('/etc/passwd')"),
        ("read_blob planted file", f"SELECT * FROM read_blob('{o}')"),
        ("read_json planted file", f"SELECT * FROM read_json('{o}')"),
        ("read_json_auto http URL", "SELECT * FROM read_json_auto('http://127.0.0.1:9/x.json')"),
        ("read_csv http URL", "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')"),
        ("read_parquet s3 URL", "SELECT * FROM read_parquet('s3://bucket/x.parquet')"),
        ("parquet_metadata outside", f"SELECT * FROM parquet_metadata('{o}')"),
        ("parquet_schema outside", f"SELECT * FROM parquet_schema('{o}')"),
        ("sniff_csv", f"SELECT * FROM sniff_csv('{o}')"),
        ("FROM 'file' replacement scan", f"SELECT * FROM '{o}'"),
        ("duckdb_secrets()", "SELECT * FROM duckdb_secrets()"),
        ("getenv", "SELECT getenv('HOME')"),
        ("current_setting probe", "SELECT current_setting('allowed_directories')"),
        ("duckdb_settings probe", "SELECT name, value FROM duckdb_settings() WHERE name LIKE '%dir%'"),  # noqa: E501
        ("duckdb_extensions", "SELECT * FROM duckdb_extensions()"),
        ("checkpoint()", "SELECT * FROM checkpoint()"),
        ("force_checkpoint()", "SELECT * FROM force_checkpoint()"),
        ("CHECKPOINT", "CHECKPOINT"),
        ("EXPORT DATABASE", f"EXPORT DATABASE '{o}.dir'"),
        ("IMPORT DATABASE", f"IMPORT DATABASE '{o}.dir'"),
        ("CALL", "CALL pragma_version()"),
        ("CALL checkpoint", "CALL checkpoint()"),
        ("query() hides SQL", "SELECT * FROM query('DROP TABLE spans')"),
        ("query_table", "SELECT * FROM query_table('spans')"),
        ("USE", "USE memory"),
        ("DETACH", "DETACH prefixscope"),
        ("VACUUM", "VACUUM"),
        ("EXPLAIN ANALYZE write", "EXPLAIN ANALYZE DELETE FROM spans"),
        ("BEGIN", "BEGIN TRANSACTION"),
        ("COMMIT", "COMMIT"),
        ("LOAD via path", f"LOAD '{o}'"),
        ("write via COPY in CTE", f"WITH x AS (SELECT 1) COPY x TO '{o}.x'"),
        # -- resource exhaustion --------------------------------------------------------------
        ("huge range() aggregation", "SELECT sum(i) FROM range(1000000000000) t(i)"),
        ("huge string repeat", "SELECT length(repeat('x', 1000000000))"),
        ("huge string returned", "SELECT repeat('x', 200000000)"),
        ("string_agg memory", "SELECT length(string_agg(repeat('x', 1000), '')) FROM range(100000000)"),  # noqa: E501
        ("recursive CTE unbounded",
         "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"),
        ("sort huge", "SELECT i FROM range(1000000000) t(i) ORDER BY random() LIMIT 1"),
        ("very long SQL", "SELECT " + " + ".join(["1"] * 60000)),
        ("list aggregate memory", "SELECT len(list(i)) FROM range(1000000000) t(i)"),
        ("wide rows over the byte cap", "SELECT repeat('x', 60000) FROM range(100000)"),
        # -- issue 35: the store's own files, and concatenation ---------------------------------
        ("read_blob the store file", f"SELECT size FROM read_blob('{d}/prefixscope.duckdb')"),
        ("read_blob the WAL", f"SELECT content FROM read_blob('{d}/prefixscope.duckdb.wal')"),
        ("read_blob the spill folder", f"SELECT * FROM read_blob('{d}/prefixscope.duckdb.tmp/**')"),
        ("read_text lake/../store", f"SELECT * FROM read_text('{d}/lake/../prefixscope.duckdb')"),
        ("read_duckdb the store", f"SELECT * FROM read_duckdb('{d}/prefixscope.duckdb')"),
        ("FROM the store file", f"SELECT * FROM '{d}/prefixscope.duckdb'"),
        ("glob the lake, any file", f"SELECT * FROM glob('{d}/lake/**')"),
        ("read_parquet via a link in the lake", f"SELECT * FROM read_parquet('{d}/lake/spans/*.parquet')"),  # noqa: E501
        ("computed path", f"SELECT * FROM read_parquet('{d}/lake/spans/' || 'x.parquet')"),
        ("json_execute_serialized_sql", "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))"),  # noqa: E501
        ("|| x8 over the WAL", f"SELECT octet_length({'||'.join(['content'] * 8)}) FROM read_blob('{d}/prefixscope.duckdb.wal')"),  # noqa: E501
        ("|| x8 over attributes", f"SELECT max(strlen({'||'.join(['attributes::varchar'] * 8)})) FROM spans"),  # noqa: E501
        ("concat() x8 over attributes", f"SELECT max(strlen(concat({', '.join(['attributes'] * 8)}))) FROM spans"),  # noqa: E501
        ("concat_ws() over events", "SELECT max(strlen(concat_ws(',', events, events, events, events))) FROM spans"),  # noqa: E501
        ("string_agg of attributes", "SELECT strlen(string_agg(attributes::varchar, '')) FROM spans"),  # noqa: E501
        ("list_concat of aggregates", "SELECT len(list_concat(l, l, l)) FROM (SELECT list(attributes) l FROM spans)"),  # noqa: E501
        ("printf %s of attributes", "SELECT max(strlen(printf('%s%s%s%s', attributes, attributes, attributes, attributes))) FROM spans"),  # noqa: E501
        ("nested: concat(a || a, format(...))", "SELECT max(strlen(concat(resource || resource, format('{}{}', resource, resource)))) FROM spans"),  # noqa: E501
        ("|| through an alias", "SELECT max(strlen(x || x || x || x)) FROM (SELECT attributes::varchar AS x FROM spans)"),  # noqa: E501
        ("|| through an alias named like a small column", "SELECT max(strlen(trace_id || trace_id || trace_id)) FROM (SELECT attributes::varchar AS trace_id FROM spans)"),  # noqa: E501
        ("|| x64 of a bounded column", f"SELECT max(strlen({'||'.join(['prefix_id'] * 64)})) FROM spans"),  # noqa: E501
        *((label, sql.replace("{d}", d)) for label, sql in COPYING),
    ]  # fmt: skip


#: Huge single allocations that the time limit cannot interrupt (DuckDB's memory_limit does
#: not cover them): the sandbox refuses them before they run (regression: list range()).
MATERIALIZING = [
    ("list range() memory", "SELECT len(range(1000000000))"),
    ("repeat() memory", "SELECT length(repeat('x', 1000000000))"),
    ("list_resize() memory", "SELECT len(list_resize([1], 2000000000))"),
    ("range() with a computed size", "SELECT len(range(x)) FROM (SELECT 1000000000 AS x)"),
    # issue 15: each call under the old per-call bound, or not on the old list
    ("nested repeat()", "SELECT repeat(repeat('x', 1000000), 1000000)"),
    ("lpad()", "SELECT lpad('x', 2000000000, 'y')"),
    ("rpad()", "SELECT rpad('x', 2000000000, 'y')"),
    ("array_resize() alias", "SELECT array_resize([1], 2000000000)"),
    ("range() per row x 2,048 rows", "SELECT range(1000000) FROM range(100000)"),
    ("format() width", "SELECT format('{:>1000000000}', 1)"),
    ("printf() width", "SELECT printf('%1000000000d', 1)"),
    ("bar() width", "SELECT bar(1, 0, 1, 1000000000)"),
    ("equi_width_bins() count", "SELECT equi_width_bins(0, 1, 1000000000, false)"),
    (
        "a CTE's large value referenced many times",
        "WITH t AS (SELECT repeat('x', 60000) s) SELECT s || s || s || s FROM t",
    ),
]

#: Read-only probes that are allowed by design: they reveal configured paths, nothing else.
PROBES = ("current_setting probe", "duckdb_settings probe")


def expected(label: str) -> frozenset[str]:
    if label in EXPECTED:
        return EXPECTED[label]
    if any(label == m for m, _ in MATERIALIZING + COPYING):
        return frozenset({"value_too_large"})
    return DEFAULT_DEFENCE


def defence(status: int, body: dict[str, object], max_rows: int) -> str:
    """Which defence answered: the error code, ``truncated``, or what happened instead."""
    if status == 200:
        rows = body.get("rows")
        capped = isinstance(rows, list) and len(rows) <= max_rows
        return "truncated" if body.get("truncated") is True and capped else "answered"
    if 400 <= status < 500 and isinstance(body.get("message"), str):
        return str(body.get("code") or body.get("error"))
    return f"http {status}"


def refused(label: str, status: int, body: dict[str, object], max_rows: int) -> bool:
    return defence(status, body, max_rows) in expected(label)


def run(*, timeout_s: float = 2.0, max_rows: int = 1000, spans: int = 51_200,
        rss_bound_mb: float = 1424.0, only: str = "") -> Report:  # fmt: skip
    rep = Report("sql")
    base = scratch_dir("sql")
    data = base / "data"
    outside = base / "secret.csv"
    outside.write_text("secret_column\nTOP-SECRET-MARKER\n")
    args = ["--lake-roll-interval-s", "0", "--sql-timeout-s", str(timeout_s),
            "--sql-max-rows", str(max_rows), "--sql-max-result-mb", "4"]  # fmt: skip
    srv = ServerProcess(data, args)
    srv.start()
    assert srv.proc is not None
    # spans with attributes (a WAL of some size to read back), and a link planted in the lake
    # that points at the store's file (a query must not read through it)
    for k in range(spans // 512):
        body = workload_request(512, seed=35_000 + k).SerializeToString()
        assert post(srv.http_port, body)[0] == 200
    (data / "lake" / "spans" / "planted.parquet").symlink_to(data / "prefixscope.duckdb")
    wal = data / "prefixscope.duckdb.wal"
    wal_mb = wal.stat().st_size / 2**20 if wal.exists() else 0.0
    rss_start = vm_hwm_mb(srv.proc.pid)
    results: list[tuple[str, int, str, bool]] = []
    leaked = False
    try:
        with httpx.Client(base_url=srv.base_url, timeout=timeout_s * 10 + 30) as c:
            control = c.post("/api/v1/sql", json={"sql": "SELECT 42 AS x"})
            rep.add("control query answered", control.status_code, "200",
                    control.status_code == 200 and control.json()["rows"] == [[42]])  # fmt: skip
            for label, sql in attempts(outside, data) + MATERIALIZING:
                if only and only not in label:
                    continue
                try:
                    r = c.post("/api/v1/sql", json={"sql": sql})
                    status, text = r.status_code, r.text
                    body = r.json() if r.headers.get("content-type", "").startswith(
                        "application/json") else {}  # fmt: skip
                except httpx.HTTPError as exc:
                    status, text, body = 0, f"{type(exc).__name__}", {}
                leaked |= "TOP-SECRET-MARKER" in text
                ok = refused(label, status, body, max_rows)
                msg = str(body.get("message", text))[:90] if body else text[:90]
                msg = f"[{defence(status, body, max_rows)}] {msg}"
                results.append((label, status, msg, ok))
            after = c.post("/api/v1/sql", json={"sql": "SELECT count(*) FROM spans"})
            intact = after.status_code == 200
        alive = srv.proc is not None and srv.proc.poll() is None
        peak = vm_hwm_mb(srv.proc.pid)
    finally:
        srv.stop()
    probes = [r for r in results if r[0] in PROBES]
    results = [r for r in results if r[0] not in PROBES]
    n_ok = sum(1 for *_, ok in results if ok)
    rep.add("attempts refused / attempts", f"{n_ok} / {len(results)}", "all",
            n_ok == len(results))  # fmt: skip
    rep.add("settings probes answered (reveal paths only)",
            f"{sum(1 for _, s, _, _ in probes if s == 200)} / {len(probes)}")  # fmt: skip
    rep.add("planted secret leaked", "yes" if leaked else "no", "no", not leaked)
    rep.add("5xx answers", sum(1 for _, s, _, _ in results if s >= 500), "0",
            all(s < 500 for _, s, _, _ in results))  # fmt: skip
    rep.add("spans stored first / WAL size (MiB)", f"{spans:,} / {wal_mb:.1f}")
    rep.add("server peak RSS before / after the attempts (MiB)", f"{rss_start:.0f} / {peak:.0f}",
            f"< {rss_bound_mb:g}", peak < rss_bound_mb)  # fmt: skip
    rep.add("server alive, spans table intact after", "yes" if alive and intact else "no", "yes",
            alive and intact)  # fmt: skip
    for label, status, msg, ok in results + probes:
        flag = "probe" if label in PROBES else ("refused" if ok else "ESCAPED")
        rep.notes.append(f"{flag:8} {status:3} {label}: {msg}")
    return rep


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--timeout-s", type=float, default=2.0, help="server --sql-timeout-s")
    ap.add_argument("--max-rows", type=int, default=1000, help="server --sql-max-rows")
    ap.add_argument("--only", default="", help="run only the attempts whose label has this")
    ap.add_argument("--spans", type=int, default=51_200, help="spans ingested first")
    ap.add_argument("--rss-bound-mb", type=float, default=1424.0,
                    help="server peak RSS bound (--store-memory-mb 1024 + 400)")  # fmt: skip
    a = ap.parse_args(argv)
    return main_exit(run(**vars(a)))


if __name__ == "__main__":
    main()
