"""The interop suite's recorded exports (``tests/fixtures/otlp/interop/*.pb``: what the real
OpenInference, OpenLLMetry and OTel GenAI instrumentors sent, traces and GenAI log events),
replayed through the real server with the same checks as ``test_interop.py``."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.interop.expect import CONVENTIONS, check, register_variants
from tests.support.paths import FIXTURES as FIXTURES_DIR
from tests.support.serverproc import ServerProcess

FIXTURES = FIXTURES_DIR / "otlp" / "interop"


def test_recorded_instrumentor_exports(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server()
    # the log events first for one of them: the join does not care which arrives first
    for name in CONVENTIONS:
        for kind in ("logs", "traces"):
            path = FIXTURES / f"{name}.{kind}.pb"
            if kind == "traces":
                assert path.exists(), f"missing recorded fixture {path.name}"
            if not path.exists():
                continue
            resp = httpx.post(
                f"{srv.base_url}/v1/{kind}",
                content=path.read_bytes(),
                headers={"Content-Type": "application/x-protobuf"},
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
    assert (FIXTURES / "otel-genai.logs.pb").exists()
    register_variants(srv)
    for name in CONVENTIONS:
        check(srv, name)
