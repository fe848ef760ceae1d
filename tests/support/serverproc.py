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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
