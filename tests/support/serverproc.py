"""Run the real ``prefixscope serve`` as a subprocess on free 127.0.0.1 ports (test helper)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

#: under pytest-xdist each worker takes its ports from a range of its own, below the kernel's
#: ephemeral range: two workers can never be handed the same free port (one server would then
#: fail to bind, and its health check could reach the other worker's server)
_WORKER_PORTS = 2_000
_FIRST_PORT = 20_000
_next_port: list[int] = []


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    first = _FIRST_PORT + int(worker[2:]) * _WORKER_PORTS
    if not _next_port:
        _next_port.append(first)
    for _ in range(_WORKER_PORTS):
        port = _next_port[0]
        _next_port[0] = first + (port + 1 - first) % _WORKER_PORTS
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (by something else on this machine): the next one
            return port
    raise RuntimeError(f"no free port in this worker's range {first}-{first + _WORKER_PORTS}")


@dataclass
class ServerProcess:
    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    http_port: int = 0
    grpc_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    #: own process group (so a test can signal the server and its workers together)
    start_new_session: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        cmd = [
            sys.executable,
            "-m",
            "prefixscope.cli",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--log-level",
            "warning",
            *self.args,
        ]
        env = {**os.environ, **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=self.start_new_session,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def metric_values(
    srv: ServerProcess, token: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed; ``token``: a server with tokens answers /metrics to a read token only."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(f"{srv.base_url}/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
