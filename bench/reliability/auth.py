"""Auth: every route with no token, a wrong token, and a read token on write routes.

The server runs with an ingest token, a read token and a write token. Routes are enumerated
from ``/openapi.json`` (every ``/api/`` operation) plus OTLP ``POST /v1/traces`` and
``/v1/logs`` over HTTP and gRPC ``TraceService/Export`` and ``LogsService/Export``.
Expected: 401 (UNAUTHENTICATED) without a token or with a wrong one, 403 for a token of
another scope (a read token on a write route or on ingest, the ingest token on ``/api``); the
right token gets the route's exact success status (a positive control, so the check cannot
pass by refusing everything, nor by a 500 or an unknown-route 404); ``/metrics`` needs a read
token; ``/healthz`` is open.

Usage:  .venv/bin/python bench/reliability/auth.py
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc
import httpx

from bench.reliability.common import Report, ServerProcess, main_exit, scratch_dir

INGEST, READ, WRITE = "ingest-tok-1", "read-tok-1", "write-tok-1"
WRONG = "not-a-token"
SAMPLE = {"alert_id": "a1", "prefix_id": "radiology", "trace_id": "ab" * 16}
BODIES: dict[str, object] = {
    "/api/v1/scores": {"trace_id": "ab" * 16, "name": "G", "value": 0.5},
    "/api/v1/feedback": {"trace_id": "ab" * 16, "kind": "thumbs_up"},
    "/api/v1/sql": {"sql": "SELECT 1"},
    "/api/v1/prefixes/{prefix_id}": {"owner": "me"},
    "/api/v1/regressions/run": {},
    "/api/v1/evaluations/run": {"evaluators": ["JSONValidation"]},
}
#: required query parameters of a route
QUERIES = {"/api/v1/regressions/slices": {"prefix_id": "radiology"}}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def _routes(spec: dict[str, object]) -> list[tuple[str, str]]:
    paths = spec["paths"]
    assert isinstance(paths, dict)
    return sorted(
        (m.upper(), p)
        for p, ops in paths.items()
        if p.startswith("/api/")
        for m in ops
        if m in ("get", "post", "put", "patch", "delete")
    )


def _success(path: str) -> int:
    """The right token's exact answer: the store has the prefix and the trace, no alert."""
    return 404 if "{alert_id}" in path else 200


def _is_write(method: str, path: str) -> bool:
    return method != "GET" and path != "/api/v1/sql"  # SQL is a read-only query (POST body)


def _call(c: httpx.Client, method: str, path: str, token: str | None) -> int:
    url = re.sub(r"\{(\w+)\}", lambda m: SAMPLE.get(m.group(1), "x"), path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if path in ("/v1/traces", "/v1/logs"):  # an empty OTLP export request
        headers["Content-Type"] = "application/x-protobuf"
        return c.request(method, url, headers=headers, content=b"").status_code
    body = BODIES.get(path)
    return c.request(
        method,
        url,
        headers=headers,
        json=body if method != "GET" else None,
        params=QUERIES.get(path),
    ).status_code


def _grpc(target: str, token: str | None, method: str = EXPORT) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(b"", metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def run() -> Report:
    rep = Report("auth")
    data = scratch_dir("auth") / "data"
    srv = ServerProcess(data, ["--token", INGEST, "--read-token", READ, "--write-token", WRITE,
                               "--lake-roll-interval-s", "0"])  # fmt: skip
    srv.start()
    failures: list[str] = []
    checks = 0

    def expect(what: str, got: object, allowed: tuple[object, ...]) -> None:
        nonlocal checks
        checks += 1
        if got not in allowed:
            failures.append(f"{what}: got {got}, expected one of {allowed}")

    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            spec = c.get("/openapi.json", headers={"Authorization": f"Bearer {READ}"})
            routes = _routes(spec.json())
            # what the read routes look up: a registered prefix and a stored trace
            put = "/api/v1/prefixes/{prefix_id}"
            expect("PUT prefix (setup)", _call(c, "PUT", put, WRITE), (201,))
            span = {"traceId": SAMPLE["trace_id"], "spanId": "cd" * 8, "name": "g",
                    "startTimeUnixNano": "1", "endTimeUnixNano": "2"}  # fmt: skip
            body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
            stored = c.post("/v1/traces", json=body, headers={"Authorization": f"Bearer {INGEST}"})
            expect("ingest a trace (setup)", stored.status_code, (200,))
            for method, path in routes:
                what = f"{method} {path}"
                expect(f"{what} no token", _call(c, method, path, None), (401,))
                expect(f"{what} wrong token", _call(c, method, path, WRONG), (401,))
                expect(f"{what} ingest token", _call(c, method, path, INGEST), (403,))
                if _is_write(method, path):
                    expect(f"{what} read token", _call(c, method, path, READ), (403,))
                    ok = _call(c, method, path, WRITE)
                else:
                    ok = _call(c, method, path, READ)
                expect(f"{what} right token (control)", ok, (_success(path),))
            metrics = ("GET", "/metrics")
            for token, allowed in ((None, (401,)), (WRONG, (401,)), (INGEST, (403,)),
                                   (READ, (200,))):  # fmt: skip
                expect(f"GET /metrics token={token}", _call(c, *metrics, token), allowed)
            for ingest in (("POST", "/v1/traces"), ("POST", "/v1/logs")):
                for token, allowed in ((None, (401,)), (WRONG, (401,)), (READ, (403,)),
                                       (WRITE, (403,))):  # fmt: skip
                    expect(f"POST {ingest[1]} token={token}", _call(c, *ingest, token), allowed)
                ok = _call(c, *ingest, INGEST)
                expect(f"POST {ingest[1]} right token (control)", ok, (200,))
            for doc in (("GET", "/openapi.json"), ("GET", "/docs")):  # the read scope too
                for token, allowed in ((None, (401,)), (WRONG, (401,)), (INGEST, (403,)),
                                       (READ, (200,)), (WRITE, (200,))):  # fmt: skip
                    expect(f"GET {doc[1]} token={token}", _call(c, *doc, token), allowed)
            expect("GET /healthz open", c.get("/healthz").status_code, (200,))
        target = srv.grpc_target
        unauth = grpc.StatusCode.UNAUTHENTICATED
        denied = grpc.StatusCode.PERMISSION_DENIED
        for name, method in (("Trace", EXPORT), ("Logs", LOGS_EXPORT)):
            expect(f"gRPC {name} Export no token", _grpc(target, None, method), (unauth,))
            expect(f"gRPC {name} Export wrong token", _grpc(target, WRONG, method), (unauth,))
            expect(f"gRPC {name} Export read token", _grpc(target, READ, method), (denied,))
            ok = _grpc(target, INGEST, method)
            expect(f"gRPC {name} Export right token (control)", ok, (grpc.StatusCode.OK,))
    finally:
        srv.stop()
    rep.add("routes (OpenAPI /api + /metrics + /openapi.json + /docs + OTLP HTTP + gRPC)",
            len(routes) + 7)  # fmt: skip
    rep.add("route x case checks", checks)
    rep.add("failures", len(failures), "0", not failures)
    rep.notes += failures
    return rep


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.parse_args(argv)
    return main_exit(run())


if __name__ == "__main__":
    main()
