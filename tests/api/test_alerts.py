"""Regression runs, alerts, acks and alert webhooks through the real server."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from prefixscope.api.models import Alert
from prefixscope.api.webhooks import WebhookDispatcher, slack_text
from prefixscope.collector.storage.store import Store
from prefixscope.metrics import Metrics
from tests.support.api_fixtures import insert_alert, seeded_store, webhook_receiver
from tests.support.serverproc import ServerProcess


def metric_value(srv: ServerProcess, line_prefix: str) -> float:
    for line in httpx.get(f"{srv.base_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.split()[-1])
    return 0.0


def test_run_detects_injected_regression_and_notifies_webhook(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    data = tmp_path / "data"
    seeded_store(data, with_alert=False)
    with webhook_receiver(fail_first=1) as hook:
        srv = start_server("--webhook-url", hook.url, data_dir=data)
        # the default run: mSPRT over all the data (a growing window), and it says so
        resp = httpx.post(f"{srv.base_url}/api/v1/regressions/run", json={}, timeout=120)
        assert resp.status_code == 200, resp.text
        run = resp.json()
        assert run["sequential"] == "msprt" and run["since"] is None and run["until"] is None
        assert run["comparisons"] > 0 and run["flagged"] == len(run["new"]) > 0
        flagged = {
            (a["prefix_id"], a["metric"], a["cohort"].get("specialty")) for a in run["alerts"]
        }
        # the injected regression: radiology@3 in the radiology cohort, lower Groundedness
        assert ("radiology", "Groundedness", "radiology") in flagged
        assert not any(p == "cardio" for p, _, _ in flagged)
        ground = next(a for a in run["alerts"] if a["metric"] == "Groundedness")
        assert ground["status"] == "open" and ground["baseline"] == "base"
        assert ground["delta"] < 0 and ground["q_value"] <= 0.05
        assert ground["example_trace_ids"]
        # every new alert reached the receiver, although its first attempt failed
        bodies = hook.wait_for(len(run["new"]))
        assert hook.attempts == len(run["new"]) + 1
        assert sorted(b["alert"]["id"] for b in bodies) == sorted(run["new"])
        body = next(b for b in bodies if b["alert"]["id"] == ground["id"])
        assert body["event"] == "alert.new"
        assert "radiology@3" in body["text"] and "Groundedness" in body["text"]
        assert metric_value(srv, 'prefixscope_webhook_deliveries_total{outcome="retried"}') == 1
        assert metric_value(srv, 'prefixscope_webhook_deliveries_total{outcome="delivered"}') == (
            len(run["new"])
        )
        # a second run over the same data refreshes the same alerts: no new ones
        again = httpx.post(f"{srv.base_url}/api/v1/regressions/run", timeout=120).json()
        assert again["new"] == [] and sorted(again["updated"]) == sorted(run["new"])
        # ack: status changes once, the receiver hears an update
        ack = httpx.post(f"{srv.base_url}/api/v1/alerts/{ground['id']}/ack")
        assert ack.status_code == 200 and ack.json()["status"] == "acked"
        assert (
            httpx.post(f"{srv.base_url}/api/v1/alerts/{ground['id']}/ack").json()["status"]
            == "acked"
        )
        updates = [
            b
            for b in hook.wait_for(2 * len(run["new"]) + 1)
            if b["alert"]["id"] == ground["id"] and b["alert"]["status"] == "acked"
        ]
        assert len(updates) == 1 and updates[0]["event"] == "alert.updated"
        # a run that tests the same comparisons but flags none (alpha 1e-300) resolves them all
        before = len(hook.wait_for(0))
        cleared = httpx.post(
            f"{srv.base_url}/api/v1/regressions/run",
            json={"alpha": 1e-300},
            timeout=120,
        ).json()
        assert cleared["flagged"] == 0 and cleared["new"] == []
        assert sorted(cleared["resolved"]) == sorted(run["new"])
        resolved = hook.wait_for(before + len(run["new"]))[before:]
        assert {b["event"] for b in resolved} == {"alert.resolved"}
        assert {b["alert"]["status"] for b in resolved} == {"resolved"}
        assert (
            httpx.get(f"{srv.base_url}/api/v1/alerts", params={"status": "open"}).json()["alerts"]
            == []
        )


def test_msprt_refuses_a_sliding_window(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """Issue 15: an age as `since` slides with the clock, which voids mSPRT's guarantee; the
    API refuses it (and the gate's too), while a one-look fixed run may use an age."""
    data = tmp_path / "data"
    seeded_store(data, with_alert=False)
    srv = start_server(data_dir=data)
    url = f"{srv.base_url}/api/v1/regressions/run"
    for body in ({"since": "7d"}, {"since": "24h", "sequential": "msprt"}):
        bad = httpx.post(url, json=body, timeout=120)
        assert bad.status_code == 400, bad.text
        assert "growing window" in bad.json()["message"] and "slides" in bad.json()["message"]
    gate = httpx.get(f"{srv.base_url}/api/v1/gate/radiology", params={"since": "7d"})
    assert gate.status_code == 400 and "growing window" in gate.json()["message"]
    assert httpx.get(f"{srv.base_url}/api/v1/gate/radiology").status_code == 200
    fixed = httpx.post(url, json={"since": "7d", "sequential": "fixed"}, timeout=120)
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["sequential"] == "fixed" and fixed.json()["since"] is not None


def test_run_in_windows_mode(tmp_path: Path, start_server: Callable[..., ServerProcess]) -> None:
    """``sequential: windows``: the run tests the latest completed window at ``until`` (the
    clock); re-runs inside the next window re-test it and refresh the same alerts."""
    data = tmp_path / "data"
    t0 = dt.datetime(2025, 1, 1)
    seeded_store(data, with_alert=False, start=t0)  # traffic in [00:00, 01:00)
    srv = start_server(data_dir=data)
    url = f"{srv.base_url}/api/v1/regressions/run"
    body = {"sequential": "windows", "window": "1h", "until": "2025-01-01T01:20:00Z"}
    first = httpx.post(url, json=body, timeout=120)
    assert first.status_code == 200, first.text
    run = first.json()
    assert run["comparisons"] > 0 and run["flagged"] == len(run["new"]) > 0
    ground = next(a for a in run["alerts"] if a["metric"] == "Groundedness")
    assert ground["method"] == "windows:score:welch_t"
    assert ground["details"]["evaluation_window"]["since"] == t0.isoformat()
    assert ground["details"]["evaluation_window"]["until"] == "2025-01-01T01:00:00"
    again = httpx.post(url, json={**body, "until": "2025-01-01T01:59:00Z"}, timeout=120).json()
    assert again["new"] == [] and sorted(again["updated"]) == sorted(run["new"])
    assert {a["id"]: a["p_value"] for a in again["alerts"]} == pytest.approx(
        {a["id"]: a["p_value"] for a in run["alerts"]}, rel=1e-9
    )
    # while [00:00, 01:00) is still open, the (empty) window before it is tested
    early = httpx.post(url, json={**body, "until": "2025-01-01T00:59:00Z"}, timeout=120).json()
    assert early["comparisons"] == 0 and early["resolved"] == []
    cut = httpx.post(url, json={**body, "since": "2025-01-01T00:30:00Z"}, timeout=120)
    assert cut.status_code == 400 and "cuts into the evaluation window" in cut.text
    bad = httpx.post(url, json={**body, "window": "soon"}, timeout=120)
    assert bad.status_code == 422


@pytest.mark.parametrize("mode", ["windows", "msprt"])
def test_periodic_detection(
    tmp_path: Path, start_server: Callable[..., ServerProcess], mode: str
) -> None:
    """windows (the default): traffic in the last completed hour is tested with 1h windows;
    msprt: the trailing 7 days."""
    data = tmp_path / "data"
    now = dt.datetime.now(dt.UTC)
    if now.minute == 59:  # the tested window must not change during the test
        time.sleep(61 - now.second)
    hour = dt.datetime.now(dt.UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    seeded_store(data, with_alert=False, start=hour - dt.timedelta(hours=1))
    opts = ["--detect-sequential", mode, "--detect-window", "1h" if mode == "windows" else "7d"]
    srv = start_server("--detect-interval-s", "1", *opts, data_dir=data)
    deadline = time.monotonic() + 60
    found: list[dict[str, object]] = []
    while time.monotonic() < deadline and not found:
        time.sleep(0.5)
        found = httpx.get(f"{srv.base_url}/api/v1/alerts", params={"status": "open"}).json()[
            "alerts"
        ]
    assert any(a["prefix_id"] == "radiology" and a["metric"] == "Groundedness" for a in found)
    assert all(a["method"].startswith(f"{mode}:") for a in found)
    assert srv.stop() == 0  # the detector thread does not keep the process from exiting


def test_alert_endpoints(tmp_path: Path, start_server: Callable[..., ServerProcess]) -> None:
    data = tmp_path / "data"
    with Store(data) as store:
        insert_alert(store)
        insert_alert(
            store,
            id="alert-2",
            metric="latency_p99",
            severity="medium",
            prefix_id="cardio",
            fingerprint="fp-2",
        )
        insert_alert(
            store,
            id="alert-3",
            status="resolved",
            fingerprint="fp-3",
            resolved_at=dt.datetime(2025, 1, 2),
        )
    srv = start_server(data_dir=data)
    api = f"{srv.base_url}/api/v1/alerts"
    everything = httpx.get(api).json()["alerts"]
    assert [a["id"] for a in everything] == ["alert-1", "alert-3", "alert-2"]  # severity first
    assert [a["id"] for a in httpx.get(api, params={"status": "open"}).json()["alerts"]] == [
        "alert-1",
        "alert-2",
    ]
    assert [a["id"] for a in httpx.get(api, params={"prefix_id": "cardio"}).json()["alerts"]] == [
        "alert-2"
    ]
    assert [a["id"] for a in httpx.get(api, params={"metric": "latency_p99"}).json()["alerts"]] == [
        "alert-2"
    ]
    one = httpx.get(f"{api}/alert-1").json()
    Alert.model_validate(one)
    assert one["cohort"] == {"specialty": "radiology"}
    assert one["example_trace_ids"] == ["ab" * 16, "cd" * 16]
    assert set(one) >= {
        "id",
        "prefix_id",
        "prefix_version",
        "route",
        "cohort",
        "metric",
        "baseline",
        "baseline_value",
        "value",
        "delta",
        "ci_low",
        "ci_high",
        "p_value",
        "q_value",
        "n",
        "n_baseline",
        "direction",
        "severity",
        "status",
        "example_trace_ids",
        "created_at",
    }
    missing = httpx.get(f"{api}/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert httpx.post(f"{api}/nope/ack").status_code == 404
    resolved_ack = httpx.post(f"{api}/alert-3/ack").json()
    assert resolved_ack["status"] == "resolved"  # only open alerts can be acked


def test_dispatcher_retries_with_backoff_then_gives_up() -> None:
    alert = Alert.model_validate(
        {
            "id": "a1",
            "prefix_id": "radiology",
            "prefix_version": "3",
            "route": None,
            "cohort": {"specialty": "radiology"},
            "metric": "Groundedness",
            "baseline": "base",
            "baseline_value": 0.8,
            "value": 0.7,
            "delta": -0.1,
            "ci_low": -0.12,
            "ci_high": -0.08,
            "p_value": 0.001,
            "q_value": 0.01,
            "n": 300,
            "n_baseline": 900,
            "direction": "worse",
            "severity": "high",
            "status": "open",
            "example_trace_ids": ["ab" * 16],
            "created_at": "2025-01-01T00:00:00",
        }
    )
    metrics = Metrics()
    with webhook_receiver(fail_first=10) as hook:
        dispatcher = WebhookDispatcher([hook.url], metrics, max_attempts=3, base_delay_s=0.2)
        started = time.monotonic()
        assert dispatcher.notify("resolved", [alert]) == 1
        assert dispatcher.drain(10)
        elapsed = time.monotonic() - started
        dispatcher.close()
    assert hook.attempts == 3 and hook.bodies == []
    assert elapsed >= 0.2 * 0.8 + 0.4 * 0.8  # two backoff waits, jittered by at most 20 %
    counts = {
        s.labels["outcome"]: s.value
        for m in metrics.registry.collect()
        if m.name == "prefixscope_webhook_deliveries"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert counts == {"retried": 2.0, "failed": 1.0}


def test_dispatcher_does_not_retry_client_errors_and_never_blocks() -> None:
    alert = Alert.model_validate(
        json.loads(
            json.dumps(
                {
                    "id": "a2",
                    "prefix_id": None,
                    "prefix_version": None,
                    "route": None,
                    "cohort": {},
                    "metric": "error_rate",
                    "baseline": "base",
                    "baseline_value": None,
                    "value": None,
                    "delta": None,
                    "ci_low": None,
                    "ci_high": None,
                    "p_value": None,
                    "q_value": None,
                    "n": None,
                    "n_baseline": None,
                    "direction": "worse",
                    "severity": None,
                    "status": "open",
                    "example_trace_ids": [],
                    "created_at": "2025-01-01T00:00:00",
                }
            )
        )
    )
    assert "base" in slack_text("new", alert) and "n/a" in slack_text("new", alert)
    with webhook_receiver(fail_first=5, status_on_fail=400) as hook:
        dispatcher = WebhookDispatcher(
            [hook.url, "http://127.0.0.1:9/unreachable"], max_attempts=2, base_delay_s=0.05
        )
        started = time.monotonic()
        dispatcher.notify("new", [alert] * 50)
        assert time.monotonic() - started < 0.5  # enqueue only
        assert dispatcher.drain(20)
        dispatcher.close()
    assert hook.attempts == 50  # 4xx: one attempt each, no retry
    with pytest.raises(ValueError, match="unknown webhook event"):
        dispatcher.notify("deleted", [alert])


def test_webhook_logs_name_the_host_never_the_secret_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Slack-style URLs carry their secret in the path: logs show scheme and host only."""
    from tests.support.serverproc import free_port

    alert = Alert.model_validate(
        {
            "id": "a9", "prefix_id": "radiology", "prefix_version": "3", "route": None,
            "cohort": {}, "metric": "Groundedness", "baseline": "base",
            "baseline_value": 0.8, "value": 0.7, "delta": -0.1, "ci_low": -0.12,
            "ci_high": -0.08, "p_value": 0.001, "q_value": 0.01, "n": 300, "n_baseline": 900,
            "direction": "worse", "severity": "high", "status": "open",
            "example_trace_ids": [], "created_at": "2025-01-01T00:00:00",
        }
    )  # fmt: skip
    secret = "T000/B000/XXXXsecretXXXX"
    dead = f"http://127.0.0.1:{free_port()}/services/{secret}?token=qsecret"
    dispatcher = WebhookDispatcher([dead], Metrics(), max_attempts=2, base_delay_s=0.05)
    with caplog.at_level("INFO", logger="prefixscope.api.webhooks"):
        assert dispatcher.notify("new", [alert]) == 1
        assert dispatcher.drain(10)
        dispatcher.close()
    text = caplog.text
    port = dead.split(":")[2].split("/")[0]
    assert "failed after 2 attempts" in text and f"http://127.0.0.1:{port}/" in text
    assert "secret" not in text and "/services/" not in text


#: chat markup planted in telemetry (an ingest token is enough to set these span values)
HOSTILE = {
    "prefix_id": "rad<!channel>`*x*`",
    "prefix_version": "<http://evil.example/|Click here>",
    "route": "<!here> <@U0123ABCD> &amp; `\nfake line",
    "cohort": json.dumps({"spec<@U1>": "<!subteam^S1|@oncall>", "lang": "<https://a.b|c>"}),
    "metric": "Ground<!everyone>",
    "baseline": "base<!channel>",
    "example_trace_ids": json.dumps(["<http://x.example|trace>", "ab" * 16]),
}


def test_webhook_text_is_inert_and_raw_values_are_fields(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """Issue 35: span values go into the Slack ``text`` escaped, in code spans they cannot
    close; a real receiver sees no ``<!``, ``<@`` or ``<http`` and gets the raw values apart."""
    data = tmp_path / "data"
    store = Store(data)
    try:
        insert_alert(store, id="hostile-1", **HOSTILE)
    finally:
        store.close()
    with webhook_receiver() as hook:
        srv = start_server("--webhook-url", hook.url, data_dir=data)
        ack = httpx.post(f"{srv.base_url}/api/v1/alerts/hostile-1/ack", timeout=30)
        assert ack.status_code == 200, ack.text
        body = hook.wait_for(1)[0]
    text = body["text"]
    for needle in ("<!", "<@", "<http", "<https", "|Click here>"):
        assert needle not in text, (needle, text)
    assert text.count("\n") == 4, text  # status line, cohort, id, traces, evidence: no fake line
    for line in text.splitlines():
        # every backtick opens or closes a span of ours: none came from the values
        assert line.count("`") % 2 == 0, line
    assert "`rad&lt;!channel&gt;\u02cb*x*\u02cb@&lt;http://evil.example/|Click here&gt;`" in text
    fields = body["fields"]
    assert fields["prefix_id"] == HOSTILE["prefix_id"]
    assert fields["route"] == HOSTILE["route"]
    assert fields["cohort"] == json.loads(HOSTILE["cohort"])
    assert fields["metric"] == HOSTILE["metric"]
    assert fields["example_trace_ids"][0] == "<http://x.example|trace>"
    assert body["alert"]["prefix_id"] == HOSTILE["prefix_id"]
