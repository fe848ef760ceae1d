"""Variant attribution by served model name (registry ``served_model_names`` and
``serve --served-model``), through the real server: SQL, the registry listing and the
scorecard see third-party spans as the variant, earlier spans included, with version history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from prefixscope.collector.spans.model import SPAN_COLUMN_NAMES
from prefixscope.collector.storage import schema
from prefixscope.collector.storage.store import Store
from tests.support.api_fixtures import otlp_request, otlp_span
from tests.support.api_fixtures import sql_rows as _sql
from tests.support.serverproc import ServerProcess
from tests.support.store import query_store

T0 = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(hours=2)


def _post(srv: ServerProcess, spans: list[dict[str, Any]]) -> None:
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(spans), timeout=30)
    assert resp.status_code == 200, resp.text


def _span(i: int, minutes: float, attrs: dict[str, Any]) -> dict[str, Any]:
    return otlp_span(
        f"{i + 1:032x}",
        f"{i + 1:016x}",
        "chat cardiology",
        start=T0 + dt.timedelta(minutes=minutes),
        attrs={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 12, **attrs},
    )


def _by_span(srv: ServerProcess) -> dict[str, tuple[Any, ...]]:
    rows = _sql(
        srv,
        "SELECT span_id, prefix_id, prefix_version, base_model, prefix_type, request_model "
        "FROM spans ORDER BY span_id",
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def test_served_names_attribute_earlier_and_later_spans_with_version_history(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server()
    # before any registration: third-party spans that name the adapter as the model
    _post(
        srv,
        [
            _span(0, 0, {"gen_ai.request.model": "cardiology"}),  # GenAI / OpenLLMetry
            _span(1, 1, {"llm.model_name": "cardiology"}),  # OpenInference
            _span(2, 2, {"gen_ai.response.model": "cardiology"}),  # vLLM llm_request
            _span(3, 3, {"gen_ai.request.model": "llama-3-8b"}),  # the base model itself
            # an explicit prefix.id always wins over the served-name mapping
            _span(4, 4, {"gen_ai.request.model": "cardiology", "prefix.id": "radiology"}),
        ],
    )
    before = _by_span(srv)
    assert before[f"{1:016x}"][:3] == (None, None, "cardiology")  # the bug: adapter as base

    reg = {
        "base_model": "llama-3-8b",
        "prefix_type": "lora",
        "version": "3",
        "served_model_names": ["cardiology"],
    }
    resp = httpx.put(f"{srv.base_url}/api/v1/prefixes/cardiology", json=reg, timeout=30)
    assert resp.status_code == 201, resp.text
    assert resp.json()["served_model_names"] == ["cardiology"]
    after = _by_span(srv)
    attributed = ("cardiology", "3", "llama-3-8b", "lora")
    for i in (1, 2, 3):
        assert after[f"{i:016x}"][:4] == attributed, i
    assert after[f"{4:016x}"][:3] == (None, None, "llama-3-8b")
    assert after[f"{5:016x}"][0] == "radiology"
    assert after[f"{1:016x}"][4] == "cardiology"  # the raw name stays visible

    # version 4 rolls out under the same served name: later spans are @4, earlier stay @3
    resp = httpx.put(
        f"{srv.base_url}/api/v1/prefixes/cardiology",
        json={**reg, "version": "4", "served_model_names": None},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=1)
    _post(
        srv,
        [
            otlp_span(
                f"{99:032x}",
                f"{99:016x}",
                "chat",
                start=later,
                attrs={"gen_ai.request.model": "cardiology"},
            )
        ],
    )
    final = _by_span(srv)
    assert final[f"{1:016x}"][:2] == ("cardiology", "3")
    assert final[f"{99:016x}"][:2] == ("cardiology", "4")

    # every analytics path reads the same view: the registry and the scorecard see the variant
    prefixes = httpx.get(f"{srv.base_url}/api/v1/prefixes", timeout=30).json()["prefixes"]
    card = next(p for p in prefixes if p["prefix_id"] == "cardiology")
    assert card["n"] == 4 and card["versions"] == ["3", "4"]
    assert card["served_model_names"] == ["cardiology"]
    rows = httpx.get(
        f"{srv.base_url}/api/v1/scorecard",
        params={"group_by": "prefix_id,prefix_version", "since": "30d"},
        timeout=30,
    ).json()["rows"]
    n_by = {(r["group"]["prefix_id"], r["group"]["prefix_version"]): r["n"] for r in rows}
    assert n_by.get(("cardiology", "3")) == 3 and n_by.get(("cardiology", "4")) == 1, n_by
    gate = httpx.get(f"{srv.base_url}/api/v1/gate/cardiology", timeout=30).json()
    assert sorted((c["prefix_version"], c["n"]) for c in gate["cells"]) == [("3", 3), ("4", 1)], (
        gate
    )
    panels = httpx.get(f"{srv.base_url}/api/v1/dashboard", params={"since": "all"}, timeout=30)
    assert panels.status_code == 200 and "cardiology" in panels.text

    # dropping the name: later spans stop matching, earlier ones keep their attribution
    resp = httpx.put(
        f"{srv.base_url}/api/v1/prefixes/cardiology",
        json={**reg, "version": "4", "served_model_names": []},
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json()["served_model_names"] == []
    assert _by_span(srv)[f"{1:016x}"][:2] == ("cardiology", "3")
    srv.stop()
    # the raw rows are stored as they arrived: the mapping lives in the view only
    raw = query_store(srv.data_dir, "SELECT count(*) FROM span_rows WHERE prefix_id IS NOT NULL")
    assert raw == [(1,)]


def test_served_model_option_declares_the_mapping_without_the_api(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = start_server()
    _post(srv, [_span(0, 0, {"gen_ai.request.model": "rad-v2"})])
    resp = httpx.put(
        f"{srv.base_url}/api/v1/prefixes/radiology",
        json={"base_model": "llama-3-8b", "prefix_type": "prefix_tuning", "version": "1"},
        timeout=30,
    )
    assert resp.status_code == 201
    srv.stop()
    again = start_server("--served-model", "rad-v2=radiology@2", data_dir=srv.data_dir)
    assert _by_span(again)[f"{1:016x}"][:4] == ("radiology", "2", "llama-3-8b", "prefix_tuning")
    listed = httpx.get(f"{again.base_url}/api/v1/prefixes/radiology", timeout=30).json()
    assert listed["served_model_names"] == ["rad-v2"]


def test_bad_served_model_option_is_refused_at_start(tmp_path: Path) -> None:
    from prefixscope.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="NAME=PREFIX_ID"):
        Settings(data_dir=tmp_path, served_models=["cardiology"]).validate()


def test_migration_from_v3_keeps_rows_and_reads_their_model_names(tmp_path: Path) -> None:
    """A store written by the previous schema (spans as a table) opens with every row, the
    new columns, and the model names recovered from the attributes."""
    path = tmp_path / "prefixscope.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR, "
        "applied_at TIMESTAMP)"
    )
    for mig in schema.MIGRATIONS[:3]:
        for stmt in mig.statements:
            con.execute(stmt)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [mig.version, "x"])
    con.execute(
        """INSERT INTO spans (trace_id, span_id, name, start_time, attributes, ingest_batch)
VALUES ('a', 'b', 'chat', TIMESTAMP '2026-01-01', '{"gen_ai.request.model": "cardiology",
  "gen_ai.response.model": "cardiology-0"}', 1)"""
    )
    con.close()
    store = Store(tmp_path)
    try:
        cur = store.cursor()
        cols = [r[0] for r in cur.execute("DESCRIBE spans").fetchall()]
        assert cols[: len(SPAN_COLUMN_NAMES)] == list(SPAN_COLUMN_NAMES)
        assert cur.execute(
            "SELECT request_model, response_model, ingest_batch FROM spans"
        ).fetchall() == [("cardiology", "cardiology-0", 1)]
        assert schema.current_version(cur) == schema.LATEST_VERSION
        pk = "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
        assert cur.execute(pk + "AND table_name = 'span_rows'").fetchall() == [(0,)]
    finally:
        store.close()


def test_a_fresh_store_has_the_model_columns_in_order(tmp_path: Path) -> None:
    """Migrations are frozen copies of the model: a column added to SPAN_COLUMNS without a
    migration fails here."""
    with Store(tmp_path) as store:
        cur = store.cursor()
        cols = [r[0] for r in cur.execute("DESCRIBE span_rows").fetchall()]
        kinds = cur.execute(
            "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = 'span_rows'"
        ).fetchall()
    assert cols == [*SPAN_COLUMN_NAMES, "ingested_at", "ingest_batch"]
    # no ever-growing key index since migration 6 (the writer's dedupe window replaces it)
    assert ("PRIMARY KEY",) not in kinds and ("NOT NULL",) in kinds


def test_span_json_columns_are_stored_with_zstd(tmp_path: Path) -> None:
    """The store's footprint (migration 9): free-form JSON compresses with zstd."""
    with Store(tmp_path) as store:
        cur = store.cursor()
        cur.execute(
            "INSERT INTO span_rows (trace_id, span_id, attributes, resource, cohort) "
            "SELECT printf('%032x', i), printf('%016x', i), "
            'printf(\'{"user.id": "u-%d", "route": "/chat"}\', i), '
            '\'{"service.name": "gw"}\', \'{"tier": "a"}\' FROM range(5000) t(i)'
        )
        cur.execute("CHECKPOINT")
        rows = cur.execute(
            "SELECT column_name, list(DISTINCT compression) FROM pragma_storage_info('span_rows') "
            "WHERE segment_type <> 'VALIDITY' AND column_name IN ('attributes', 'resource', "
            "'cohort') GROUP BY ALL ORDER BY 1"
        ).fetchall()
    got = dict(rows)
    assert set(got) == {"attributes", "resource", "cohort"}
    assert got["attributes"] == ["ZSTD"] and got["resource"] == ["ZSTD"]
    assert "ZSTD" not in got["cohort"]
