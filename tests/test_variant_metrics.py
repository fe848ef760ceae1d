"""Per-variant Prometheus series on /metrics, read back with Prometheus' own text parser and
compared with the store; the cardinality cap; the shipped Grafana dashboard uses only metric
names the server exports."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from prefixscope.collector.variant_metrics import BUCKETS

from .api_fixtures import otlp_request, otlp_span
from .api_fixtures import sql_rows as _sql
from .serverproc import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "prefixscope-variants.json"


def _spans() -> list[dict[str, Any]]:
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
            )
        )
    # a third-party span: no prefix.id, its served name is registered
    out.append(
        otlp_span(f"{999:032x}", f"{999:016x}", "chat", attrs={"gen_ai.request.model": "oncology"})
    )
    return out


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


KEY = "coalesce(nullif(prefix_id, ''), 'base'), coalesce(prefix_version, ''), coalesce(route, '')"


def test_variant_series_match_the_store(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server("--served-model", "oncology=oncology@5")
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(_spans()), timeout=30)
    assert resp.status_code == 200
    # an exporter's retry of the same request: stored once, so counted once
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(_spans()), timeout=30)
    assert resp.status_code == 200
    fb = [
        {"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "kind": "thumbs_down"}
        for i in (0, 3, 1)
    ] + [{"trace_id": f"{999:032x}", "kind": "thumbs_down"}, {"trace_id": "ab" * 16, "kind": "x"}]
    assert httpx.post(f"{srv.base_url}/api/v1/feedback", json=fb, timeout=30).status_code == 200
    fams = _families(srv)

    want = {
        (r[0], r[1], r[2]): r[3:]
        for r in _sql(
            srv,
            f"SELECT {KEY}, count(*), count(*) FILTER (status_code = 'ERROR'), "
            "count(fallback_reason), sum(input_tokens), sum(output_tokens), "
            "coalesce(sum(cached_tokens), 0) FROM spans GROUP BY ALL",
        )
    }
    assert ("oncology", "5", "") in want  # attributed through the served name
    assert len(want) == 7
    assert _by_labels(fams["prefixscope_variant_requests"]) == {k: v[0] for k, v in want.items()}
    assert _by_labels(fams["prefixscope_variant_errors"]) == {k: v[1] for k, v in want.items()}
    assert _by_labels(fams["prefixscope_variant_fallbacks"]) == {k: v[2] for k, v in want.items()}
    tokens = fams["prefixscope_variant_tokens"]
    for j, kind in enumerate(("input", "output", "cached")):
        got = _by_labels(tokens, kind=kind)
        assert got == {k: float(v[3 + j] or 0) for k, v in want.items()}, kind

    # histograms: every bucket equals the store's count of durations at or under it
    lat = fams["prefixscope_variant_latency_seconds"]
    for le in (*BUCKETS, math.inf):
        bound = "+Inf" if le == math.inf else repr(float(le))
        limit = le if le != math.inf else 1e300
        rows = _sql(
            srv,
            f"SELECT {KEY}, count(*) FILTER (duration_ms / 1000.0 <= {limit}) "
            "FROM spans GROUP BY ALL",
        )
        got = _by_labels(lat, "_bucket", le=bound)
        assert got == {(r[0], r[1], r[2]): float(r[3]) for r in rows}, bound
    ttft_count = _by_labels(fams["prefixscope_variant_ttft_seconds"], "_count")
    rows = _sql(srv, f"SELECT {KEY}, count(ttft_ms) FROM spans GROUP BY ALL")
    assert ttft_count == {(r[0], r[1], r[2]): float(r[3]) for r in rows}
    assert sum(ttft_count.values()) == 15

    thumbs = _by_labels(fams["prefixscope_variant_thumbs_down"])
    assert thumbs[("cardiology", "2", "triage")] == 1.0  # span 1 (i=0)
    assert thumbs[("cardiology", "2", "coding")] == 1.0  # i=3
    assert thumbs[("radiology", "1", "coding")] == 1.0  # i=1
    assert thumbs[("oncology", "5", "")] == 1.0  # trace-level, via its request span
    assert sum(thumbs.values()) == 4.0


def test_series_are_capped_with_an_other_bucket(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server("--variant-metrics-max-series", "3")
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(_spans()), timeout=30)
    assert resp.status_code == 200
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
    srv = start_server()
    resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(_spans()), timeout=30)
    assert resp.status_code == 200
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
    from prefixscope.collector.variant_metrics import VariantMetrics

    calls = {"n": 0}

    def mapping() -> dict[str, tuple[str, str | None]]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("store is reopening")
        return {"oncology": ("oncology", "5")}

    vm = VariantMetrics(mapping=mapping, mapping_ttl_s=0)
    table = decode_body(orjson.dumps(otlp_request(_spans())), JSON, None, 1 << 30, 32768).table
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
    from prefixscope.collector.variant_metrics import VariantMetrics

    spans = _spans()
    hostile = 'a"b\\c\nd é'
    for i, span in enumerate(spans[:12]):
        attrs = {a["key"]: a for a in span["attributes"]}
        if "prefix.id" in attrs:
            attrs["prefix.id"]["value"] = {"stringValue": f"{hostile}{i % 4}"}
    vm = VariantMetrics(max_series=5)
    table = decode_body(orjson.dumps(otlp_request(spans)), JSON, None, 1 << 30, 32768).table
    vm.observe(table)
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
