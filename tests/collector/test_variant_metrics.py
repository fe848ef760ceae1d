"""Per-variant Prometheus series on /metrics, read back with Prometheus' own text parser and
compared with what the generator sent (requests, not spans: every generated trace holds an
HTTP span and a DB span beside its model call); the cardinality cap; the shipped Grafana
dashboard uses only metric names the server exports."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from prefixscope.collector.metrics.variants import BUCKETS
from prefixscope.collector.spans.request_columns import SKELETON_COLUMNS
from prefixscope.collector.spans.requests import resolve
from tests.support.api_fixtures import otlp_request, otlp_span
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess

ROOT = REPO_ROOT
DASHBOARD = ROOT / "deploy" / "grafana" / "prefixscope-variants.json"


def _spans(wrappers: bool = True) -> list[dict[str, Any]]:
    """60 model calls (one per trace) and a third-party call attributed by its served name;
    with ``wrappers``, each trace also has an HTTP server span at its root (``base_model``
    from the SDK's defaults) and a DB span: neither is a request."""
    out = []
    for i in range(60):
        attrs: dict[str, Any] = {
            "base_model": "llama",
            "route": ("triage", "coding")[i % 2],
            "gen_ai.usage.input_tokens": 10 + i,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.usage.cache_read.input_tokens": i % 5,
        }
        if i % 3 == 0:
            attrs |= {"prefix.id": "cardiology", "prefix.version": "2"}
        elif i % 3 == 1:
            attrs |= {"prefix.id": "radiology", "prefix.version": "1"}
        if i % 7 == 0:
            attrs["fallback.reason"] = "adapter_unavailable"
        if i % 4 == 0:
            attrs["gen_ai.response.time_to_first_chunk"] = 0.01 * i
        out.append(
            otlp_span(
                f"{i + 1:032x}",
                f"{i + 1:016x}",
                "chat",
                duration_ms=20.0 * (i + 1),
                attrs=attrs,
                error=i % 9 == 0,
                parent=f"{10_000 + i:016x}" if wrappers else None,
            )
        )
        if wrappers:
            base = {"base_model": "llama", "route": attrs["route"]}
            out.append(otlp_span(f"{i + 1:032x}", f"{10_000 + i:016x}", "POST /chat", attrs=base))
            out.append(
                otlp_span(
                    f"{i + 1:032x}",
                    f"{20_000 + i:016x}",
                    "SELECT",
                    attrs={"base_model": "llama"},
                    parent=f"{10_000 + i:016x}",
                )
            )
    # a third-party span: no prefix.id, its served name is registered
    out.append(
        otlp_span(f"{999:032x}", f"{999:016x}", "chat", attrs={"gen_ai.request.model": "oncology"})
    )
    return out


def _sent() -> dict[tuple[str, str, str], dict[str, Any]]:
    """What :func:`_spans` sent, per (prefix_id, prefix_version, route): the ground truth."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for i in range(60):
        prefix = (
            ("cardiology", "2")
            if i % 3 == 0
            else ("radiology", "1")
            if i % 3 == 1
            else ("base", "")
        )
        key = (*prefix, ("triage", "coding")[i % 2])
        row = out.setdefault(
            key,
            {"n": 0, "errors": 0, "fallbacks": 0, "input": 0, "output": 0, "cached": 0,
             "latency_ms": [], "ttft": 0},
        )  # fmt: skip
        row["n"] += 1
        row["errors"] += i % 9 == 0
        row["fallbacks"] += i % 7 == 0
        row["input"] += 10 + i
        row["output"] += 3
        row["cached"] += i % 5
        row["latency_ms"].append(20.0 * (i + 1))
        row["ttft"] += i % 4 == 0
    out[("oncology", "5", "")] = {
        "n": 1, "errors": 0, "fallbacks": 0, "input": 0, "output": 0, "cached": 0,
        "latency_ms": [100.0], "ttft": 0,
    }  # fmt: skip
    return out


def _wait_for(srv: ServerProcess, total: float, timeout: float = 30) -> dict[str, Any]:
    """/metrics once the resolver has counted ``total`` requests (series follow the
    resolver: a trace is counted once it has been quiet for --request-settle)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        fams = _families(srv)
        got = (
            sum(_by_labels(fams["prefixscope_variant_requests"]).values())
            if ("prefixscope_variant_requests" in fams)
            else 0
        )
        if got >= total or time.monotonic() > deadline:
            return fams
        time.sleep(0.2)


def _families(srv: ServerProcess) -> dict[str, Any]:
    text = httpx.get(f"{srv.base_url}/metrics", timeout=30).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def _by_labels(fam: Any, suffix: str = "", **fixed: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for s in fam.samples:
        if not s.name.endswith(suffix) or any(s.labels.get(k) != v for k, v in fixed.items()):
            continue
        out[(s.labels["prefix_id"], s.labels["prefix_version"], s.labels["route"])] = s.value
    return out


def test_variant_series_count_the_requests_sent(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server("--served-model", "oncology=oncology@5", "--request-settle", "0s")
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(_spans()), timeout=30)
    assert resp.status_code == 200
    # an exporter's retry of the same request: stored once, so counted once
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(_spans()), timeout=30)
    assert resp.status_code == 200
    sent = _sent()
    fams = _wait_for(srv, sum(v["n"] for v in sent.values()))
    fb = [
        {"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "kind": "thumbs_down"}
        for i in (0, 3)
    ] + [
        # on the trace's HTTP root span: the request of that trace
        {"trace_id": f"{2:032x}", "span_id": f"{10_001:016x}", "kind": "thumbs_down"},
        # trace-level: the trace's (only) request
        {"trace_id": f"{999:032x}", "kind": "thumbs_down"},
        {"trace_id": "ab" * 16, "kind": "x"},
    ]
    assert httpx.post(f"{srv.base_url}/api/v1/feedback", json=fb, timeout=30).status_code == 200
    fams = _families(srv)
    assert len(sent) == 7
    assert _by_labels(fams["prefixscope_variant_requests"]) == {k: v["n"] for k, v in sent.items()}
    assert _by_labels(fams["prefixscope_variant_errors"]) == {
        k: v["errors"] for k, v in sent.items()
    }
    assert _by_labels(fams["prefixscope_variant_fallbacks"]) == {
        k: v["fallbacks"] for k, v in sent.items()
    }
    tokens = fams["prefixscope_variant_tokens"]
    for kind in ("input", "output", "cached"):
        got = _by_labels(tokens, kind=kind)
        assert got == {k: float(v[kind]) for k, v in sent.items()}, kind

    # histograms: every bucket holds the sent latencies at or under it
    lat = fams["prefixscope_variant_latency_seconds"]
    for le in (*BUCKETS, math.inf):
        bound = "+Inf" if le == math.inf else repr(float(le))
        got = _by_labels(lat, "_bucket", le=bound)
        assert got == {
            k: float(sum(ms / 1000.0 <= le for ms in v["latency_ms"])) for k, v in sent.items()
        }, bound
    ttft_count = _by_labels(fams["prefixscope_variant_ttft_seconds"], "_count")
    assert ttft_count == {k: float(v["ttft"]) for k, v in sent.items()}
    assert sum(ttft_count.values()) == 15

    thumbs = _by_labels(fams["prefixscope_variant_thumbs_down"])
    assert thumbs[("cardiology", "2", "triage")] == 1.0  # span 1 (i=0)
    assert thumbs[("cardiology", "2", "coding")] == 1.0  # i=3
    assert thumbs[("radiology", "1", "coding")] == 1.0  # i=1, via its trace's HTTP root
    assert thumbs[("oncology", "5", "")] == 1.0  # trace-level, via its request
    assert sum(thumbs.values()) == 4.0


def test_series_are_capped_with_an_other_bucket(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server("--variant-metrics-max-series", "3", "--request-settle", "0s")
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(_spans()), timeout=30)
    assert resp.status_code == 200
    _wait_for(srv, 61)
    text = httpx.get(f"{srv.base_url}/metrics", timeout=30).text
    for family in ("prefixscope_variant_requests_total", "prefixscope_spans_committed_total"):
        assert text.count(f"# TYPE {family} ") == 1, family  # each family once
    fams = _families(srv)
    req = _by_labels(fams["prefixscope_variant_requests"])
    assert len(req) == 4 and ("other", "other", "other") in req  # 3 series + other
    assert sum(req.values()) == 61.0
    over = fams["prefixscope_variant_series_overflow"].samples[0].value
    assert over == req[("other", "other", "other")] > 0


def test_grafana_dashboard_uses_exported_metric_names(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server("--request-settle", "0s")
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(_spans()), timeout=30)
    assert resp.status_code == 200
    _wait_for(srv, 61)
    text = httpx.get(f"{srv.base_url}/metrics", timeout=30).text
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 6
    used = {m for e in exprs for m in re.findall(r"prefixscope_[a-z_]+", e)}
    assert used and used <= exported, sorted(used - exported)
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"prefix_id", "route"} <= variables


def test_a_failing_mapping_lookup_keeps_counting(caplog: Any) -> None:
    """The served-model lookup reads the store; during a disk fault it fails: counting goes on
    with the last mapping, with a warning, never a traceback."""
    import orjson

    from prefixscope.collector.decoding import JSON, decode_body
    from prefixscope.collector.metrics.variants import VariantMetrics

    calls = {"n": 0}

    def mapping() -> dict[str, tuple[str, str | None]]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("store is reopening")
        return {"oncology": ("oncology", "5")}

    vm = VariantMetrics(mapping=mapping, mapping_ttl_s=0)
    spans = decode_body(orjson.dumps(otlp_request(_spans())), JSON, None, 1 << 30, 32768).table
    table = resolve(spans.select(list(SKELETON_COLUMNS)))
    for _ in range(2):
        vm.observe(table)
        vm.flush()
    req = _by_labels(next(f for f in vm.collect() if f.name == "prefixscope_variant_requests"))
    assert req[("oncology", "5", "")] == 2.0 and sum(req.values()) == 122.0
    assert calls["n"] >= 2 and "mapping not refreshed" in caplog.text
    assert "Traceback" not in caplog.text


def test_exposition_is_what_prometheus_client_renders() -> None:
    """The server writes the per-variant text itself (``VariantMetrics.exposition``, from the
    arrays); it must be byte for byte ``generate_latest`` of the same families, including
    label values that need escaping, counts that Go formats with an exponent, the cap's
    "other" series and the overflow counter."""
    import orjson
    from prometheus_client import CollectorRegistry, generate_latest

    from prefixscope.collector.decoding import JSON, decode_body
    from prefixscope.collector.metrics.variants import VariantMetrics

    spans = _spans(wrappers=False)
    hostile = 'a"b\\c\nd é'
    for i, span in enumerate(spans[:12]):
        attrs = {a["key"]: a for a in span["attributes"]}
        if "prefix.id" in attrs:
            attrs["prefix.id"]["value"] = {"stringValue": f"{hostile}{i % 4}"}
    vm = VariantMetrics(max_series=5)
    table = decode_body(orjson.dumps(otlp_request(spans)), JSON, None, 1 << 30, 32768).table
    vm.observe(resolve(table.select(list(SKELETON_COLUMNS))))
    vm.flush()
    vm._state.counters[0, 4] += 12_345_678  # input tokens: Go writes 1.2345678e+07
    vm._state.latency_sum[1] += 0.1 + 0.2
    vm.observe_thumbs_down([(f"{hostile}0", "2", "triage")])

    text = vm.exposition()
    registry = CollectorRegistry()
    registry.register(vm)
    assert text == generate_latest(registry).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    req = _by_labels(fams["prefixscope_variant_requests"])
    assert len(req) == 6 and ("other", "other", "other") in req  # 5 series + other
    assert any(k[0].startswith(hostile) for k in req)  # escaped and read back intact
    assert "e+07" in text
    assert fams["prefixscope_variant_series_overflow"].samples[0].value > 0


def test_a_query_of_the_spans_does_not_wait_for_request_resolution(
    start_server: Callable[..., ServerProcess],
) -> None:
    """Requests are derived in the background; a SQL query that reads them brings them up to
    date first (it sees every committed span), a query of the spans alone does not pay for it
    (under ingest that work slowed the query and the ingest beside it). A resolution shows on
    the per-variant series, which follow the resolver."""
    srv = start_server("--request-settle", "1h")  # the background pass resolves nothing here
    assert httpx.post(
        f"{srv.base_url}/v1/traces", json=otlp_request(_spans()), timeout=30
    ).is_success
    sent = sum(v["n"] for v in _sent().values())

    def sql(query: str) -> list[list[Any]]:
        resp = httpx.post(f"{srv.base_url}/api/v1/sql", json={"sql": query}, timeout=30)
        assert resp.status_code == 200, resp.text
        return list(resp.json()["rows"])

    spans = sql("SELECT count(*) FROM spans")[0][0]
    assert spans > sent  # every span committed (the traces have HTTP and DB spans too)
    resolved = _families(srv).get("prefixscope_variant_requests")
    assert resolved is None or not _by_labels(resolved), resolved  # nothing resolved yet
    assert sql("SELECT count(*) FROM requests")[0][0] == sent
    counted = _by_labels(_families(srv)["prefixscope_variant_requests"])
    assert sum(counted.values()) == sent
