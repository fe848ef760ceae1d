"""docs/lake.md is an interface: its column lists are the lake's, and its snippets run,
verbatim, against the lake of a real embedded server (all four tables, after they moved to
the cold tier) and against a generated scale-out lake with duplicate rows, giving the
numbers of the data written (the traffic sent; the store the lake was exported from)."""

from __future__ import annotations

import datetime as dt
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from prefixscope.collector.storage.tables import LAKE_TABLES, sql_type
from tests.support.lake_fixtures import build_lake
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess
from tests.support.sql_fixtures import START, TRACES, expected_request, seed

ROOT = REPO_ROOT
DOC = (ROOT / "docs" / "lake.md").read_text()
SNIPPET = re.compile(r"<!-- snippet: ([\w-]+) -->\s*```(\w+)\n(.*?)```", re.S)
SNIPPETS = {m.group(1): (m.group(2), m.group(3)) for m in SNIPPET.finditer(DOC)}


def run(name: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run snippet ``name`` as a reader would, from ``cwd``; its variables (SQL: its rows)."""
    lang, code = SNIPPETS[name]
    monkeypatch.chdir(cwd)
    if lang == "sql":
        return {"rows": duckdb.sql(code.strip().rstrip(";")).fetchall()}
    namespace: dict[str, Any] = {"__name__": f"lake_md_{name}"}
    exec(compile(code, f"docs/lake.md [{name}]", "exec"), namespace)
    return namespace


def test_every_code_block_is_a_tested_snippet() -> None:
    blocks = re.findall(r"^```(python|sql)$", DOC, re.M)
    assert len(blocks) == len(SNIPPETS)
    assert set(SNIPPETS) == {
        "duckdb",
        "duckdb-cli",
        "polars",
        "spark",
        "requests-files",
        "requests-resolved",
    }


def test_the_documented_columns_are_the_lakes() -> None:
    sections = re.split(r"^### ", DOC, flags=re.M)
    documented = {}
    for section in sections[1:]:
        title = re.match(r"`(\w+)`", section)
        if title is None:
            continue
        rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", section, re.M)
        documented[title.group(1)] = rows
    assert set(documented) == set(LAKE_TABLES)
    for name, table in LAKE_TABLES.items():
        assert documented[name] == [(f.name, sql_type(f.type)) for f in table.schema], name


# -- a real embedded server's lake ---------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder holding ``prefixscope-data/`` of a server whose rows all went cold: a 1 s
    hot retention, dedupe window and settle time, a lake roll every second."""
    root = tmp_path_factory.mktemp("embedded")
    srv = ServerProcess(
        root / "prefixscope-data",
        ["--lake-roll-interval-s", "1", "--hot-retention", "1s", "--dedupe-window", "1s",
         "--request-settle", "1s"],
    ).start()  # fmt: skip
    try:
        seed(srv.base_url)
        lake = root / "prefixscope-data" / "lake"
        deadline = time.monotonic() + 90
        want = {"spans": 2 * len(TRACES), "scores": 12, "feedback": 6, "requests": len(TRACES)}
        while time.monotonic() < deadline:
            if _lake_counts(lake) == want:
                break
            time.sleep(0.5)
        assert _lake_counts(lake) == want, srv.log()[-2000:]
        yield root
    finally:
        srv.stop()


def _lake_counts(lake: Path) -> dict[str, int]:
    out = {}
    for table in ("spans", "scores", "feedback", "requests"):
        files = [str(p) for p in (lake / table).glob("*/*.parquet") if not p.name.startswith(".")]
        if files:
            out[table] = int(
                duckdb.sql(f"SELECT count(*) FROM read_parquet({files})").fetchall()[0][0]
            )
    return out


def _truth_spans() -> dict[str | None, list[float]]:
    """Durations of the spans sent, by the prefix_id each carried (roots carry none)."""
    out: dict[str | None, list[float]] = {}
    for t in TRACES:
        out.setdefault(None, []).append(t.duration_ms)  # the HTTP root
        out.setdefault(t.prefix_id, []).append(t.duration_ms - 10)  # the model call
    return out


def _nulls_last(key: str | None) -> tuple[bool, str]:
    return (key is None, key or "")


def test_duckdb_snippets_on_an_embedded_lake(
    embedded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = run("duckdb", embedded, monkeypatch)
    truth = _truth_spans()
    want = [
        (p, len(d), statistics.mean(d))
        for p, d in sorted(truth.items(), key=lambda kv: _nulls_last(kv[0]))
    ]
    got = ns["spans_per_prefix"]
    assert [(p, n) for p, n, _ in got] == [(p, n) for p, n, _ in want]
    assert [m for *_, m in got] == pytest.approx([m for *_, m in want])
    scored: dict[str | None, list[float]] = {}
    for t in TRACES:
        if t.score is not None:
            scored.setdefault(t.prefix_id, []).append(t.score)
    assert [(p, n) for p, _, n in ns["groundedness"]] == [
        (p, len(v)) for p, v in sorted(scored.items(), key=lambda kv: _nulls_last(kv[0]))
    ]
    for p, mean, _ in ns["groundedness"]:
        assert mean == pytest.approx(statistics.mean(scored[p]))
    cli = run("duckdb-cli", embedded, monkeypatch)["rows"]
    assert cli == [(START.date().isoformat(), 2 * len(TRACES), START)]


def test_polars_snippet_on_an_embedded_lake(
    embedded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    latency = run("polars", embedded, monkeypatch)["latency"]
    truth = _truth_spans()
    rows = {r["prefix_id"]: r for r in latency.to_dicts()}
    assert set(rows) == set(truth)
    for prefix, durations in truth.items():
        assert rows[prefix]["spans"] == len(durations)
        assert rows[prefix]["p99_ms"] == pl.Series(durations).quantile(0.99)


def test_requests_snippets_on_an_embedded_lake(
    embedded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = run("requests-files", embedded, monkeypatch)["cold_requests"]
    names = [*LAKE_TABLES["requests"].schema.names, "date"]
    got = [dict(zip(names, r, strict=True)) for r in rows]
    assert len(got) == len(TRACES)
    for row, t in zip(got, TRACES, strict=True):
        want = expected_request(t)
        assert (row["trace_id"], row["span_id"], row["prefix_id"]) == (
            t.trace_id,
            t.call_id,
            t.prefix_id,
        )
        assert (row["error"], row["input_tokens"], row["output_tokens"]) == (
            t.error,
            t.input_tokens,
            t.output_tokens,
        )
        assert sorted(row["span_ids"]) == want["span_ids"]
        assert row["start_time"] == t.start + dt.timedelta(milliseconds=5)
        assert row["date"] == START.date().isoformat()
    by_variant = run("requests-resolved", embedded, monkeypatch)["by_variant"]
    want_rows = []
    for prefix in ("cardio", "radiology", None):
        mine = [t for t in TRACES if t.prefix_id == prefix]
        scores = [t.score for t in mine if t.score is not None]
        want_rows.append(
            (
                prefix,
                len(mine),
                statistics.mean(scores),
                sum(t.thumbs_down for t in mine) / len(mine),
            )
        )
    assert [r[:2] for r in by_variant] == [r[:2] for r in want_rows]
    for got_row, want_row in zip(by_variant, want_rows, strict=True):
        assert got_row[2:] == pytest.approx(want_row[2:])


# -- a generated scale-out lake, with duplicates ---------------------------------------------
@pytest.fixture(scope="module")
def scale_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """``prefixscope-data/lake`` as collectors and evaluator jobs leave it (duplicate spans,
    scores and feedback; no requests files), and the store it came from (no duplicates)."""
    root = tmp_path_factory.mktemp("scaleout")
    store = build_lake(str(root / "prefixscope-data" / "lake"))
    yield root, store
    store.close()


def test_duckdb_snippets_dedupe_a_scale_out_lake(
    scale_out: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, store = scale_out
    raw = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{root}/prefixscope-data/lake/spans/*/*.parquet')"
    ).fetchall()[0][0]
    assert raw > store.sql("SELECT count(*) FROM spans").fetchall()[0][0]  # duplicates there
    ns = run("duckdb", root, monkeypatch)
    want = store.sql(
        "SELECT prefix_id, count(*) AS spans, avg(duration_ms) AS mean_ms FROM spans "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    got = ns["spans_per_prefix"]
    assert [r[:2] for r in got] == [r[:2] for r in want]
    assert [r[2] for r in got] == pytest.approx([r[2] for r in want])
    want_g = store.sql(
        "SELECT s.prefix_id, avg(g.value), count(*) FROM scores g JOIN spans s "
        "USING (trace_id, span_id) WHERE g.name = 'Groundedness' GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert [(r[0], r[2]) for r in ns["groundedness"]] == [(r[0], r[2]) for r in want_g]
    assert [r[1] for r in ns["groundedness"]] == pytest.approx([r[1] for r in want_g])
    cli = run("duckdb-cli", root, monkeypatch)["rows"]
    assert (
        cli
        == store.sql(
            "SELECT strftime(start_time, '%Y-%m-%d'), count(*), min(start_time) FROM spans "
            "GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    )


def test_polars_snippet_dedupes_a_scale_out_lake(
    scale_out: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, store = scale_out
    latency = run("polars", root, monkeypatch)["latency"]
    want = dict(
        store.sql(
            "SELECT prefix_id, count(*) FROM spans WHERE duration_ms IS NOT NULL GROUP BY ALL"
        ).fetchall()
    )
    assert dict(zip(latency["prefix_id"], latency["spans"], strict=True)) == want


def test_requests_resolved_on_a_scale_out_lake(
    scale_out: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector lake has no requests files: the engine resolves them from the spans, as
    the store did for the same data."""
    root, store = scale_out
    assert not (root / "prefixscope-data" / "lake" / "requests").exists()
    by_variant = run("requests-resolved", root, monkeypatch)["by_variant"]
    want = store.sql(
        "SELECT prefix_id, count(*), avg(scores['Groundedness']), "
        "avg((feedback['thumbs_down'] IS NOT NULL)::INT) FROM requests GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert [r[:2] for r in by_variant] == [r[:2] for r in want]
    assert [r[2:] for r in by_variant] == [pytest.approx(r[2:]) for r in want]


@pytest.mark.slow
def test_spark_snippet_dedupes_a_scale_out_lake(
    scale_out: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pyspark")
    from prefixscope.analytics.engines import spark_session

    root, store = scale_out
    session = spark_session("local[1]", driver_memory="1g")  # the snippet's getOrCreate()
    try:
        rows = run("spark", root, monkeypatch)["spark_per_prefix"]
        got = [(r["prefix_id"], r["spans"]) for r in rows]
    finally:
        session.stop()
    want = store.sql(
        "SELECT prefix_id, count(*) FROM spans GROUP BY ALL ORDER BY prefix_id NULLS FIRST"
    ).fetchall()
    assert got == want
