"""The variant page (``/prefixes/{id}``) and the alert page (``/alerts/{id}``): headless Chromium
on a store with a known regression; the charts plot exactly what SQL says for the same
buckets; unknown ids are 404 pages; auth applies; webhooks link to the alert page."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api_fixtures import seeded_store, webhook_receiver
from tests.support.api_fixtures import sql_rows as _sql
from tests.support.browser import open_page
from tests.support.paths import ARTIFACTS
from tests.support.serverproc import ServerProcess

TOKEN = "page-token"


@pytest.fixture
def regressed(tmp_path: Path, start_server: Callable[..., ServerProcess]) -> Callable[..., Any]:
    """A server over the seeded store (radiology@3 regresses), detection already run."""

    def _start(*args: str) -> tuple[ServerProcess, list[dict[str, Any]]]:
        data = tmp_path / "data"
        seeded_store(data, with_alert=False)
        srv = start_server(*args, data_dir=data)
        headers = {"Authorization": f"Bearer {TOKEN}"} if "--token" in args else {}
        run = httpx.post(
            f"{srv.base_url}/api/v1/regressions/run", json={}, headers=headers, timeout=120
        ).json()
        assert run["alerts"], run
        return srv, run["alerts"]

    return _start


def test_timeseries_equals_sql_for_the_same_buckets(regressed: Callable[..., Any]) -> None:
    srv, _ = regressed()
    data = httpx.get(
        f"{srv.base_url}/api/v1/prefixes/radiology/timeseries",
        params={"since": "2d", "cohort": "specialty=radiology"},
        timeout=30,
    ).json()
    bucket = data["bucket_seconds"]
    # the bucket follows the data, not the window: one hour of traffic (seeded_store) in a
    # 2-day window is 5-minute buckets (12; 1-minute ones would be 60, over the 48 at most)
    assert bucket == 300
    assert {s["label"] for s in data["series"]} == {"radiology@3", "base"}
    rows = _sql(
        srv,
        f"""SELECT coalesce(nullif(prefix_id, ''), 'base'), coalesce(prefix_version, ''),
  strftime(time_bucket(INTERVAL '{bucket} seconds', start_time), '%Y-%m-%dT%H:%M:%S'),
  count(*), count(*) FILTER (status_code = 'ERROR'), quantile_cont(duration_ms, 0.99)
FROM spans WHERE (base_model IS NOT NULL OR prefix_id IS NOT NULL OR input_tokens IS NOT NULL)
  AND start_time >= TIMESTAMP '{data["since"].replace("T", " ")}'
  AND json_extract_string(cohort, '$."specialty"') = 'radiology'
  AND coalesce(nullif(prefix_id, ''), 'base') IN ('radiology', 'base')
GROUP BY ALL ORDER BY 1, 2, 3""",
    )
    assert rows
    got = [
        [s["prefix_id"], s["version"], t[:19], n, round(e * n), p99]
        for s in sorted(data["series"], key=lambda s: (s["prefix_id"], s["version"]))
        for t, n, e, p99 in zip(s["t"], s["n"], s["error_rate"], s["latency_p99"], strict=True)
    ]
    assert [r[:5] for r in got] == [r[:5] for r in rows]
    assert [r[5] for r in got] == pytest.approx([r[5] for r in rows])
    markers = data["rollouts"]
    assert any(m["source"] == "first_seen" and m["version"] == "3" for m in markers)
    # half an hour of it fits one-minute buckets
    first = min(t for s in data["series"] for t in s["t"])
    start = dt.datetime.fromisoformat(first)
    short = httpx.get(
        f"{srv.base_url}/api/v1/prefixes/radiology/timeseries",
        params={
            "since": start.isoformat(),
            "until": (start + dt.timedelta(minutes=30)).isoformat(),
        },
    ).json()
    assert short["bucket_seconds"] == 60 and short["series"]


def test_the_bucket_follows_the_data() -> None:
    """At most 48 buckets over the data's extent, the shortest such bucket."""
    from prefixscope.analytics.timeseries import MAX_BUCKETS, bucket_for

    h = dt.timedelta(hours=1)
    assert MAX_BUCKETS == 48
    assert bucket_for(dt.timedelta(seconds=40)) == dt.timedelta(minutes=1)
    assert bucket_for(h) == dt.timedelta(minutes=5)
    assert bucket_for(2 * 24 * h) == h
    assert bucket_for(6.5 * 24 * h) == 6 * h  # the demo's days: quarter days
    assert bucket_for(365 * 24 * h) == 7 * 24 * h


def test_unknown_ids_are_404_pages_and_404_json(regressed: Callable[..., Any]) -> None:
    srv, _ = regressed()
    for path in ("/prefixes/no-such-variant", "/alerts/no-such-alert"):
        resp = httpx.get(srv.base_url + path, timeout=30)
        assert resp.status_code == 404 and "Not found" in resp.text, path
        assert resp.headers["content-type"].startswith("text/html")
    for path in ("/api/v1/prefixes/no-such/timeseries", "/api/v1/alerts/nope/evidence"):
        resp = httpx.get(srv.base_url + path, timeout=30)
        assert resp.status_code == 404 and resp.json()["error"] == "not_found", path
    assert httpx.get(srv.base_url + "/prefixes/bad%20id", timeout=30).status_code == 422


def test_alert_evidence_shows_both_sides_and_the_effect(regressed: Callable[..., Any]) -> None:
    srv, alerts = regressed()
    by_metric = {a["metric"]: a for a in alerts}
    lat = httpx.get(
        f"{srv.base_url}/api/v1/alerts/{by_metric['latency_p50']['id']}/evidence", timeout=30
    ).json()
    sides = lat["evidence"]["sides"]
    assert sides["variant"]["kind"] == sides["baseline"]["kind"] == "ecdf"
    assert sides["variant"]["n"] == by_metric["latency_p50"]["n"]
    assert sides["baseline"]["n"] == by_metric["latency_p50"]["n_baseline"]
    median_v = sides["variant"]["x"][50]
    assert median_v == pytest.approx(by_metric["latency_p50"]["value"], rel=0.05)
    assert lat["evidence"]["effect"]["scale"] == "relative"
    assert lat["timeseries"]["series"]
    grd = httpx.get(
        f"{srv.base_url}/api/v1/alerts/{by_metric['Groundedness']['id']}/evidence", timeout=30
    ).json()
    hist = grd["evidence"]["sides"]
    assert hist["variant"]["kind"] == "histogram" and sum(hist["variant"]["counts"]) > 0
    assert hist["variant"]["mean"] < hist["baseline"]["mean"]
    assert grd["page_url"] == f"/alerts/{by_metric['Groundedness']['id']}"


@pytest.mark.browser
def test_pages_in_chromium_plot_the_api_data(browser: Any, regressed: Callable[..., Any]) -> None:
    srv, alerts = regressed()
    page, problems = open_page(browser, f"{srv.base_url}/prefixes/radiology")
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    data = httpx.get(f"{srv.base_url}/api/v1/prefixes/radiology/timeseries").json()
    plotted = page.evaluate(
        "Array.from(document.getElementById('plot-error_rate').data, "
        "(t) => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y), "
        "n: Array.from(t.customdata, (c) => c[0])}))"
    )
    assert plotted == [
        {"name": s["label"], "x": s["t"], "y": s["error_rate"], "n": s["n"]} for s in data["series"]
    ]
    assert page.locator("#charts .chart-card").count() >= 8  # 6 metrics + 2 evaluators
    # issue 32: every chart fits its card (the first one, drawn before its neighbours
    # re-flowed the grid, was clipped), and the legend sits below the date axis' second tick
    # line (the date under the times), which it used to cover
    layout = page.evaluate(
        """Array.from(document.querySelectorAll('#charts .chart-card'), (card) => {
  const svg = card.querySelector('.main-svg');
  if (!svg) return null;
  const ticks = Array.from(card.querySelectorAll('.xtick text'), (t) => t.getBoundingClientRect());
  const legend = card.querySelector('.legend');
  return {id: card.querySelector('.chart').id,
          overflow: svg.getBoundingClientRect().right - card.getBoundingClientRect().right,
          ticks_bottom: Math.max(...ticks.map((r) => r.bottom)),
          legend_top: legend ? legend.getBoundingClientRect().top : null,
          svg_bottom: svg.getBoundingClientRect().bottom};
})"""
    )
    for chart in filter(None, layout):
        assert chart["overflow"] <= 0.5, chart
        assert chart["ticks_bottom"] <= chart["svg_bottom"], chart
        if chart["legend_top"] is not None:
            assert chart["ticks_bottom"] <= chart["legend_top"], chart
    assert page.locator("#plot-latency svg").count() > 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "prefix-page.png"), full_page=True)
    # a route filter refetches
    page.fill("#route", "no-such-route")
    page.click("#filters button")
    page.locator("#status", has_text="0 series").wait_for(timeout=30_000)
    assert problems == []

    alert = next(a for a in alerts if a["metric"] == "latency_p50")
    page, problems = open_page(browser, f"{srv.base_url}/alerts/{alert['id']}")
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    sides = page.evaluate(
        "Array.from(document.getElementById('plot-sides').data, (t) => Array.from(t.x).length)"
    )
    assert sides == [101, 101]
    head = page.locator("#alert-head").inner_text()
    assert "radiology@3" in head and "latency_p50" in head and "q-value" in head
    assert page.locator("#example-list a").count() == len(alert["example_trace_ids"])
    page.screenshot(path=str(ARTIFACTS / "alert-page.png"), full_page=True)
    page.click("#ack")
    page.locator("#alert-head h2", has_text="acked").wait_for(timeout=30_000)
    assert httpx.get(f"{srv.base_url}/api/v1/alerts/{alert['id']}").json()["status"] == "acked"
    assert problems == []
    assert (ARTIFACTS / "alert-page.png").stat().st_size > 30_000

    # the main page's view over time: every variant's series (no base duplicates)
    page, problems = open_page(browser, f"{srv.base_url}/")
    page.wait_for_selector("#overview-card[data-loaded]", timeout=30_000)
    variants = httpx.get(f"{srv.base_url}/api/v1/prefixes").json()["prefixes"]
    n_series = sum(
        len(httpx.get(
            f"{srv.base_url}/api/v1/prefixes/{v['prefix_id']}/timeseries",
            params={"since": "7d", "base": "false"},
        ).json()["series"])
        for v in variants
    )  # fmt: skip
    assert int(page.get_attribute("#overview-card", "data-loaded") or 0) == n_series >= 3
    names = page.evaluate(
        "Array.from(document.getElementById('overview-errors').data, (t) => t.name)"
    )
    assert len(names) == n_series and names.count("base") == 1
    assert problems == []


@pytest.mark.browser
def test_pages_ask_for_the_token(browser: Any, regressed: Callable[..., Any]) -> None:
    srv, alerts = regressed("--token", TOKEN)
    # the API behind the pages is closed without a token
    for path in (
        "/api/v1/prefixes/radiology/timeseries",
        f"/api/v1/alerts/{alerts[0]['id']}/evidence",
    ):
        assert httpx.get(srv.base_url + path, timeout=30).status_code == 401
    page, problems = open_page(browser, f"{srv.base_url}/alerts/{alerts[0]['id']}")
    page.wait_for_selector("#auth-needed:not([hidden])", timeout=30_000)
    page.fill("#token", TOKEN)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    page.click("#ack")  # the write goes with the same token
    page.locator("#alert-head h2", has_text="acked").wait_for(timeout=30_000)
    assert all("401" in p or "Unauthorized" in p for p in problems), problems


def test_webhook_payload_links_to_the_alert_page(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    data = tmp_path / "data"
    seeded_store(data, with_alert=False)
    with webhook_receiver() as hook:
        srv = start_server(
            "--webhook-url", hook.url, "--public-url", "https://ps.example/", data_dir=data
        )
        run = httpx.post(f"{srv.base_url}/api/v1/regressions/run", json={}, timeout=120).json()
        bodies = hook.wait_for(len(run["new"]))
    assert bodies
    for body in bodies:
        want = f"https://ps.example/alerts/{body['alert']['id']}"
        assert body["url"] == want and want in body["text"]
    assert json.dumps(bodies)


LINK = '<a href="http://evil.example/">v2</a>'


def _hostile_variant(srv: ServerProcess) -> None:
    """Requests of variant ``radiology`` whose version is a plotly link, a registry version
    that is another, and a score whose name is a third."""
    import time

    now = time.time_ns()

    def span(i: int, version: str | None) -> dict[str, Any]:
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m",
            "base_model": "m",
            "route": "imaging",
        }
        if version is not None:
            attrs |= {"prefix.id": "radiology", "prefix.version": version}
        return {
            "traceId": f"{i + 1:032x}",
            "spanId": f"{i + 1:016x}",
            "name": "chat",
            "startTimeUnixNano": str(now - i * 10**9),
            "endTimeUnixNano": str(now - i * 10**9 + 5 * 10**7),
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
        }

    spans = [span(i, LINK if i % 2 else None) for i in range(40)]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    assert httpx.post(f"{srv.base_url}/v1/traces", json=body, timeout=30).status_code == 200
    reg = httpx.put(
        f"{srv.base_url}/api/v1/prefixes/radiology",
        json={
            "base_model": "m",
            "prefix_type": "lora",
            "version": '<a href="http://r.example/">r</a>',
        },
        timeout=30,
    )
    assert reg.status_code in (200, 201), reg.text
    scores = [
        {"trace_id": s["traceId"], "span_id": s["spanId"], "value": 0.5,
         "name": '<a href="http://s.example/">Ground</a>'}
        for s in spans
    ]  # fmt: skip
    assert httpx.post(f"{srv.base_url}/api/v1/scores", json=scores, timeout=30).status_code == 200


@pytest.mark.browser
def test_chart_labels_with_links_render_as_text(
    browser: Any,
    start_server: Callable[..., ServerProcess],
) -> None:
    """Issue 35: plotly renders <a href> in names, titles and annotations; a label that came
    from telemetry or the registry must show as text, never as a link."""
    srv = start_server()
    _hostile_variant(srv)
    page, problems = open_page(browser, f"{srv.base_url}/prefixes/radiology")
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    page.wait_for_selector("#charts .legendtext", timeout=30_000)
    assert page.locator("#charts svg a").count() == 0  # plotly's links are <a> in its SVG
    legend = " ".join(page.locator("#charts .legendtext").all_text_contents())
    assert f"radiology@{LINK}" in legend, legend
    notes = " ".join(page.locator("#charts .annotation-text").all_text_contents())
    assert '@<a href="http://r.example/">r</a>' in notes, notes
    titles = " ".join(page.locator("#charts h2").all_text_contents())
    assert '<a href="http://s.example/">Ground</a> (mean score)' in titles, titles
    # nothing records time to first token here: its chart is a note, not empty axes
    assert page.locator("#plot-ttft .no-data").count() == 1
    assert page.locator("#plot-ttft .main-svg").count() == 0
    assert page.locator("#plot-latency .main-svg").count() >= 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "prefix-page-hostile-labels.png"), full_page=True)
    assert problems == []


@pytest.mark.browser
def test_alert_chart_labels_with_links_render_as_text(
    browser: Any,
    tmp_path: Path,
    start_server: Callable[..., ServerProcess],
) -> None:
    """Issue 35, the alert page: an alert raised on a variant whose version is a plotly link,
    for a score whose name is another, shows both as text in its charts (the sides' legend,
    the effect's axis, the series' legend and its rollout marker)."""
    from prefixscope.analytics.synthetic import Arm, generate
    from prefixscope.collector.storage.store import Store

    score = '<a href="http://s.example/">Ground</a>'
    data = tmp_path / "data"
    with Store(data) as store:
        con = store.cursor()
        arms = [
            Arm(None, None, "imaging", n=400, scores={score: (0.85, 20.0)}),
            Arm("radiology", LINK, "imaging", n=400, scores={score: (0.6, 20.0)}),
        ]
        generate(con, arms, seed=3, start=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
        con.close()
    srv = start_server(data_dir=data)
    run = httpx.post(
        f"{srv.base_url}/api/v1/regressions/run", json={"metrics": [score]}, timeout=120
    ).json()
    [alert] = [a for a in run["alerts"] if a["prefix_version"] == LINK]
    assert alert["metric"] == score
    page, problems = open_page(browser, f"{srv.base_url}/alerts/{alert['id']}")
    page.wait_for_selector("body[data-loaded='1']", timeout=60_000)
    page.wait_for_selector("#plot-sides .legendtext", timeout=30_000)
    page.wait_for_selector("#plot-series .legendtext", timeout=30_000)
    plots = "#plot-sides, #plot-effect, #plot-series"
    assert page.locator(f":is({plots}) svg a").count() == 0  # plotly's links are <a> in its SVG
    legend = " ".join(page.locator("#plot-sides .legendtext").all_text_contents())
    assert f"radiology@{LINK}" in legend, legend
    ticks = " ".join(page.locator("#plot-effect .ytick text").all_text_contents())
    assert score in ticks, ticks
    series = " ".join(page.locator("#plot-series .legendtext").all_text_contents())
    assert f"radiology@{LINK}" in series, series
    notes = " ".join(page.locator("#plot-series .annotation-text").all_text_contents())
    assert f"@{LINK} rollout" in notes, notes  # the version's rollout marker
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "alert-page-hostile-labels.png"), full_page=True)
    assert problems == []


@pytest.mark.browser
def test_alert_page_shows_the_slice_tree(
    browser: Any,
    tmp_path: Path,
    start_server: Callable[..., ServerProcess],
) -> None:
    """Issue 31: the alert page shows the tested slice tree (the whole route, each key, each
    pair) with n, effect and interval per slice, which were flagged and which one is the
    cause. The world: German notes regress by 0.15 TaskCompletion on every specialty and plan
    (3 specialties x 4 languages x 3 plans, 60 requests per cell and side)."""
    from prefixscope.analytics.synthetic import generate
    from prefixscope.collector.storage.store import Store
    from tests.support.slices import slice_arms as _arms
    from tests.support.slices import tc_drop as _tc

    per_cell, drop = 60, 0.15
    data = tmp_path / "data"
    with Store(data) as store:
        con = store.cursor()
        german = _arms(lambda sp, lang, plan: _tc(drop) if lang == "de" else {}, per_cell)
        generate(con, german, seed=1)
        con.close()
    srv = start_server(data_dir=data)
    run = httpx.post(
        f"{srv.base_url}/api/v1/regressions/run", json={"metrics": ["TaskCompletion"]}, timeout=120
    ).json()
    [alert] = run["alerts"]
    page, problems = open_page(browser, f"{srv.base_url}/alerts/{alert['id']}")
    page.wait_for_selector("body[data-loaded='1']", timeout=60_000)
    assert page.get_attribute("#slice-tree", "data-source") == "tree"
    rows = page.evaluate(
        """Array.from(document.querySelectorAll('#slice-tree tr.slice'), (tr) => ({
  slice: JSON.parse(tr.dataset.slice), cls: tr.className,
  cells: Array.from(tr.cells, (td) => td.textContent)}))"""
    )
    by_slice = {json.dumps(r["slice"]): r for r in rows}
    key = json.dumps([["language", "de"]])
    route = json.dumps([])
    pair = json.dumps([["language", "de"], ["plan", "free"]])
    other = json.dumps([["language", "en"]])
    # every level is there: the route, the keys (3 + 4 + 3 values), the pairs
    assert {route, key, pair, other} <= set(by_slice)
    assert sum(len(r["slice"]) == 1 for r in rows) == 10
    # n per slice, from the generated cells: 36 cells on the route, 9 German, 3 German+free
    assert by_slice[route]["cells"][2] == f"{36 * per_cell} / {36 * per_cell}"
    assert by_slice[key]["cells"][2] == f"{9 * per_cell} / {9 * per_cell}"
    assert by_slice[pair]["cells"][2] == f"{3 * per_cell} / {3 * per_cell}"
    assert [by_slice[s]["cells"][1] for s in (route, key, pair)] == ["route {}", "key", "pair"]
    # the cause is the German key, flagged, its effect near the injected drop with an interval
    cause = [r for r in rows if "cause" in r["cls"].split()]
    assert [json.dumps(r["slice"]) for r in cause] == [key]
    assert by_slice[key]["cells"][6] == "yes" and by_slice[key]["cells"][7] == "cause (this alert)"
    effect = by_slice[key]["cells"][4]
    m = re.fullmatch(r"(-[0-9.]+) \[(\u2212\u221e|-[0-9.]+), (-[0-9.]+)\]", effect)
    assert m, effect
    delta, high = float(m.group(1)), float(m.group(3))
    assert delta < high < 0 and abs(delta + drop) < 0.06, effect  # one-sided: the high end
    # German pairs are flagged as evidence; an English slice is tested and not flagged
    assert "flagged" in by_slice[pair]["cls"] and by_slice[pair]["cells"][7] == "evidence"
    assert by_slice[other]["cells"][6] == "no" and "flagged" not in by_slice[other]["cls"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "alert-page-slices.png"), full_page=True)
    assert problems == []
