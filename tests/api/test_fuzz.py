"""Property-based fuzzing of the OpenAPI surface with schemathesis against the real server.

Bounded (a few examples per operation, well under two minutes). Checks: no 5xx, every status
code and response body as documented, JSON where JSON is promised, and auth not ignored.
Semantic checks that JSON Schema cannot express (is this string valid SQL, a known group
key?) are not part of the contract: `positive_data_acceptance` is therefore not run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.api_fixtures import seeded_store
from tests.support.serverproc import ServerProcess

TOKEN = "fuzz-write-token"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "ignored_auth",
]


def schemathesis_cli() -> str:
    exe = Path(sys.executable).parent / "schemathesis"
    if exe.exists():
        return str(exe)
    found = shutil.which("schemathesis")
    if found is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return found


@pytest.mark.timeout(300)
def test_openapi_surface_has_no_server_errors(tmp_path: Path) -> None:
    cli = schemathesis_cli()
    data = tmp_path / "data"
    seeded_store(data)
    srv = ServerProcess(data, ["--token", TOKEN, "--sql-timeout-s", "2"]).start()
    try:
        result = subprocess.run(
            [
                cli,
                "run",
                f"{srv.base_url}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                ",".join(CHECKS),
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "12",
                "--workers",
                "1",
                "--seed",
                "20251128",
                "--include-path-regex",
                "^/api/",
                "--continue-on-failure",
                "--max-response-time",
                "30",
                "--no-color",
                "--generation-database",
                "none",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        server_log = srv.log()
    finally:
        srv.stop()
    report = result.stdout[-20_000:] + result.stderr[-5_000:]
    assert result.returncode == 0, report
    generated = re.search(r"(\d+) generated", report)
    assert generated and int(generated.group(1)) >= 100, report  # it really exercised the API
    assert "Traceback" not in server_log, server_log[-5_000:]
