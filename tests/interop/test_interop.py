"""Third-party instrumentation, for real: the OpenAI client traced by OpenInference,
OpenLLMetry and the official OTel GenAI instrumentor, and LangChain traced by OpenInference's
and OpenLLMetry's LangChain instrumentors (pinned, in ``.venv-interop``, built by
``scripts/setup-interop.sh``), exporting with the OTel SDK over OTLP/HTTP and gRPC to the real
server, against a stub OpenAI-compatible server that serves two adapters by name.

``tests/interop/test_fixtures.py`` replays what the OpenAI-client runs exported (recorded with
``PREFIXSCOPE_RECORD_INTEROP=1``) so the fast suite keeps the same checks without the venv;
``tests/instrumentation/test_shapes.py`` replays recorded LangChain shapes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.interop.expect import CONVENTIONS, check, register_variants
from tests.interop.stub_openai import USAGE, stub_openai_server
from tests.support.api_fixtures import sql_dicts
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess

ROOT = REPO_ROOT
PYTHON = ROOT / ".venv-interop" / "bin" / "python"
DRIVER = ROOT / "tests" / "interop" / "driver.py"
LANGCHAIN_DRIVER = ROOT / "tests" / "interop" / "langchain_driver.py"
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


def _drive_langchain(setup: str, srv: ServerProcess, openai_url: str) -> dict[str, Any]:
    """Run one LangChain setup; returns the driver's account of what it ran."""
    cmd = [
        str(PYTHON),
        str(LANGCHAIN_DRIVER),
        setup,
        "--otlp",
        srv.base_url,
        "--openai",
        openai_url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    ran: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return ran


#: what the stub answers every successful call with
TOKENS = (
    USAGE["prompt_tokens"],
    USAGE["completion_tokens"],
    USAGE["prompt_tokens_details"]["cached_tokens"],
)
#: the stub waits this long before a stream's first chunk (ms)
FIRST_CHUNK_DELAY_MS = 50.0
#: timer slack between the driver's clock and the SDK's span times (ms)
SLACK_MS = 5.0


@pytest.mark.parametrize(
    "setup", ["openinference", "openllmetry", "openinference-dual", "openllmetry-dual"]
)
def test_langchain_requests_are_the_model_calls_made(
    start_server: Callable[..., ServerProcess], setup: str
) -> None:
    """LangChain, traced live by a real LangChain instrumentor (and, in the dual setups, the
    same vendor's OpenAI instrumentor too): a ``prompt | ChatOpenAI`` chain invoked, the same
    chain streamed, a chain whose call the server fails, and an agent (a runnable named
    ``radiology_agent``: model -> tool -> model). The ``requests`` view of the traces each
    scenario produced must hold exactly the model calls the driver made, in order: its model,
    whether it failed, the stub's usage (12 prompt, 7 completion, 8 cached tokens) on every
    call that succeeded and none on the failed one, a latency within the driver's own timing
    of the call (and, streamed, at least the stub's 50 ms before the first chunk); in the
    OpenInference dual setup, the streamed request's TTFT, which only the OpenAI client's span
    (in a trace of its own) carries, between the stub's delay and the first chunk the driver
    received.

    Counted per span, every setup fails at its first scenario: the chain's call sits under a
    chain span beside a prompt/task span (3 spans for 1 call; 4 in ``openinference-dual``), the
    agent's two calls under an agent span beside a tool span (4 spans or more for 2 calls), and
    the failed call marks its chain span ERROR too (2 errors for 1 failed call; 3 in
    ``openinference-dual``). Counting only spans that carry a model name still fails
    ``openinference-dual``: each call is two such spans, in two traces, both with the full
    token counts (in the three other setups one span per call carries the model, so there only
    the wrapper spans tell the two countings apart). Checked by pointing these queries at
    ``spans``: all four fail; restricted to spans with a ``request_model``, the dual one fails.
    """
    srv = start_server()
    served: list[dict[str, Any]] = []
    with stub_openai_server(served) as url:
        ran = _drive_langchain(setup, srv, url)
    scenarios = ran["scenarios"]
    calls = [c for s in scenarios for c in s["calls"]]
    # the driver's account is what the stub was asked: the calls really made
    assert [(c["model"], c["stream"], c["failed"]) for c in calls] == [
        (s["model"], s["stream"], s["status"] != 200) for s in served
    ], (calls, served)
    assert [len(s["calls"]) for s in scenarios] == [1, 1, 1, 2], scenarios
    for scenario in scenarios:
        if setup == "openinference-dual":
            # the shape under test: the OpenAI span of each call starts a trace of its own
            assert len(scenario["traces"]) == 1 + len(scenario["calls"]), scenario
        traces = ", ".join(f"'{t}'" for t in scenario["traces"])
        rows = sql_dicts(
            srv,
            "SELECT request_model, error, input_tokens, output_tokens, cached_tokens, "
            f"latency_ms, ttft_ms FROM requests WHERE trace_id IN ({traces}) "
            "ORDER BY start_time, span_id",
        )
        name = scenario["name"]
        assert len(rows) == len(scenario["calls"]), (setup, name, rows)
        for row, call in zip(rows, scenario["calls"], strict=True):
            assert (row["request_model"], row["error"]) == (call["model"], call["failed"]), (
                setup,
                name,
                row,
            )
            tokens = (row["input_tokens"], row["output_tokens"], row["cached_tokens"])
            assert tokens == ((None, None, None) if call["failed"] else TOKENS), (name, row)
            assert row["latency_ms"] <= call["wall_ms"] + SLACK_MS, (name, row, call)
            if call["stream"]:
                assert row["latency_ms"] >= FIRST_CHUNK_DELAY_MS, (name, row)
                if setup == "openinference-dual":
                    ttft = row["ttft_ms"]
                    assert ttft is not None, row
                    assert FIRST_CHUNK_DELAY_MS - SLACK_MS <= ttft <= call["first_chunk_ms"], (
                        row,
                        call,
                    )
    # and nothing else of the service is a request
    (total,) = sql_dicts(
        srv,
        "SELECT count(*) AS n, count(*) FILTER (WHERE error) AS errors FROM requests "
        f"WHERE service_name = 'interop-langchain-{setup}'",
    )
    assert (total["n"], total["errors"]) == (len(calls), sum(c["failed"] for c in calls)), total
