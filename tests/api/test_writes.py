"""Scores, feedback and the prefix registry through the real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.api_fixtures import otlp_request, otlp_span
from tests.support.serverproc import ServerProcess
from tests.support.store import query_store

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
UNKNOWN = "ffffffffffffffffffffffffffffffff"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests that only add data (no crash, no exact totals across tests)."""
    srv = ServerProcess(tmp_path_factory.mktemp("writes") / "data").start()
    yield srv
    srv.stop()


def ingest_one(srv: ServerProcess) -> None:
    span = otlp_span(
        TRACE, SPAN, "generate", attrs={"prefix.id": "radiology", "gen_ai.operation.name": "chat"}
    )
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request([span]), timeout=10)
    assert resp.status_code == 200, resp.text


def test_scores_single_and_list_idempotent_and_durable(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server()
    ingest_one(srv)
    url = f"{srv.base_url}/api/v1/scores"
    one = httpx.post(
        url,
        json={
            "trace_id": TRACE.upper(),
            "span_id": SPAN,
            "name": "Groundedness",
            "value": 0.75,
            "label": "ok",
            "reason": "cites source",
            "source": "judge-v1",
            "id": "s-1",
        },
    )
    assert one.status_code == 200, one.text
    assert one.json() == {
        "accepted": 1,
        "inserted": 1,
        "ids": ["s-1"],
        "duplicate_ids": [],
        "unknown_trace_ids": [],
    }
    many = httpx.post(
        url,
        json=[
            {"trace_id": TRACE, "name": "AnswerRelevancy", "value": 1},
            {"trace_id": UNKNOWN, "name": "Groundedness", "value": 0, "id": "s-2"},
            {"trace_id": TRACE, "name": "Groundedness", "value": 0.75, "id": "s-1"},
        ],
    )
    body = many.json()
    assert many.status_code == 200, many.text
    assert body["accepted"] == 3 and body["inserted"] == 2
    assert body["duplicate_ids"] == ["s-1"]
    assert body["unknown_trace_ids"] == [UNKNOWN]
    assert len(body["ids"][0]) == 32 and body["ids"][1:] == ["s-2", "s-1"]
    # retrying the very same request changes nothing
    again = httpx.post(
        url, json={"trace_id": TRACE, "name": "Groundedness", "value": 0.75, "id": "s-1"}
    ).json()
    assert again["inserted"] == 0 and again["duplicate_ids"] == ["s-1"]
    srv.kill()  # crash right after the 200s: what was acknowledged must be on disk
    rows = query_store(
        srv.data_dir,
        "SELECT id, trace_id, span_id, name, value, label, reason, "
        "source FROM scores ORDER BY name, id",
    )
    assert len(rows) == 3
    assert ("s-1", TRACE, SPAN, "Groundedness", 0.75, "ok", "cites source", "judge-v1") in rows
    assert ("s-2", UNKNOWN, None, "Groundedness", 0.0, None, None, None) in rows


@pytest.mark.parametrize(
    ("payload", "loc", "fragment"),
    [
        ({"trace_id": TRACE, "name": "G", "value": 1.5}, ["body", "ScoreIn", "value"], "less than"),
        ({"trace_id": TRACE, "name": "G", "value": -0.1}, ["body", "ScoreIn", "value"], "greater"),
        (
            {"trace_id": "xyz", "name": "G", "value": 0.5},
            ["body", "ScoreIn", "trace_id"],
            "pattern",
        ),
        ({"trace_id": TRACE, "name": "", "value": 0.5}, ["body", "ScoreIn", "name"], "at least 1"),
        (
            {"trace_id": TRACE, "name": "G", "value": 0.5, "span_id": "12"},
            ["body", "ScoreIn", "span_id"],
            "pattern",
        ),
        (
            {"trace_id": TRACE, "name": "G", "value": 0.5, "extra": 1},
            ["body", "ScoreIn", "extra"],
            "Extra inputs",
        ),
        (
            [
                {"trace_id": TRACE, "name": "G", "value": 0.5},
                {"trace_id": TRACE, "name": "G", "value": 2},
            ],
            ["body", "list[ScoreIn]", 1, "value"],
            "less than or equal to 1",
        ),
        ([], ["body", "list[ScoreIn]"], "at least 1"),
    ],
)
def test_score_validation_is_precise(
    shared: ServerProcess, payload: object, loc: list[object], fragment: str
) -> None:
    resp = httpx.post(f"{shared.base_url}/api/v1/scores", json=payload)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "unprocessable"
    locs = [d["loc"] for d in body["detail"]]
    assert loc in locs, locs
    match = next(d for d in body["detail"] if d["loc"] == loc)
    assert fragment in match["msg"]
    assert query_store_count(shared) == 0


def query_store_count(srv: ServerProcess) -> int:
    resp = httpx.post(f"{srv.base_url}/api/v1/sql", json={"sql": "SELECT count(*) FROM scores"})
    return int(resp.json()["rows"][0][0])


def test_non_finite_score_is_rejected(shared: ServerProcess) -> None:
    resp = httpx.post(
        f"{shared.base_url}/api/v1/scores",
        content=b'{"trace_id": "%s", "name": "G", "value": NaN}' % TRACE.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 422


def test_feedback(shared: ServerProcess) -> None:
    server = shared
    ingest_one(server)
    url = f"{server.base_url}/api/v1/feedback"
    resp = httpx.post(
        url,
        json=[
            {"trace_id": TRACE, "kind": "thumbs_down", "comment": "wrong dose", "id": "f-1"},
            {"trace_id": TRACE, "span_id": SPAN, "kind": "rating", "value": 4},
            {"trace_id": UNKNOWN, "kind": "escalation"},
        ],
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["inserted"] == 3 and body["unknown_trace_ids"] == [UNKNOWN]
    dup = httpx.post(url, json={"trace_id": TRACE, "kind": "thumbs_down", "id": "f-1"}).json()
    assert dup["inserted"] == 0 and dup["duplicate_ids"] == ["f-1"]
    bad = httpx.post(url, json={"trace_id": TRACE, "kind": "thumbs_down", "value": 3})
    assert bad.status_code == 422
    assert "must be in [0, 1]" in bad.json()["message"]
    assert bad.json()["detail"][0]["loc"] == ["body", "FeedbackIn", "value"]
    rows = httpx.post(
        f"{server.base_url}/api/v1/sql",
        json={"sql": "SELECT kind, value, comment FROM feedback ORDER BY kind"},
    ).json()["rows"]
    assert rows == [
        ["escalation", 1.0, None],
        ["rating", 4.0, None],
        ["thumbs_down", 1.0, "wrong dose"],
    ]


def test_prefix_registry(shared: ServerProcess) -> None:
    server = shared
    base = f"{server.base_url}/api/v1/prefixes"
    ingest_one(server)
    reg = {
        "base_model": "llama-3-8b",
        "prefix_type": "prefix_tuning",
        "version": "3",
        "owner": "imaging-team",
        "specialty": "radiology",
        "training_corpus": "rad-notes-2024",
        "adapter_hash": "sha256:abc",
        "status": "active",
        "metadata": {"ticket": "ML-12"},
    }
    created = httpx.put(f"{base}/radiology", json=reg)
    assert created.status_code == 201, created.text
    early = httpx.put(f"{base}/oncology", json={"owner": "onc-team", "status": "candidate"})
    assert early.status_code == 201
    replaced = httpx.put(f"{base}/radiology", json={**reg, "status": "paused"})
    assert replaced.status_code == 200
    assert replaced.json()["registered_at"] == created.json()["registered_at"]
    listing = httpx.get(base).json()["prefixes"]
    by_id = {p["prefix_id"]: p for p in listing}
    assert set(by_id) == {"radiology", "oncology"}
    rad = by_id["radiology"]
    assert rad["registered"] and rad["n"] == 1 and rad["status"] == "paused"
    assert rad["versions"] == ["3"] and rad["metadata"] == {"ticket": "ML-12"}
    assert rad["first_seen"] is not None and rad["owner"] == "imaging-team"
    onc = by_id["oncology"]
    assert onc["n"] == 0 and onc["first_seen"] is None and onc["status"] == "candidate"
    assert httpx.get(f"{base}/oncology").json()["owner"] == "onc-team"
    assert httpx.get(f"{base}/nope").status_code == 404
    bad = httpx.put(f"{base}/radiology", json={"status": "Not A Status"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "status"]


def test_retried_posts_without_ids_add_nothing(shared: ServerProcess) -> None:
    """Issue 15: a client's retry of a score or feedback POST without ``id`` used to add a
    second row under a random id."""
    url = shared.base_url + "/api/v1"
    score = {"trace_id": "ee" * 16, "span_id": "ff" * 8, "name": "Retry", "value": 0.25}
    first = httpx.post(f"{url}/scores", json=score).json()
    again = httpx.post(f"{url}/scores", json=score).json()
    assert first["inserted"] == 1 and again["inserted"] == 0
    assert again["duplicate_ids"] == first["ids"]
    # a new value for the same (span, evaluator) is a new record (the latest one counts)
    newer = httpx.post(f"{url}/scores", json={**score, "value": 0.75}).json()
    assert newer["inserted"] == 1 and newer["ids"] != first["ids"]
    # with an Idempotency-Key the key decides, whatever the content
    key = {"Idempotency-Key": "req-42"}
    fb = [{"trace_id": "ee" * 16, "kind": "thumbs_down"}, {"trace_id": "ee" * 16, "kind": "x"}]
    one = httpx.post(f"{url}/feedback", json=fb, headers=key).json()
    two = httpx.post(f"{url}/feedback", json=fb, headers=key).json()
    assert one["inserted"] == 2 and two["inserted"] == 0
    assert sorted(two["duplicate_ids"]) == sorted(one["ids"])
    rows = httpx.post(
        f"{url}/sql",
        json={"sql": f"SELECT count(*) FROM feedback WHERE trace_id = '{'ee' * 16}'"},
    ).json()["rows"]
    assert rows == [[2]]
