"""The same answers on the embedded server and on the lake, end to end over HTTP.

One generator sends the same spans (with the real OTel SDK and OTLP/HTTP exporters) to an
embedded server and, round-robin, to two lake collectors writing one lake; the same scores,
feedback (some of it trace-level) and registrations are posted over HTTP to both sides. One
variant is attributed only by its served model name (``hosted_vllm/cardio-lora``, registered
after its traffic, as third-party instrumentors send it), and it carries the two injected
regressions. Then the embedded store, the lake on DuckDB and the lake on Spark must give

* the requests per variant and cohort the generator sent (its own tally);
* the same detection cube, the same alerts (with the same n) and the same scorecard cells;
* alerts for the injected regressions, on the served-name variant.

Marked slow (Spark starts a JVM).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from prefixscope.analytics.alerts import alert_objects
from prefixscope.analytics.detection import detection_cube, run_detection
from prefixscope.analytics.detection_config import DetectionConfig
from prefixscope.analytics.engines import DuckDBEngine, SparkEngine, spark_session
from prefixscope.analytics.query import Window
from prefixscope.analytics.scorecard import scorecard
from prefixscope.collector.storage.store import Store
from tests.support.lake_fixtures import assert_close, assert_same_alerts, assert_same_cube
from tests.support.serverproc import ServerProcess

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow

BASE_MODEL = "tiny-base"
#: variant -> (prefix.id attribute, request model, the variant as attributed)
VARIANTS = {
    "base": (None, BASE_MODEL, ("base", None)),
    "radiology": ("radiology", BASE_MODEL, ("radiology", "1")),
    "cardiology": (None, "hosted_vllm/cardio-lora", ("cardiology", "2")),
}
COHORTS = ("a", "b")
PER_CELL = 260
#: the injected regressions: cardiology in cohort a
SLOW, DOWN = 3.0, 0.30


class RoundRobin(SpanExporter):
    """Each export batch to the next exporter (a load balancer in front of collectors)."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.exporters, self.i = list(exporters), 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.i += 1
        return self.exporters[self.i % len(self.exporters)].export(spans)

    def shutdown(self) -> None:
        for e in self.exporters:
            e.shutdown()


@dataclass
class Sent:
    requests: Counter[tuple[str, str | None, str]] = field(default_factory=Counter)
    scores: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)


def _generate(embedded: ServerProcess, lakes: Sequence[ServerProcess]) -> Sent:
    rng = random.Random(11)
    provider = TracerProvider(
        resource=Resource.create({"service.name": "notes", "base_model": BASE_MODEL})
    )
    url = "{}/v1/traces"
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=url.format(embedded.base_url)))
    )
    provider.add_span_processor(
        SimpleSpanProcessor(
            RoundRobin([OTLPSpanExporter(endpoint=url.format(s.base_url)) for s in lakes])
        )
    )
    tracer = provider.get_tracer("parity")
    sent = Sent()
    now_ns = time.time_ns()
    cells = [(v, c) for v in VARIANTS for c in COHORTS for _ in range(PER_CELL)]
    rng.shuffle(cells)
    step = 7_200_000_000_000 // len(cells)

    def call(variant: str, cohort: str, start: int) -> tuple[str, str]:
        prefix_attr, model, attributed = VARIANTS[variant]
        bad = variant == "cardiology" and cohort == "a"
        latency_ms = 200 * rng.lognormvariate(0, 0.4) * (SLOW if bad else 1.0)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 20,
            "gen_ai.usage.output_tokens": rng.randint(5, 50),
            "route": "notes",
            "cohort.specialty": cohort,
        }
        if prefix_attr is not None:
            attrs |= {"prefix.id": prefix_attr, "prefix.version": "1"}
        span = tracer.start_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attrs, start_time=start
        )
        span.end(end_time=start + int(latency_ms * 1e6))
        ctx = span.get_span_context()
        sent.requests[(attributed[0], attributed[1], cohort)] += 1
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"

    for i, (variant, cohort) in enumerate(cells):
        start = now_ns - 7_200_000_000_000 + i * step
        bad = variant == "cardiology" and cohort == "a"
        if i % 10 == 0:  # an agent: two model calls under one span; the second is judged
            root = tracer.start_span("agent", start_time=start)
            from opentelemetry import trace as otel_trace

            with otel_trace.use_span(root, end_on_exit=False):
                call(variant, cohort, start + 1_000_000)
                trace_id, span_id = call(variant, cohort, start + 900_000_000)
            root.end(end_time=start + 2_000_000_000)
        else:
            trace_id, span_id = call(variant, cohort, start)
        score = min(1.0, max(0.0, rng.gauss(0.62 if bad else 0.8, 0.1)))
        target = None if i % 5 == 0 else span_id  # some scores on the trace
        sent.scores.append(
            {"trace_id": trace_id, "span_id": target, "name": "Groundedness", "value": score}
        )
        if rng.random() < (DOWN if bad else 0.05):
            sent.feedback.append({"trace_id": trace_id, "kind": "thumbs_down"})
    provider.shutdown()
    return sent


def _post_all(servers: Sequence[ServerProcess], path: str, records: list[dict[str, Any]]) -> None:
    for k, start in enumerate(range(0, len(records), 500)):
        chunk = records[start : start + 500]
        for srv in (servers[0], servers[1 + k % (len(servers) - 1)]):
            resp = httpx.post(srv.base_url + path, json=chunk, timeout=60)
            assert resp.status_code == 200, resp.text


@dataclass
class World:
    sent: Sent
    store: DuckDBEngine
    lake: DuckDBEngine
    spark: SparkEngine


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("parity")
    lake = base / "lake"
    embedded = ServerProcess(base / "embedded", ["--request-settle", "0s"]).start()
    collectors = [
        ServerProcess(base / f"c{i}", ["--store", "lake", "--lake-path", str(lake)]).start()
        for i in range(2)
    ]
    servers = [embedded, *collectors]
    try:
        sent = _generate(embedded, collectors)
        _post_all(servers, "/api/v1/scores", sent.scores)
        _post_all(servers, "/api/v1/feedback", sent.feedback)
        # registrations after the traffic: the served name's first mapping covers it
        for srv, pid, body in (
            (embedded, "cardiology", {"version": "2", "served_model_names": ["cardio-lora"]}),
            (collectors[0], "cardiology", {"version": "2", "served_model_names": ["cardio-lora"]}),
            (embedded, "radiology", {"version": "1", "owner": "imaging"}),
            (collectors[1], "radiology", {"version": "1", "owner": "imaging"}),
        ):
            body = {**body, "base_model": BASE_MODEL}
            resp = httpx.put(f"{srv.base_url}/api/v1/prefixes/{pid}", json=body, timeout=60)
            assert resp.status_code == 201, resp.text
        total = sum(sent.requests.values())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the embedded resolver has settled every trace
            resp = httpx.post(
                embedded.base_url + "/api/v1/sql", json={"sql": "SELECT count(*) FROM requests"}
            )
            if resp.json()["rows"] == [[total]]:
                break
            time.sleep(0.5)
    finally:
        for srv in servers:
            srv.stop()
    store = Store(base / "embedded")
    spark = spark_session("local[2]", driver_memory="1g")
    try:
        yield World(
            sent,
            DuckDBEngine(store.cursor()),
            DuckDBEngine.over_lake(str(lake)),
            SparkEngine.over_lake(spark, str(lake)),
        )
    finally:
        store.close()
        spark.stop()


COUNT_SQL = (
    "SELECT coalesce(prefix_id, 'base') AS p, prefix_version AS v, "
    "{cohort} AS c, count(*) AS n FROM requests_base GROUP BY ALL"
)


@pytest.mark.parametrize("side", ["store", "lake", "spark"])
def test_requests_per_variant_and_cohort_are_the_ones_sent(world: World, side: str) -> None:
    engine = getattr(world, side)
    cohort = engine.dialect.json_string("cohort", "specialty")
    rows = engine.arrow(COUNT_SQL.format(cohort=cohort)).to_pylist()
    got = {(r["p"], r["v"], r["c"]): r["n"] for r in rows}
    assert got == dict(world.sent.requests)


def test_same_cube_alerts_and_scorecard_on_every_engine(world: World) -> None:
    window = Window()
    cubes = [detection_cube(e, window) for e in (world.store, world.lake, world.spark)]
    assert_same_cube(cubes[0], cubes[1])
    assert_same_cube(cubes[0], cubes[2])
    cfg = DetectionConfig(sequential="fixed", min_n=100).validate()
    alerts = [
        alert_objects(e, run_detection(e, None, None, cfg))
        for e in (world.store, world.lake, world.spark)
    ]
    assert_same_alerts(alerts[0], alerts[1])
    assert_same_alerts(alerts[0], alerts[2])
    # the injected regressions, on the variant known only by its served name
    flagged = {
        (a.prefix_id, a.prefix_version, tuple(a.cohort.items()), a.metric) for a in alerts[0]
    }
    for metric in ("latency_p90", "thumbs_down_rate", "Groundedness"):
        assert ("cardiology", "2", (("specialty", "a"),), metric) in flagged, metric
    assert {a.prefix_id for a in alerts[0]} == {"cardiology"}
    keys = ["prefix_id", "prefix_version", "cohort.specialty"]
    cards = [scorecard(e, keys).to_dict() for e in (world.store, world.lake, world.spark)]
    assert_close(cards[0]["rows"], cards[1]["rows"], "lake")
    assert_close(cards[0]["rows"], cards[2]["rows"], "spark")
    ns = {
        (r["group"]["prefix_id"], r["group"]["cohort.specialty"]): r["n"] for r in cards[0]["rows"]
    }
    assert ns == {(p, c): n for (p, _, c), n in world.sent.requests.items()}
