"""The request is the unit: traffic shaped like an application instrumented with the real SDK,
sent over real OTLP to the real server, and every number a user reads compared with what the
generator sent (its own tally, never a query of the store).

Each request is one trace: an HTTP server span at the root (another tracer, outside any
variant, with ``base_model`` from ``configure``'s defaults), a route span opening a
``variant(...)`` scope, and in it a DB span and the model call (``@trace(request=True)``: a
client nothing instruments). Scores are posted on the route span (``current_ids()`` inside
the route), thumbs-down on the trace (``span_id`` null). Two base models serve the same route
and cohorts with different quality; the prefix runs on the worse one, as good as its own
base model, and its thumbs-down rate is raised on one cohort only: that is the one real
regression. Spans counted as requests would give 4x the n, and trace-level thumbs-down on the
root span would read 0; a baseline pooling both base models would raise false TaskCompletion
alerts.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from prefixscope.instrumentation import configure, current_ids, trace, variant
from tests.support.serverproc import ServerProcess

ROUTE = "/triage"
COHORTS = ("cardiology", "radiology")
#: (prefix, version, base model) -> TaskCompletion mean
ARMS = {
    ("base", "", "llama-a"): 0.70,
    ("base", "", "llama-b"): 0.90,  # the better base model: pooled, it would sink cardio
    ("cardio", "1", "llama-a"): 0.70,
}
PER_CELL = 500
THUMBS_DOWN = 0.05
REGRESSED = ("cardio", "radiology", 0.16)  # (prefix, cohort, thumbs-down rate)


@dataclass
class Sent:
    """The generator's tally, per (prefix, version, base model, cohort)."""

    n: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    down: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    score_sum: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    scores: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)


def _send(endpoint: str, seed: int = 7) -> Sent:
    rng = random.Random(seed)
    provider = configure(
        endpoint=endpoint, service_name="clinic", base_model="llama-a", set_global=False
    )
    assert isinstance(provider, TracerProvider)
    http = provider.get_tracer("framework.http")  # a web framework's instrumentation
    db = provider.get_tracer("db.client")
    sent = Sent()

    @trace(name="generate", request=True, tracer_provider=provider)
    def generate(note: str, seconds: float) -> str:
        time.sleep(seconds)  # the model's time: the same distribution on every arm
        return note.upper()

    @trace(name="route /triage", tracer_provider=provider)
    def handle(note: str, seconds: float) -> Any:
        with db.start_as_current_span("SELECT notes", kind=SpanKind.CLIENT):
            pass
        generate(note, seconds)
        return current_ids()

    cells = [(arm, cohort) for arm in ARMS for cohort in COHORTS]
    order = [cell for cell in cells for _ in range(PER_CELL)]
    rng.shuffle(order)  # arms interleave, as a router's traffic does
    for i, ((prefix, version, base), cohort) in enumerate(order):
        if i % 200 == 0:  # keep the exporter's queue (2,048 spans) from overflowing
            assert provider.force_flush(60_000)
        key = (prefix, version, base, cohort)
        with http.start_as_current_span("POST /triage", kind=SpanKind.SERVER) as root:
            trace_id = f"{root.get_span_context().trace_id:032x}"
            with variant(
                prefix_id=None if prefix == "base" else prefix,
                prefix_version=version or None,
                base_model=base,
                route=ROUTE,
                cohort={"specialty": cohort},
            ):
                ids = handle("chest pain", rng.lognormvariate(-6.5, 0.3))  # ~1.5 ms
        score = min(1.0, max(0.0, rng.gauss(ARMS[(prefix, version, base)], 0.15)))
        rate = REGRESSED[2] if (prefix, cohort) == REGRESSED[:2] else THUMBS_DOWN
        flagged = rng.random() < rate
        sent.n[key] = sent.n.get(key, 0) + 1
        sent.down[key] = sent.down.get(key, 0) + flagged
        sent.score_sum[key] = sent.score_sum.get(key, 0.0) + score
        sent.scores.append({**ids.as_dict(), "name": "TaskCompletion", "value": score})
        if flagged:
            sent.feedback.append({"trace_id": trace_id, "kind": "thumbs_down"})
    assert provider.force_flush(60_000)
    provider.shutdown()
    return sent


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("request-unit") / "data"
    srv = ServerProcess(data, ["--request-settle", "0s"]).start()
    try:
        sent = _send(srv.base_url)
        for path, rows in (("/api/v1/scores", sent.scores), ("/api/v1/feedback", sent.feedback)):
            for i in range(0, len(rows), 1000):
                resp = httpx.post(f"{srv.base_url}{path}", json=rows[i : i + 1000], timeout=60)
                assert resp.status_code == 200, resp.text
        yield srv, sent
    finally:
        srv.stop()


def _sql(srv: ServerProcess, sql: str) -> list[list[Any]]:
    resp = httpx.post(f"{srv.base_url}/api/v1/sql", json={"sql": sql}, timeout=60)
    assert resp.status_code == 200, resp.text
    rows: list[list[Any]] = resp.json()["rows"]
    return rows


def test_every_span_arrived_and_requests_are_a_quarter_of_them(world: Any) -> None:
    srv, sent = world
    total = sum(sent.n.values())
    assert _sql(srv, "SELECT count(*) FROM spans") == [[4 * total]]
    assert _sql(srv, "SELECT count(*) FROM requests") == [[total]]


def test_scorecard_counts_requests_with_their_scores_and_feedback(world: Any) -> None:
    srv, sent = world
    card = httpx.get(
        f"{srv.base_url}/api/v1/scorecard",
        params={"group_by": "prefix_id,prefix_version,base_model,cohort.specialty"},
        timeout=60,
    ).json()
    got = {tuple(r["group"][k] or "" for k in card["group_by"]): r["metrics"] for r in card["rows"]}
    assert set(got) == set(sent.n)
    for key, n in sent.n.items():
        m = got[key]
        assert m["n"]["value"] == n, key
        assert m["thumbs_down_rate"]["value"] == pytest.approx(sent.down[key] / n), key
        assert m["TaskCompletion"]["n"] == n, key
        assert m["TaskCompletion"]["value"] == pytest.approx(sent.score_sum[key] / n), key


def test_time_series_buckets_count_the_variant_and_its_own_base_model(world: Any) -> None:
    srv, sent = world
    ts = httpx.get(
        f"{srv.base_url}/api/v1/prefixes/cardio/timeseries", params={"since": "1h"}, timeout=60
    ).json()
    per = {s["label"]: (sum(s["n"]), sum(k * n for k, n in zip(s["thumbs_down_rate"], s["n"])))
           for s in ts["series"]}  # fmt: skip
    cardio = [k for k in sent.n if k[0] == "cardio"]
    base_a = [k for k in sent.n if k[:3] == ("base", "", "llama-a")]
    assert per["cardio@1"][0] == sum(sent.n[k] for k in cardio)
    assert per["cardio@1"][1] == pytest.approx(sum(sent.down[k] for k in cardio))
    # beside it, the base model it runs on: llama-a's base requests, not llama-b's
    assert per["base"][0] == sum(sent.n[k] for k in base_a)


def test_prometheus_series_count_requests(world: Any) -> None:
    srv, sent = world
    want: dict[tuple[str, str, str], int] = {}
    for (prefix, version, _base, _cohort), n in sent.n.items():
        key = (prefix, version, ROUTE)
        want[key] = want.get(key, 0) + n
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"{srv.base_url}/metrics", timeout=30).text
        fam = {f.name: f for f in text_string_to_metric_families(text)}
        got = {
            (s.labels["prefix_id"], s.labels["prefix_version"], s.labels["route"]): s.value
            for s in fam["prefixscope_variant_requests"].samples
        }
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == want


def test_the_one_regression_is_found_and_nothing_else(world: Any) -> None:
    srv, sent = world
    resp = httpx.post(f"{srv.base_url}/api/v1/regressions/run", json={}, timeout=120)
    assert resp.status_code == 200, resp.text
    alerts = resp.json()["alerts"]
    summary = [(a["prefix_id"], a["metric"], a["cohort"], a["baseline"]) for a in alerts]
    assert summary == [("cardio", "thumbs_down_rate", {"specialty": "radiology"}, "base")]
    [alert] = alerts
    assert alert["n"] == sent.n[("cardio", "1", "llama-a", "radiology")]
    assert alert["n_baseline"] == sent.n[("base", "", "llama-a", "radiology")]
    want = sent.down[("cardio", "1", "llama-a", "radiology")] / alert["n"]
    assert alert["value"] == pytest.approx(want)


def _gate_cells(srv: ServerProcess) -> list[dict[str, Any]]:
    gate = httpx.get(f"{srv.base_url}/api/v1/gate/cardio", timeout=120).json()
    cells: list[dict[str, Any]] = gate["cells"]
    return cells


def test_the_gate_fails_cardio_only_where_it_regressed(world: Any) -> None:
    srv, _ = world
    cells = _gate_cells(srv)
    status = {c["cohort"]["specialty"]: c["status"] for c in cells if c["cohort"]}
    assert status == {"cardiology": "pass", "radiology": "fail"}
    # the whole route is a slice too: if it fails, only for the regressed metric
    [route] = [c for c in cells if not c["cohort"]]
    assert route["status"] in ("pass", "fail")
    failing = [r for r in route["reasons"] if " worse than " in r]
    assert all(r.startswith("thumbs_down_rate worse than base") for r in failing), failing
