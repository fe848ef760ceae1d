"""Read endpoints over a seeded store through the real server: scorecard, prefixes, traces,
and the dashboard fragments."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.api_fixtures import NOW, otlp_request, otlp_span, seeded_store
from tests.support.serverproc import ServerProcess

TRACE = "5b8efff798038103d269b633813fc60c"
ROOT, CHILD, LEAF = "eee19b7ec3c1b174", "eee19b7ec3c1b173", "eee19b7ec3c1b172"
CYCLE = "6c8efff798038103d269b633813fc60c"
DEEP = "7d8efff798038103d269b633813fc60c"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("reads") / "data"
    seeded_store(data)
    server = ServerProcess(data, []).start()
    t0 = NOW - dt.timedelta(minutes=30)
    spans = [
        otlp_span(TRACE, ROOT, "POST /answer", start=t0, duration_ms=900),
        otlp_span(
            TRACE,
            CHILD,
            "retrieve",
            parent=ROOT,
            start=t0 + dt.timedelta(milliseconds=10),
            duration_ms=120,
            attrs={"db.system": "pgvector"},
        ),
        otlp_span(
            TRACE,
            LEAF,
            "generate",
            parent=ROOT,
            start=t0 + dt.timedelta(milliseconds=150),
            duration_ms=700,
            error=True,
            attrs={
                "prefix.id": "radiology",
                "prefix.version": "3",
                "base_model": "llama",
                "cohort.specialty": "radiology",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 30,
                "note": HOSTILE,
            },
        ),
        # hostile: a parent cycle and a very deep chain
        otlp_span(CYCLE, "00000000000000a1", "a", parent="00000000000000a2", start=t0),
        otlp_span(CYCLE, "00000000000000a2", "b", parent="00000000000000a1", start=t0),
        *[
            otlp_span(
                DEEP,
                f"{i + 1:016x}",
                f"d{i}",
                parent=f"{i:016x}" if i else None,
                start=t0 + dt.timedelta(microseconds=i),
            )
            for i in range(150)
        ],
        otlp_span(
            "8d8efff798038103d269b633813fc60c",
            "00000000000000b1",
            "x",
            start=t0,
            attrs={"prefix.id": HOSTILE, "base_model": "llama", "gen_ai.operation.name": "chat"},
        ),
    ]
    resp = httpx.post(f"{server.base_url}/v1/traces", json=otlp_request(spans), timeout=30)
    assert resp.status_code == 200, resp.text
    score = {"trace_id": TRACE, "span_id": LEAF, "name": "Groundedness", "value": 0.4}
    assert httpx.post(f"{server.base_url}/api/v1/scores", json=score).status_code == 200
    fb = {"trace_id": TRACE, "kind": "thumbs_down", "comment": HOSTILE}
    assert httpx.post(f"{server.base_url}/api/v1/feedback", json=fb).status_code == 200
    yield server
    server.stop()


def get(srv: ServerProcess, path: str, **params: object) -> httpx.Response:
    return httpx.get(srv.base_url + path, params=params, timeout=60)  # type: ignore[arg-type]


def test_scorecard_by_prefix(srv: ServerProcess) -> None:
    card = get(srv, "/api/v1/scorecard", since="1d").json()
    assert card["group_by"] == ["prefix_id"]
    rows = {r["group"]["prefix_id"]: r for r in card["rows"]}
    assert {k: rows[k]["n"] for k in ("base", "cardio", "radiology")} == {
        "base": 1800,
        "cardio": 900,
        "radiology": 1201,
    }
    g = rows["radiology"]["metrics"]["Groundedness"]
    assert g["base_value"] is not None and g["delta"] < 0
    assert g["ci_low"] <= g["value"] <= g["ci_high"]
    assert g["delta_ci_low"] <= g["delta"] <= g["delta_ci_high"]
    assert {"latency_p50", "latency_p99", "error_rate", "n"} <= set(card["metrics"])


def test_scorecard_grouping_filters_and_errors(srv: ServerProcess) -> None:
    card = get(
        srv,
        "/api/v1/scorecard",
        group_by="prefix_id,cohort.specialty",
        metric="Groundedness,error_rate",
        since="1d",
    ).json()
    assert set(card["metrics"]) == {"n", "error_rate", "Groundedness"}
    keys = {(r["group"]["prefix_id"], r["group"]["cohort.specialty"]) for r in card["rows"]}
    assert ("radiology", "radiology") in keys and ("base", "oncology") in keys
    worst = next(
        r
        for r in card["rows"]
        if r["group"]["prefix_id"] == "radiology" and r["group"]["cohort.specialty"] == "radiology"
    )
    assert worst["metrics"]["Groundedness"]["delta"] < -0.1
    future = get(srv, "/api/v1/scorecard", since=(NOW + dt.timedelta(days=1)).isoformat()).json()
    assert future["rows"] == []
    bad = get(srv, "/api/v1/scorecard", group_by="prefix_id,nonsense")
    assert bad.status_code == 400 and "unknown group key 'nonsense'" in bad.json()["message"]
    many = get(srv, "/api/v1/scorecard", group_by="prefix_id,route,day,hour,name,base_model,kind")
    assert many.status_code == 400
    assert get(srv, "/api/v1/scorecard", since="yesterday-ish").status_code == 422
    impossible = get(srv, "/api/v1/scorecard", since="2025-13-45")  # matches the pattern only
    assert impossible.status_code == 400 and "bad time" in impossible.json()["message"]
    huge = get(srv, "/api/v1/scorecard", since="999999w")  # overflows the calendar
    assert huge.status_code == 400
    huger = get(srv, "/api/v1/scorecard", since="99999999999999999d")  # overflows timedelta
    assert huger.status_code == 422  # the parameter's pattern stops it before parsing


def test_prefixes_seen(srv: ServerProcess) -> None:
    listing = {p["prefix_id"]: p for p in get(srv, "/api/v1/prefixes").json()["prefixes"]}
    assert {"base", "cardio", "radiology", HOSTILE} <= set(listing)
    rad = listing["radiology"]
    assert rad["n"] == 1201 and rad["versions"] == ["3"]
    assert rad["base_models"] == ["llama", "llama-3-8b"] and not rad["registered"]
    assert rad["first_seen"] < rad["last_seen"]


def test_trace_tree(srv: ServerProcess) -> None:
    view = get(srv, f"/api/v1/traces/{TRACE.upper()}").json()
    assert view["trace_id"] == TRACE and view["span_count"] == 3
    assert view["duration_ms"] == pytest.approx(900.0)
    [root] = view["roots"]
    assert root["span_id"] == ROOT and root["name"] == "POST /answer"
    assert [c["span_id"] for c in root["children"]] == [CHILD, LEAF]
    leaf = root["children"][1]
    assert leaf["status_code"] == "ERROR" and leaf["prefix_id"] == "radiology"
    assert leaf["input_tokens"] == 120 and leaf["attributes"]["note"] == HOSTILE
    assert root["children"][0]["attributes"] == {"db.system": "pgvector"}
    assert [s["name"] for s in view["scores"]] == ["Groundedness"]
    assert view["feedback"][0]["kind"] == "thumbs_down"
    assert get(srv, "/api/v1/traces/" + "f" * 32).status_code == 404
    assert get(srv, "/api/v1/traces/not-hex").status_code == 422


def count_nodes(nodes: list[dict[str, Any]]) -> int:
    return sum(1 + count_nodes(n["children"]) for n in nodes)


def test_hostile_trees_are_bounded(srv: ServerProcess) -> None:
    cycle = get(srv, f"/api/v1/traces/{CYCLE}").json()
    assert cycle["span_count"] == 2
    assert len(cycle["roots"]) == 1 and count_nodes(cycle["roots"]) == 2
    deep = get(srv, f"/api/v1/traces/{DEEP}")
    assert deep.status_code == 200
    body = deep.json()
    assert count_nodes(body["roots"]) == 150  # every span shown once, tree depth capped
    assert len(body["roots"]) == 3


def test_dashboard_fragment(srv: ServerProcess) -> None:
    resp = get(srv, "/api/v1/dashboard", since="1d")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    html = resp.text
    for marker in (
        'id="variants"',
        'class="plot latency"',
        'class="plot heatmap"',
        'data-ack="alert-1"',
        "radiology@3",
        f'data-trace="{900:032x}"',
    ):
        assert marker in html, marker
    assert HOSTILE not in html and "&lt;script&gt;" in html
    for svg in html.split("<svg")[1:]:  # every plot is well-formed XML
        ET.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")
    heat = get(
        srv, "/api/v1/dashboard", since="1d", metric="AnswerRelevancy", cohort="cohort.specialty"
    ).text
    assert "AnswerRelevancy: variant" in heat
    trace = get(srv, f"/api/v1/dashboard/trace/{TRACE}").text
    assert "POST /answer" in trace and "pgvector" in trace and HOSTILE not in trace
    assert get(srv, f"/api/v1/dashboard/trace/{'f' * 32}").status_code == 404


def test_release_gate(srv: ServerProcess) -> None:
    rad = get(srv, "/api/v1/gate/radiology").json()
    assert rad["prefix_id"] == "radiology" and rad["passed"] is False
    cells = {c["cohort"].get("specialty"): c for c in rad["cells"] if c["prefix_version"] == "3"}
    assert cells["radiology"]["passed"] is False
    assert any("Groundedness worse than base" in r for r in cells["radiology"]["reasons"])
    cardio = get(srv, "/api/v1/gate/cardio").json()
    assert cardio["passed"] is True, cardio
    # one cell per slice: the whole route and each specialty (the data's only cohort key)
    by_slice = {c["cohort"].get("specialty"): c["n"] for c in cardio["cells"]}
    assert by_slice == {None: 900, "radiology": 300, "cardiology": 300, "oncology": 300}
    unknown = get(srv, "/api/v1/gate/never-seen").json()
    assert unknown == {
        "prefix_id": "never-seen",
        "passed": False,
        "status": "insufficient_data",
        "reason": "no requests of never-seen in the window",
        "cells": [],
    }
    assert rad["status"] == "fail" and cells["radiology"]["status"] == "fail"
    assert cardio["status"] == "pass" and {c["status"] for c in cardio["cells"]} == {"pass"}
    strict = get(srv, "/api/v1/gate/cardio", min_n=1000).json()
    assert strict["passed"] is False and strict["status"] == "insufficient_data"
    assert {c["status"] for c in strict["cells"]} == {"untested"}
    assert "insufficient data" in strict["cells"][0]["reasons"][0]
    assert get(srv, "/api/v1/gate/cardio", alpha=2).status_code == 422
    # gated on one cohort: radiology@3's Groundedness regressed in the radiology cohort only
    # (its slower median latency shows in every cohort)
    own = get(srv, "/api/v1/gate/radiology", cohort="specialty=radiology").json()
    assert own["status"] == "fail" and own["cells"]
    assert {c["cohort"]["specialty"] for c in own["cells"]} == {"radiology"}
    assert any("Groundedness" in r for c in own["cells"] for r in c["reasons"])
    other = get(srv, "/api/v1/gate/radiology", cohort="specialty=cardiology").json()
    assert other["cells"] and {c["cohort"]["specialty"] for c in other["cells"]} == {"cardiology"}
    assert not any("Groundedness" in r for c in other["cells"] for r in c["reasons"]), other
    none = get(srv, "/api/v1/gate/radiology", cohort="specialty=nobody").json()
    assert none["status"] == "insufficient_data" and none["cells"] == []
    bad = get(srv, "/api/v1/gate/radiology", cohort="specialty")
    assert bad.status_code == 400 and "key=value" in bad.json()["message"]


def test_routing_advice(srv: ServerProcess) -> None:
    advice = get(srv, "/api/v1/routing", metric="Groundedness", threshold=0.5, since="1d").json()
    assert advice["metric"] == "Groundedness"
    clinical = [a for a in advice["advice"] if a["route"] == "clinical"]
    # advice for the whole route and for each value of each cohort key
    assert [a["cohort"] for a in clinical].count({}) == 1
    by_cohort = {a["cohort"]["specialty"]: a for a in clinical if a["cohort"]}
    assert set(by_cohort) == {"radiology", "cardiology", "oncology"}
    assert {a["variant"] for a in by_cohort.values()} == {"cardio"}
    rad = by_cohort["radiology"]["candidates"]
    assert rad["radiology"]["mean"] < rad["base"]["mean"] < rad["cardio"]["mean"]
    high = get(srv, "/api/v1/routing", metric="Groundedness", threshold=0.95, since="1d").json()
    assert {a["variant"] for a in high["advice"]} == {"base"}
    assert all(a["reason"].startswith("fall back to base") for a in high["advice"])
    assert get(srv, "/api/v1/routing", metric="NoSuchEvaluator").json()["advice"] == []
