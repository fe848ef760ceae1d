"""Third-party instrumentation, for real: the OpenAI client traced by OpenInference,
OpenLLMetry and the official OTel GenAI instrumentor (pinned, in ``.venv-interop``, built by
``scripts/setup-interop.sh``), exporting with the OTel SDK over OTLP/HTTP and gRPC to the real
server, against a stub OpenAI-compatible server that serves two adapters by name.

``tests/test_interop_fixtures.py`` replays what these runs exported (recorded with
``PREFIXSCOPE_RECORD_INTEROP=1``) so the fast suite keeps the same checks without the venv.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .interop.expect import CONVENTIONS, check, register_variants
from .interop.stub_openai import stub_openai_server
from .serverproc import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv-interop" / "bin" / "python"
DRIVER = ROOT / "tests" / "interop" / "driver.py"
FIXTURES = ROOT / "tests" / "fixtures" / "otlp" / "interop"

pytestmark = pytest.mark.skipif(
    not PYTHON.exists(),
    reason="the interop venv is missing: run scripts/setup-interop.sh (make test does)",
)


def _drive(name: str, srv: ServerProcess, openai_url: str, protocol: str) -> None:
    cmd = [str(PYTHON), str(DRIVER), name, "--otlp", srv.base_url, "--openai", openai_url]
    cmd += ["--protocol", protocol, "--grpc", srv.grpc_target]
    if os.environ.get("PREFIXSCOPE_RECORD_INTEROP") == "1" and protocol == "http":
        cmd += ["--record", str(FIXTURES)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_third_party_instrumentors_attributed_scored_and_complete(
    start_server: Callable[..., ServerProcess], protocol: str
) -> None:
    srv = start_server()
    with stub_openai_server() as url:
        for name in CONVENTIONS:
            _drive(name, srv, url, protocol)
    register_variants(srv)  # after the traffic: earlier spans are attributed too
    for name in CONVENTIONS:
        check(srv, name)
