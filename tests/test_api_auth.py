"""Bearer auth on every /api route (read and write scopes); /healthz and the page shell open."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from .serverproc import ServerProcess

READ, WRITE, INGEST = "read-token-1", "write-token-1", "ingest-token-1"
#: Every /api route and its scope. A new route must be added here (the test fails otherwise).
WRITE_ROUTES = {
    ("POST", "/api/v1/scores"),
    ("POST", "/api/v1/feedback"),
    ("POST", "/api/v1/regressions/run"),
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
    ("GET", "/api/v1/traces/{trace_id}"),
    ("GET", "/api/v1/dashboard"),
    ("GET", "/api/v1/dashboard/trace/{trace_id}"),
    ("GET", "/api/v1/gate/{prefix_id}"),
    ("GET", "/api/v1/routing"),
}
PARAMS = {"alert_id": "a1", "prefix_id": "radiology", "trace_id": "ab" * 16}
BODIES = {
    "/api/v1/scores": {"trace_id": "ab" * 16, "name": "G", "value": 0.5},
    "/api/v1/feedback": {"trace_id": "ab" * 16, "kind": "thumbs_up"},
    "/api/v1/sql": {"sql": "SELECT 1"},
    "/api/v1/prefixes/{prefix_id}": {"owner": "me"},
    "/api/v1/regressions/run": {"since": "1h"},
}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("auth") / "data"
    args = ["--read-token", READ, "--write-token", WRITE, "--token", INGEST]
    srv = ServerProcess(data, args).start()
    yield srv
    srv.stop()


def api_routes(srv: ServerProcess) -> set[tuple[str, str]]:
    spec = httpx.get(f"{srv.base_url}/openapi.json").json()
    return {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        if path.startswith("/api/")
        for method in ops
    }


def call(srv: ServerProcess, method: str, path: str, token: str | None) -> httpx.Response:
    url = srv.base_url + re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = BODIES.get(path)
    return httpx.request(method, url, json=body, headers=headers, timeout=60)


def test_every_api_route_is_classified(auth_server: ServerProcess) -> None:
    assert api_routes(auth_server) == WRITE_ROUTES | READ_ROUTES


@pytest.mark.parametrize(("method", "path"), sorted(WRITE_ROUTES | READ_ROUTES))
def test_route_requires_a_valid_token(auth_server: ServerProcess, method: str, path: str) -> None:
    missing = call(auth_server, method, path, None)
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"] == "unauthorized"
    for wrong in ("nope", INGEST, READ + "x"):
        resp = call(auth_server, method, path, wrong)
        assert resp.status_code == 401, (wrong, resp.text)
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
    allowed = call(auth_server, method, path, WRITE)
    assert allowed.status_code not in (401, 403), allowed.text


@pytest.mark.parametrize(("method", "path"), sorted(READ_ROUTES))
def test_read_and_write_tokens_can_read(auth_server: ServerProcess, method: str, path: str) -> None:
    for token in (READ, WRITE):
        resp = call(auth_server, method, path, token)
        assert resp.status_code not in (401, 403), resp.text


def test_open_routes(auth_server: ServerProcess) -> None:
    for path in ("/healthz", "/", "/static/app.js", "/static/app.css"):
        assert httpx.get(auth_server.base_url + path).status_code == 200, path
    page = httpx.get(auth_server.base_url + "/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "/api/v1/dashboard" in page.text  # the shell only points at the protected data
    assert httpx.get(auth_server.base_url + "/static/../app.py").status_code == 404
    assert httpx.get(auth_server.base_url + "/static/nope.js").status_code == 404


def test_ingest_token_is_separate(auth_server: ServerProcess) -> None:
    url = f"{auth_server.base_url}/v1/traces"
    assert httpx.post(url, json={"resourceSpans": []}).status_code == 401
    ok = httpx.post(url, json={"resourceSpans": []}, headers={"Authorization": f"Bearer {INGEST}"})
    assert ok.status_code == 200
