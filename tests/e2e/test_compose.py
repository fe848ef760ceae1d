"""The docker-compose deliverable: schema-valid, and wired the way the server actually runs.

No Docker engine is needed: the compose file is validated with ``check-jsonschema`` against the
compose-spec schema kept in ``deploy/compose-spec.json``, and its wiring (ports, volume,
collector pipeline, Dockerfile) is checked against the code.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefixscope.config import Settings
from tests.support.paths import ROOT as REPO_ROOT

ROOT = REPO_ROOT
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "deploy" / "compose-spec.json"
OTELCOL = ROOT / "deploy" / "otelcol.yaml"
DOCKERFILE = ROOT / "Dockerfile"
#: compose-spec/compose-spec schema/compose-spec.json, stored verbatim (update deliberately).
SCHEMA_SHA256 = "bc50c2d79102aed8df21b3a13e56c9396c7a06da6cff5ce37629f2ee7eb41735"
SERVE_ARGS = ["serve", "--host", "0.0.0.0", "--data-dir", "/data"]


def check_jsonschema(instance: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(exe), "--schemafile", str(SCHEMA), str(instance)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def test_schema_is_the_stored_compose_spec() -> None:
    text = SCHEMA.read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(text)
    assert (schema["$id"], schema["title"]) == ("compose_spec.json", "Compose Specification")


def test_compose_file_is_valid_compose_spec() -> None:
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


BROKEN = {
    "ports-not-a-list": (
        "services:\n  prefixscope:\n    image: prefixscope:local\n    ports: '4318:4318'\n",
        "$.services.prefixscope.ports",
    ),
    "misspelled-top-level-key": (
        "servics:\n  prefixscope:\n    image: prefixscope:local\n",
        "servics",
    ),
    "unknown-depends-on-condition": (
        "services:\n  a:\n    image: a\n    depends_on:\n      b:\n"
        "        condition: service_ready\n  b:\n    image: b\n",
        "$.services.a.depends_on",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_compose_document_is_rejected(name: str, tmp_path: Path) -> None:
    text, where = BROKEN[name]
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text)
    result = check_jsonschema(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Schema validation errors were encountered" in result.stdout + result.stderr
    assert where in result.stdout + result.stderr


def test_server_service_runs_prefixscope_with_a_data_volume() -> None:
    compose = load_yaml(COMPOSE)
    server = compose["services"]["prefixscope"]
    assert server["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert server["command"] == SERVE_ARGS
    assert server["volumes"] == ["prefixscope-data:/data"]
    assert "prefixscope-data" in compose["volumes"]
    http_port = Settings().http_port
    assert [p.rsplit(":", 1)[1] for p in server["ports"]] == [str(http_port)]
    assert f"127.0.0.1:{http_port}/healthz" in " ".join(server["healthcheck"]["test"])
    assert server["environment"]["PREFIXSCOPE_TOKENS"] == "${PREFIXSCOPE_INGEST_TOKEN:-}"


def test_collector_receives_otlp_and_forwards_to_prefixscope() -> None:
    compose = load_yaml(COMPOSE)
    collector = compose["services"]["otel-collector"]
    image, _, tag = collector["image"].partition(":")
    assert image == "otel/opentelemetry-collector-contrib"
    assert tag and tag != "latest", "pin the collector image"
    assert sorted(collector["ports"]) == ["4317:4317", "4318:4318"]
    assert collector["depends_on"] == {"prefixscope": {"condition": "service_healthy"}}
    mount, target = collector["volumes"][0].split(":")[:2]
    assert (ROOT / mount).resolve() == OTELCOL
    assert collector["command"] == [f"--config={target}"]

    config = load_yaml(OTELCOL)
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    assert "batch" in pipeline["processors"]
    protocols = config["receivers"]["otlp"]["protocols"]
    assert (protocols["grpc"]["endpoint"], protocols["http"]["endpoint"]) == (
        "0.0.0.0:4317",
        "0.0.0.0:4318",
    )
    (exporter_name,) = pipeline["exporters"]
    exporter = config["exporters"][exporter_name]
    assert exporter_name.split("/")[0] == "otlphttp"
    assert exporter["endpoint"] == f"http://prefixscope:{Settings().http_port}"
    assert exporter["headers"]["authorization"] == "Bearer ${env:PREFIXSCOPE_INGEST_TOKEN}"
    assert collector["environment"]["PREFIXSCOPE_INGEST_TOKEN"] == "${PREFIXSCOPE_INGEST_TOKEN:-}"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    out = []
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_installs_server_extra_and_serves_on_all_interfaces() -> None:
    instructions = _dockerfile_instructions()
    runs = [rest for word, rest in instructions if word == "RUN"]
    assert any('pip install ".[server]"' in r for r in runs)
    # the compiled decoder is built, and a failed build fails the image
    assert any('PREFIXSCOPE_NATIVE=require pip install ".[server]"' in r for r in runs)
    entrypoint = json.loads(next(r for w, r in instructions if w == "ENTRYPOINT"))
    cmd = json.loads(next(r for w, r in instructions if w == "CMD"))
    assert entrypoint + cmd == ["prefixscope", *SERVE_ARGS]
    assert entrypoint == ["prefixscope"]

    copied = [
        source
        for word, rest in instructions
        if word == "COPY"
        for source in shlex.split(rest)[:-1]  # the last word is the destination
        if not source.startswith("--")
    ]
    assert "setup.py" in copied  # the extension's build
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dirs = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    assert package_dirs <= set(copied), "every package folder must be copied into the image"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY source {source} does not exist"


SCALE_OUT = ["prefixscope-collector-1", "prefixscope-collector-2", "prefixscope-collector-3"]
LB_CONFIG = ROOT / "deploy" / "otelcol-loadbalancing.yaml"


def _parses(args: list[str]) -> None:
    """``args`` (after ``prefixscope``) is a valid invocation of the real CLI (click parses it
    and raises on an unknown command, option or value)."""
    import click

    from prefixscope.cli import main

    cmd: click.Command = main
    words = list(args)
    while isinstance(cmd, click.Group):
        name = words.pop(0)
        assert name in cmd.commands, f"unknown command {name!r} in {args}"
        cmd = cmd.commands[name]
    cmd.make_context(cmd.name or "", words)


def _shell_prefixscope(command: list[str]) -> list[list[str]]:
    """The ``prefixscope …`` invocations inside a ``sh -c`` loop."""
    script = command[-1]
    calls = []
    for part in script.replace("do ", ";").split(";"):
        words = shlex.split(part)
        if words and words[0] == "prefixscope":
            calls.append(words[1:])
    return calls


def test_scale_out_profile_wires_collectors_balancer_compaction_and_analytics() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    # the default `docker compose up` is unchanged: only the scale-out services have profiles
    assert not any("profiles" in services[s] for s in ("prefixscope", "otel-collector"))
    scale_out = {n for n, s in services.items() if s.get("profiles") == ["scale-out"]}
    assert scale_out == {*SCALE_OUT, "otelcol-lb", "lake-compact", "lake-analytics"}
    lakes = set()
    for name in SCALE_OUT:
        svc = services[name]
        assert svc["image"] == services["prefixscope"]["image"]
        cmd = svc["command"]
        _parses(cmd)
        assert cmd[cmd.index("--store") + 1] == "lake"
        assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
        lake = cmd[cmd.index("--lake-path") + 1]
        (volume,) = svc["volumes"]
        assert volume == f"prefixscope-lake:{lake}"
        lakes.add(lake)
        assert "ports" not in svc, "collectors are reached through the balancer only"
    assert len(lakes) == 1 and "prefixscope-lake" in compose["volumes"]
    (lake,) = lakes

    lb = services["otelcol-lb"]
    assert lb["image"] == services["otel-collector"]["image"]
    assert lb["depends_on"] == {n: {"condition": "service_healthy"} for n in SCALE_OUT}
    host_ports = {p.split(":")[0] for p in services["otel-collector"]["ports"]}
    lb_host_ports = {p.rsplit(":", 1)[0] for p in lb["ports"]}
    assert not host_ports & lb_host_ports, "both collectors may run at once"
    assert sorted(p.rsplit(":", 1)[1] for p in lb["ports"]) == ["4317", "4318"]
    mount, target = lb["volumes"][0].split(":")[:2]
    assert (ROOT / mount).resolve() == LB_CONFIG
    assert lb["command"] == [f"--config={target}"]
    config = load_yaml(LB_CONFIG)
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    assert pipeline["exporters"] == ["loadbalancing"]
    exporter = config["exporters"]["loadbalancing"]
    assert exporter["routing_key"] == "traceID"
    grpc = Settings().grpc_port
    assert exporter["resolver"]["static"]["hostnames"] == [f"{n}:{grpc}" for n in SCALE_OUT]
    otlp = exporter["protocol"]["otlp"]
    assert otlp["headers"]["authorization"] == "Bearer ${env:PREFIXSCOPE_INGEST_TOKEN}"
    assert lb["environment"]["PREFIXSCOPE_INGEST_TOKEN"] == "${PREFIXSCOPE_INGEST_TOKEN:-}"

    for name, expected in (("lake-compact", ["lake", "compact"]), ("lake-analytics", None)):
        svc = services[name]
        assert svc["volumes"] == [f"prefixscope-lake:{lake}"]
        (call,) = _shell_prefixscope(svc["command"])
        _parses(call)
        if expected:
            assert call[:2] == expected
        else:
            assert call[:2] == ["analytics", "run"]
            assert "--out" in call
        assert call[call.index("--lake-path") + 1] == lake


def test_dockerfile_prepares_the_lake_mount_for_the_unprivileged_user() -> None:
    runs = [rest for word, rest in _dockerfile_instructions() if word == "RUN"]
    assert any("mkdir -p /data /lake" in r and "chown prefixscope /data /lake" in r for r in runs)
