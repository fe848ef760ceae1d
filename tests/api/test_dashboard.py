"""The dashboard in real headless Chromium, plus the SVG plot builders on their own."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefixscope.api import plots
from tests.support.api_fixtures import NOW, otlp_request, otlp_span, seeded_store
from tests.support.browser import open_page
from tests.support.paths import ARTIFACTS
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


# -- plots, as functions -------------------------------------------------------------------------
def test_latency_svg_places_quantiles_in_order_on_a_log_axis() -> None:
    rows = [
        plots.LatencyRow(
            "base",
            100,
            plots.Interval(400, 380, 420),
            plots.Interval(900),
            plots.Interval(1500, 1300, 1800),
        ),
        plots.LatencyRow(
            "<b>x</b>", 50, plots.Interval(40), plots.Interval(None), plots.Interval(4000)
        ),
    ]
    svg = plots.latency_svg(rows)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag in ("svg", ns + "svg")

    def xs(cls: str) -> list[float]:
        els = [el for el in root.iter() if el.get("class") == cls]
        return [float(el.get("cx") or el.get("x") or "nan") for el in els]

    p50, p90, p99 = xs("m-p50"), xs("m-p90"), xs("m-p99")
    assert len(p50) == 2 and len(p90) == 1 and len(p99) == 2  # the missing p90 is not drawn
    assert p50[0] < p90[0] < p99[0]
    assert p50[1] < p50[0] < p99[0] < p99[1]  # 40ms < 400ms < 1.5s < 4s on one shared axis
    assert "&lt;b&gt;x&lt;/b&gt;" in svg and "<b>x</b>" not in svg
    texts = [el.text for el in root.iter() if el.get("class") == "tick"]
    assert texts[0] == "10ms" and texts[-1] == "10s"
    assert plots.log_ticks(10, 1000) == [10, 20, 50, 100, 200, 500, 1000]
    assert "No latency data" in plots.latency_svg([])


def test_heatmap_colours_and_small_samples() -> None:
    cells = {
        ("rad", "a"): plots.HeatCell(-0.2, 300, 300, 0.6, 0.8),
        ("rad", "b"): plots.HeatCell(0.1, 300, 300, 0.9, 0.8),
        ("rad", "c"): plots.HeatCell(-0.5, 5, 300, 0.3, 0.8),
    }
    svg = plots.heatmap_svg(["rad"], ["a", "b", "c", "d"], cells, metric="G", min_n=30)
    root = ET.fromstring(svg)
    labels = [el.text for el in root.iter() if (el.get("class") or "").startswith("cell")]
    assert labels == ["-0.200", "+0.100", "-0.500", "\u2013"]
    fills = [el.get("fill") for el in root.iter() if el.tag.endswith("rect") and el.get("rx")]
    assert fills[0] == plots.diverging(-0.2, 0.2) and fills[2] == fills[3] == "#e2e8f0"
    red, blue = plots.diverging(-1, 1), plots.diverging(1, 1)
    assert int(red[1:3], 16) > int(red[5:7], 16) and int(blue[5:7], 16) > int(blue[1:3], 16)
    assert plots.diverging(0, 1) == "#f7f7f7"


# -- the page in Chromium ------------------------------------------------------------------------
@pytest.fixture
def seeded_server(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> Iterator[Callable[..., ServerProcess]]:
    def _start(*args: str) -> ServerProcess:
        data = tmp_path / "data"
        seeded_store(data)
        srv = start_server(*args, data_dir=data)
        t0 = NOW - dt.timedelta(minutes=20)
        spans = [
            otlp_span(TRACE, "00f067aa0ba902b7", "POST /answer", start=t0, duration_ms=1200),
            otlp_span(
                TRACE,
                "00f067aa0ba902b8",
                "retrieve",
                parent="00f067aa0ba902b7",
                start=t0 + dt.timedelta(milliseconds=20),
                duration_ms=180,
            ),
            otlp_span(
                TRACE,
                "00f067aa0ba902b9",
                "generate",
                parent="00f067aa0ba902b7",
                start=t0 + dt.timedelta(milliseconds=220),
                duration_ms=950,
                attrs={
                    "prefix.id": "radiology",
                    "prefix.version": "3",
                    "base_model": "llama-3-8b",
                    "cohort.specialty": "radiology",
                    "gen_ai.usage.input_tokens": 812,
                },
            ),
        ]
        token = args[args.index("--token") + 1] if "--token" in args else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(spans), headers=headers)
        assert resp.status_code == 200, resp.text
        return srv

    yield _start


@pytest.mark.browser
def test_dashboard_renders_seeded_data(browser: Any, seeded_server: Any) -> None:
    srv = seeded_server()
    page, problems = open_page(browser, f"{srv.base_url}/#trace={TRACE}")
    page.wait_for_selector("svg.plot.latency", timeout=30_000)
    page.wait_for_selector("#trace ul.tree", timeout=30_000)
    # variants table with the scorecard, the regression highlighted
    rows = page.locator("#variants tbody tr")
    assert rows.count() == 3
    assert page.locator("#variants tbody tr:has-text('radiology') td.worse").count() >= 2
    # plots: one strip per variant with p50/p90/p99 markers; heatmap cells with deltas
    assert page.locator("svg.latency .m-p50").count() == 3
    assert page.locator("svg.latency .m-p99").count() == 3
    assert page.locator("svg.heatmap text.cell").count() == 6
    assert page.locator("svg.heatmap text.cell.dark").count() >= 1
    # alert with evidence and example-trace links into the trace view
    assert "radiology@3" in page.locator("#alerts").inner_text()
    page.locator("#alerts a[data-trace]").first.click()
    # (the page's CSP forbids eval, so wait with locators, not wait_for_function strings)
    page.locator("#trace .trace-head", has_text="0384").wait_for(timeout=30_000)
    page.goto(f"{srv.base_url}/#trace={TRACE}")
    page.wait_for_selector("#trace ul.tree ul", timeout=30_000)
    tree = page.locator("#trace").inner_text()
    assert "POST /answer" in tree and "retrieve" in tree and "generate" in tree
    # SQL box: results, then a typed error
    page.fill("#sql", "SELECT prefix_id, count(*) AS n FROM spans GROUP BY ALL ORDER BY n DESC")
    page.click("#sql-form button")
    page.wait_for_selector("#sql-result table", timeout=30_000)
    assert page.locator("#sql-result tbody tr").count() >= 3
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert problems == []  # no console errors or warnings, no failed requests so far
    page.fill("#sql", "DROP TABLE spans")
    page.click("#sql-form button")
    page.wait_for_selector("#sql-error:not([hidden])", timeout=30_000)
    assert "forbidden" in page.locator("#sql-error").inner_text()
    # ack from the page: the open alert goes away
    page.locator("button[data-ack]").first.click()
    page.wait_for_selector("#run-detection", timeout=30_000)
    # the only console error: Chromium logging the deliberate 400 of the refused statement
    assert problems == [
        "error: Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 50_000


@pytest.mark.browser
def test_dashboard_asks_for_a_token_when_required(browser: Any, seeded_server: Any) -> None:
    srv = seeded_server("--token", "sesame")
    page, problems = open_page(browser, srv.base_url + "/")
    page.wait_for_selector("#auth-needed:not([hidden])", timeout=30_000)
    assert page.locator("svg.plot").count() == 0
    page.fill("#token", "sesame")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("svg.plot.latency", timeout=30_000)
    assert page.locator("#auth-needed").is_hidden()
    assert page.evaluate("sessionStorage.getItem('prefixscope.token')") == "sesame"
    # the 401 answers of the first load are expected; nothing else went wrong
    assert all("401" in p or "Unauthorized" in p for p in problems), problems


# -- no CDN, and a local API reference -----------------------------------------------------------
API_DIR = REPO_ROOT / "api"


def test_templates_and_static_files_reference_no_other_host() -> None:
    files = [*(API_DIR / "templates").iterdir(), *(API_DIR / "static").iterdir()]
    assert {f.name for f in files} >= {"index.html", "panels.html", "app.js", "app.css"}
    for f in files:
        text = f.read_text().replace("http://www.w3.org/2000/svg", "")  # a namespace, not a fetch
        assert not re.search(r"https?://|(src|href)=[\"']//|url\(", text), f.name


def test_local_docs_page_lists_every_operation(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from prefixscope.api.app import build_router, install_error_handlers
    from prefixscope.api.context import ApiContext
    from prefixscope.collector.storage.store import Store
    from prefixscope.config import Settings
    from prefixscope.metrics import Metrics

    settings = Settings(data_dir=tmp_path / "d")
    with Store(settings.data_dir) as store:
        ctx = ApiContext(settings, store, Metrics())
        app = FastAPI(title="PrefixScope", docs_url=None, openapi_url=None, redoc_url=None)
        app.include_router(build_router(ctx))
        install_error_handlers(app)
        with TestClient(app) as client:
            page = client.get("/docs")
            spec = client.get("/openapi.json").json()
        ctx.close()
    assert page.status_code == 200 and "script" not in page.text
    for path, ops in spec["paths"].items():
        for method in ops:
            assert f"<code>{path}</code>" in page.text and f">{method.upper()}<" in page.text
    assert 'id="schema-ScoreIn"' in page.text and "pattern=^[0-9a-fA-F]{32}$" in page.text
