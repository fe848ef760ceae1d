"""Bearer auth on every /api route (read and write scopes); /healthz and the page shell open."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api_fixtures import INGEST, READ, WRITE
from tests.support.lake_fixtures import lake_rows
from tests.support.serverproc import ServerProcess

#: Every /api route and its scope. A new route must be added here (the test fails otherwise).
WRITE_ROUTES = {
    ("POST", "/api/v1/scores"),
    ("POST", "/api/v1/feedback"),
    ("POST", "/api/v1/regressions/run"),
    ("POST", "/api/v1/evaluations/run"),
    ("POST", "/api/v1/alerts/{alert_id}/ack"),
    ("PUT", "/api/v1/prefixes/{prefix_id}"),
}
READ_ROUTES = {
    ("POST", "/api/v1/sql"),
    ("GET", "/api/v1/scorecard"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/alerts/{alert_id}"),
    ("GET", "/api/v1/prefixes"),
    ("GET", "/api/v1/prefixes/{prefix_id}"),
    ("GET", "/api/v1/prefixes/{prefix_id}/timeseries"),
    ("GET", "/api/v1/alerts/{alert_id}/evidence"),
    ("GET", "/api/v1/traces/{trace_id}"),
    ("GET", "/api/v1/dashboard"),
    ("GET", "/api/v1/dashboard/trace/{trace_id}"),
    ("GET", "/api/v1/gate/{prefix_id}"),
    ("GET", "/api/v1/routing"),
    ("GET", "/api/v1/regressions/slices"),
}
PARAMS = {"alert_id": "a1", "prefix_id": "radiology", "trace_id": "ab" * 16}
BODIES = {
    "/api/v1/scores": {"trace_id": "ab" * 16, "name": "G", "value": 0.5},
    "/api/v1/feedback": {"trace_id": "ab" * 16, "kind": "thumbs_up"},
    "/api/v1/sql": {"sql": "SELECT 1"},
    "/api/v1/prefixes/{prefix_id}": {"owner": "me"},
    "/api/v1/regressions/run": {},
    "/api/v1/evaluations/run": {"evaluators": ["JSONValidation"]},
}


#: The exact answer each route gives the right token (a positive control: a 500 or a 404 from
#: an unknown route must not pass). Alerts do not exist in this store: their handlers answer
#: 404 with a message naming the alert, which only a request past the auth check gets.
SUCCESS = {
    ("POST", "/api/v1/scores"): 200,
    ("POST", "/api/v1/feedback"): 200,
    ("POST", "/api/v1/regressions/run"): 200,
    ("POST", "/api/v1/evaluations/run"): 200,
    ("POST", "/api/v1/alerts/{alert_id}/ack"): 404,
    ("PUT", "/api/v1/prefixes/{prefix_id}"): 200,
    ("POST", "/api/v1/sql"): 200,
    ("GET", "/api/v1/scorecard"): 200,
    ("GET", "/api/v1/alerts"): 200,
    ("GET", "/api/v1/alerts/{alert_id}"): 404,
    ("GET", "/api/v1/prefixes"): 200,
    ("GET", "/api/v1/prefixes/{prefix_id}"): 200,
    ("GET", "/api/v1/prefixes/{prefix_id}/timeseries"): 200,
    ("GET", "/api/v1/alerts/{alert_id}/evidence"): 404,
    ("GET", "/api/v1/traces/{trace_id}"): 200,
    ("GET", "/api/v1/dashboard"): 200,
    ("GET", "/api/v1/dashboard/trace/{trace_id}"): 200,
    ("GET", "/api/v1/gate/{prefix_id}"): 200,
    ("GET", "/api/v1/routing"): 200,
    ("GET", "/api/v1/regressions/slices"): 200,
}


def assert_success(method: str, path: str, resp: httpx.Response) -> None:
    assert resp.status_code == SUCCESS[(method, path)], (method, path, resp.text)
    if resp.status_code == 404:
        assert resp.json() == {"error": "not_found", "message": "no alert with id 'a1'"}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("auth") / "data"
    args = ["--read-token", READ, "--write-token", WRITE, "--token", INGEST]
    srv = ServerProcess(data, args).start()
    # the objects the read routes look up: a registered prefix and a stored trace
    put = call(srv, "PUT", "/api/v1/prefixes/{prefix_id}", WRITE)
    assert put.status_code == 201, put.text
    span = {
        "traceId": "ab" * 16,
        "spanId": "cd" * 8,
        "name": "gen",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000100000000",
    }
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    headers = {"Authorization": f"Bearer {INGEST}"}
    assert httpx.post(f"{srv.base_url}/v1/traces", json=body, headers=headers).status_code == 200
    yield srv
    srv.stop()


def api_routes(srv: ServerProcess) -> set[tuple[str, str]]:
    spec = httpx.get(f"{srv.base_url}/openapi.json", headers={"Authorization": f"Bearer {READ}"})
    return _api_ops(spec.json())


def _api_ops(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        if path.startswith("/api/")
        for method in ops
    }


#: required query parameters of a route
QUERIES = {"/api/v1/regressions/slices": {"prefix_id": "radiology"}}


def call(srv: ServerProcess, method: str, path: str, token: str | None) -> httpx.Response:
    url = srv.base_url + re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = BODIES.get(path)
    return httpx.request(
        method, url, json=body, headers=headers, params=QUERIES.get(path), timeout=60
    )


def test_every_api_route_is_classified(auth_server: ServerProcess) -> None:
    assert api_routes(auth_server) == WRITE_ROUTES | READ_ROUTES


@pytest.mark.parametrize(("method", "path"), sorted(WRITE_ROUTES | READ_ROUTES))
def test_route_requires_a_valid_token(auth_server: ServerProcess, method: str, path: str) -> None:
    missing = call(auth_server, method, path, None)
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"] == "unauthorized"
    for wrong in ("nope", READ + "x"):
        resp = call(auth_server, method, path, wrong)
        assert resp.status_code == 401, (wrong, resp.text)
    # a token valid for another scope (ingest) is known, but not allowed here
    resp = call(auth_server, method, path, INGEST)
    assert resp.status_code == 403, resp.text
    malformed = httpx.request(
        method,
        auth_server.base_url + re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], path),
        headers={"Authorization": f"Basic {READ}"},
        json=BODIES.get(path),
    )
    assert malformed.status_code == 401


@pytest.mark.parametrize(("method", "path"), sorted(WRITE_ROUTES))
def test_read_token_cannot_write(auth_server: ServerProcess, method: str, path: str) -> None:
    resp = call(auth_server, method, path, READ)
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"] == "forbidden"
    assert_success(method, path, call(auth_server, method, path, WRITE))


@pytest.mark.parametrize(("method", "path"), sorted(READ_ROUTES))
def test_read_and_write_tokens_can_read(auth_server: ServerProcess, method: str, path: str) -> None:
    for token in (READ, WRITE):
        assert_success(method, path, call(auth_server, method, path, token))


def test_open_routes(auth_server: ServerProcess) -> None:
    for path in ("/healthz", "/", "/static/app.js", "/static/app.css"):
        assert httpx.get(auth_server.base_url + path).status_code == 200, path
    page = httpx.get(auth_server.base_url + "/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "/api/v1/dashboard" in page.text  # the shell only points at the protected data
    assert httpx.get(auth_server.base_url + "/static/../app.py").status_code == 404
    assert httpx.get(auth_server.base_url + "/static/nope.js").status_code == 404


def test_api_docs_follow_the_read_scope(auth_server: ServerProcess) -> None:
    """Issue 35: /openapi.json and /docs answered without a token; only /healthz stays open."""
    for path in ("/openapi.json", "/docs"):
        url = auth_server.base_url + path
        assert httpx.get(url).status_code == 401, path
        assert httpx.get(url).headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(url, headers={"Authorization": f"Bearer {INGEST}"}).status_code == 403
        for token in (READ, WRITE):
            assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_ids_need_a_character_that_is_not_a_dot(auth_server: ServerProcess) -> None:
    """Issue 35: ``.`` and ``..`` were registered as variants whose page no browser reaches."""
    headers = {"Authorization": f"Bearer {WRITE}"}
    body = {"base_model": "m", "prefix_type": "lora", "version": "1"}
    for raw in ("%2e", "%2e%2e", "...", "%2E%2e%2e%2e"):
        url = f"{auth_server.base_url}/api/v1/prefixes/{raw}"
        resp = httpx.put(url, json=body, headers=headers)
        assert resp.status_code == 422, (raw, resp.text)
        assert "prefix_id" in resp.json()["message"], resp.text
        assert httpx.get(url, headers=headers).status_code == 422
    ok = httpx.put(f"{auth_server.base_url}/api/v1/prefixes/v.1..x", json=body, headers=headers)
    assert ok.status_code in (200, 201), ok.text
    listed = httpx.get(f"{auth_server.base_url}/api/v1/prefixes", headers=headers).json()
    assert not [p for p in listed["prefixes"] if set(p["prefix_id"]) <= {"."}]


def test_ingest_token_is_separate(auth_server: ServerProcess) -> None:
    url = f"{auth_server.base_url}/v1/traces"
    assert httpx.post(url, json={"resourceSpans": []}).status_code == 401
    ok = httpx.post(url, json={"resourceSpans": []}, headers={"Authorization": f"Bearer {INGEST}"})
    assert ok.status_code == 200


def test_metrics_need_a_read_token(auth_server: ServerProcess) -> None:
    url = f"{auth_server.base_url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {INGEST}"}).status_code == 403
    for token in (READ, WRITE):
        resp = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200 and "prefixscope_" in resp.text


def _store(mode: str, tmp_path: Path) -> list[str]:
    """The server's store arguments: the embedded store, or a lake collector's lake."""
    return [] if mode == "embedded" else ["--store", "lake", "--lake-path", str(tmp_path / "lake")]


STORES = pytest.mark.parametrize("mode", ["embedded", "lake"])


@STORES
def test_a_read_token_alone_refuses_to_start(tmp_path: Path, mode: str) -> None:
    """Issue 15: with only --read-token, writes and ingest used to be open to anyone (a lake
    collector, ``serve --store lake``, refuses the same configurations)."""
    store = _store(mode, tmp_path)
    with pytest.raises(RuntimeError, match="no ingest token"):
        ServerProcess(tmp_path / "data", [*store, "--read-token", READ]).start()
    with pytest.raises(RuntimeError, match="no ingest token"):
        ServerProcess(tmp_path / "data2", [*store, "--write-token", WRITE]).start()
    with pytest.raises(RuntimeError, match="both a read-only token and a write token"):
        ServerProcess(
            tmp_path / "data3", [*store, "--token", INGEST, "--read-token", INGEST]
        ).start()


@STORES
def test_token_and_read_token_close_every_route(tmp_path: Path, mode: str) -> None:
    """The issue's reproduction with the smallest accepted configuration, on the embedded
    server and on a lake collector (its routes: annotations, the registry, OTLP, metrics)."""
    args = [*_store(mode, tmp_path), "--token", INGEST, "--read-token", READ]
    srv = ServerProcess(tmp_path / "data", args).start()
    reads = ["/api/v1/alerts"] if mode == "embedded" else ["/api/v1/prefixes/radiology"]
    try:
        base = srv.base_url
        assert (
            httpx.post(f"{base}/api/v1/feedback", json=BODIES["/api/v1/feedback"]).status_code
            == 401
        )
        put = httpx.put(f"{base}/api/v1/prefixes/radiology", json={"owner": "me"})
        assert put.status_code == 401
        if mode == "embedded":
            assert httpx.post(f"{base}/api/v1/regressions/run", json={}).status_code == 401
        assert httpx.post(f"{base}/v1/traces", json={"resourceSpans": []}).status_code == 401
        for path in reads:
            assert httpx.get(f"{base}{path}").status_code == 401
        assert httpx.get(f"{base}/metrics").status_code == 401
        read = {"Authorization": f"Bearer {READ}"}
        assert (
            httpx.post(
                f"{base}/api/v1/feedback", json=BODIES["/api/v1/feedback"], headers=read
            ).status_code
            == 403
        )
        assert (
            httpx.post(f"{base}/v1/traces", json={"resourceSpans": []}, headers=read).status_code
            == 403
        )
        # --token also writes when no --write-token is set
        ingest = {"Authorization": f"Bearer {INGEST}"}
        ok = httpx.post(f"{base}/api/v1/feedback", json=BODIES["/api/v1/feedback"], headers=ingest)
        assert ok.status_code == 200, ok.text
        assert _feedback_rows(srv, mode, tmp_path, read) == 1  # only the authorised write landed
    finally:
        srv.stop()


def _feedback_rows(srv: ServerProcess, mode: str, tmp_path: Path, read: dict[str, str]) -> int:
    if mode == "lake":
        return len(lake_rows(tmp_path / "lake", "feedback"))
    feedback = httpx.post(
        f"{srv.base_url}/api/v1/sql", json={"sql": "SELECT count(*) FROM feedback"}, headers=read
    )
    rows: list[list[int]] = feedback.json()["rows"]
    return rows[0][0]


def test_metrics_public_opens_metrics_only(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", ["--token", INGEST, "--metrics-public"]).start()
    try:
        assert httpx.get(f"{srv.base_url}/metrics").status_code == 200
        assert httpx.get(f"{srv.base_url}/api/v1/alerts").status_code == 401
    finally:
        srv.stop()
