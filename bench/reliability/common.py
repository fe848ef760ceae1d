"""Shared pieces of the reliability benchmarks: the server process, figures, workload, checks."""

from __future__ import annotations

import http.client
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from tests.support.serverproc import ServerProcess, free_port  # noqa: E402

__all__ = [
    "PROTOBUF",
    "Figure",
    "Report",
    "ServerProcess",
    "free_port",
    "missing_keys",
    "percentile",
    "post",
    "request_keys",
    "scratch_dir",
    "vm_hwm_mb",
    "workload_request",
]

PROTOBUF = "application/x-protobuf"
Key = tuple[str, str]


@dataclass(slots=True)
class Figure:
    """One measured figure, its goal, and whether the goal was met (None: informative)."""

    name: str
    value: str
    goal: str = ""
    ok: bool | None = None


@dataclass(slots=True)
class Report:
    """What one benchmark measured."""

    bench: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: object, goal: str = "", ok: bool | None = None) -> Figure:
        fig = Figure(name, value if isinstance(value, str) else _fmt(value), goal, ok)
        self.figures.append(fig)
        return fig

    @property
    def ok(self) -> bool:
        return all(f.ok is not False for f in self.figures)

    def failures(self) -> list[Figure]:
        return [f for f in self.figures if f.ok is False]

    def table(self) -> str:
        return markdown_table([self])

    def print(self) -> None:
        print(self.table())
        for note in self.notes:
            print(f"- {note}")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(reports: Iterable[Report]) -> str:
    lines = ["| bench | figure | value | goal | met |", "| --- | --- | --- | --- | --- |"]
    for rep in reports:
        for f in rep.figures:
            met = {True: "yes", False: "**NO**", None: ""}[f.ok]
            lines.append(f"| {rep.bench} | {f.name} | {f.value} | {f.goal} | {met} |")
    return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a live process (VmHWM), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"ps-{prefix}-"))


def workload_request(n_spans: int, seed: int) -> ExportTraceServiceRequest:
    """One request of the reference workload (bench/workload.py)."""
    from bench.workload import make_request

    req: ExportTraceServiceRequest = make_request(n_spans, seed=seed)
    return req


def request_keys(req: ExportTraceServiceRequest) -> list[Key]:
    """The (trace_id, span_id) of every span in a request, lower-case hex as stored."""
    return [
        (sp.trace_id.hex(), sp.span_id.hex())
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for sp in ss.spans
    ]


def post(
    port: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    path: str = "/v1/traces",
    timeout: float = 30.0,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST to 127.0.0.1; (status, lower-cased headers, body)."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body, {"Content-Type": PROTOBUF, **(headers or {})})
        resp = c.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        if own:
            c.close()


def missing_keys(data_dir: Path, keys: Iterable[Key]) -> tuple[int, int]:
    """(acknowledged keys absent from ``spans``, duplicated keys in ``spans``).

    Reads the DuckDB file directly (replaying its WAL), so no server may hold it.
    """
    trace_ids, span_ids = [], []
    for t, s in keys:
        trace_ids.append(t)
        span_ids.append(s)
    acked = pa.table({"trace_id": trace_ids, "span_id": span_ids})
    con = duckdb.connect(str(data_dir / "prefixscope.duckdb"), read_only=True)
    try:
        con.register("acked", acked)
        missing = con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT trace_id, span_id FROM acked) a "
            "ANTI JOIN spans s USING (trace_id, span_id)"
        ).fetchall()[0][0]
        dups = con.execute(
            "SELECT count(*) - count(DISTINCT (trace_id, span_id)) FROM spans"
        ).fetchall()[0][0]
    finally:
        con.close()
    return int(missing), int(dups)


def wait_healthy(srv: ServerProcess, timeout: float = 30.0) -> float:
    """Seconds until /healthz answers 200 (inf if it never does within ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return time.monotonic() - start
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    return math.inf


def main_exit(report: Report, *, strict: bool = True) -> Any:
    """Print the report; exit status 1 when a goal was missed (for CI use)."""
    report.print()
    if strict and not report.ok:
        raise SystemExit(1)
    return report
