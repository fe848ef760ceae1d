"""One annotation id in two date partitions of a lake: read once, compacted to one copy.

A lake collector partitions scores and feedback by ``created_at``, which it stamps on receipt
(or takes from the body) and which the id does not depend on: a retry after UTC midnight
lands the same id on the next day. Readers and ``prefixscope lake compact`` keep one row per
id across partitions, and of an id re-sent with another value the first one sent, as the
embedded server does. The expected values are what the test sent first.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
from click.testing import CliRunner

from prefixscope.analytics.engines import DuckDBEngine
from prefixscope.cli import main
from tests.support.lake_fixtures import lake_rows
from tests.support.lake_repoint import lake_server

T1, T2 = "a1" * 16, "b2" * 16


def _post(servers: list[Any], path: str, body: list[dict[str, Any]]) -> list[str]:
    ids = []
    for srv in servers:
        resp = httpx.post(srv.base_url + path, json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        ids.append(resp.json()["ids"])
    assert all(i == ids[0] for i in ids)  # the collector's ids are the embedded server's
    return list(ids[0])


def _read(lake: Path) -> tuple[dict[str, float], int]:
    engine = DuckDBEngine.over_lake(str(lake))
    scores = engine.arrow("SELECT id, value FROM scores").to_pylist()
    assert len(scores) == len({r["id"] for r in scores}), scores
    feedback = engine.arrow("SELECT count(*) AS n FROM feedback").to_pylist()[0]["n"]
    return {r["id"]: r["value"] for r in scores}, feedback


def _compact(lake: Path) -> None:
    out = CliRunner().invoke(main, ["lake", "compact", "--lake-path", str(lake)])
    assert out.exit_code == 0, out.output


def test_an_id_on_two_dates_is_read_once_and_compacted_to_its_first_copy(
    start_server: Any, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    collector = lake_server(start_server, lake)
    embedded = start_server()
    both = [collector, embedded]
    midnight = dt.datetime.now(dt.UTC).replace(tzinfo=None, hour=0, minute=0, second=0)
    midnight = midnight.replace(microsecond=0)
    before = (midnight - dt.timedelta(seconds=30)).isoformat()
    after = (midnight + dt.timedelta(seconds=30)).isoformat()
    resent = {"id": "resent", "trace_id": T1, "name": "G", "value": 0.25}
    retried = {"trace_id": T2, "name": "G", "value": 0.5}  # a content-derived id
    thumbs = {"trace_id": T1, "kind": "thumbs_down"}
    # before midnight
    first = _post(both, "/api/v1/scores", [{**resent, "created_at": before}, retried])
    _post(both, "/api/v1/scores", [{"id": "kept", "trace_id": T1, "name": "G", "value": 0.3}])
    _post(both, "/api/v1/feedback", [{**thumbs, "created_at": before}])
    # after midnight: the retry, "resent" with another value, a new id
    second = [
        {**resent, "value": 0.75, "created_at": after},
        {**retried, "created_at": after},
        {"id": "new", "trace_id": T2, "name": "G", "value": 0.9, "created_at": after},
    ]
    _post(both, "/api/v1/scores", second)
    _post(both, "/api/v1/feedback", [{**thumbs, "created_at": after}])
    # "new" re-sent with an earlier created_at: the copy sent first still wins
    backdated = [{"id": "new", "trace_id": T2, "name": "G", "value": 0.1, "created_at": before}]
    _post(both, "/api/v1/scores", backdated)
    expected = {"resent": 0.25, first[1]: 0.5, "kept": 0.3, "new": 0.9}

    days = {
        p.parent.name
        for p in lake.glob("scores/date=*/*.parquet")
        if "resent" in pq.read_table(p, columns=["id"]).column("id").to_pylist()
    }
    assert len(days) == 2, days  # the copies really are in two partitions
    rows = httpx.post(
        embedded.base_url + "/api/v1/sql", json={"sql": "SELECT id, value FROM scores"}
    )
    assert {r[0]: r[1] for r in rows.json()["rows"]} == expected  # what the embedded server keeps

    assert _read(lake) == (expected, 1)
    _compact(lake)
    assert _read(lake) == (expected, 1)
    stored = lake_rows(lake, "scores")
    assert {r["id"]: r["value"] for r in stored} == expected and len(stored) == len(expected)
    assert len(lake_rows(lake, "feedback")) == 1

    # a retry after the compaction, in a partition of its own, beside a compacted one
    _post([collector], "/api/v1/scores", second)
    assert _read(lake) == (expected, 1)
    _compact(lake)
    stored = lake_rows(lake, "scores")
    assert {r["id"]: r["value"] for r in stored} == expected and len(stored) == len(expected)
