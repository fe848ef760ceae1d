"""Log flood beside trace ingest: ``POST /v1/logs`` must never starve ``POST /v1/traces``.

A prober sends a one-span ``POST /v1/traces`` every 100 ms, first alone (the baseline), then
while several clients post big OTLP/JSON log bodies (``gen_ai.user.message`` records, every
record distinct) without pause. Then the server gets SIGTERM during the flood and must exit
by itself in time. Figures: the probe's p50/p99/max alone and under the flood, log records
acknowledged per second, the log sender's 429/503 answers (each must carry Retry-After),
SIGTERM exit time, and every acknowledged log record and probe span in the store afterwards.

Usage:  .venv/bin/python bench/reliability/logflood.py [--seconds 30] [--clients 4]
        [--records 10000] [--exit-bound-s 45]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import signal
import subprocess
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import duckdb
import pyarrow as pa

from bench.reliability.common import (
    PROTOBUF,
    Report,
    ServerProcess,
    main_exit,
    missing_keys,
    percentile,
    request_keys,
    scratch_dir,
    vm_hwm_mb,
    workload_request,
)
from prefixscope.collector.decoding.common import Limits
from prefixscope.collector.decoding.logs import decode_logs_json

JSON = "application/json"
PROBE_EVERY_S = 0.1
PROBE_TIMEOUT_S = 30.0


def log_body(client: int, seq: int, records: int) -> bytes:
    """One OTLP/JSON logs export of ``records`` distinct GenAI user-message events."""
    now = time.time_ns()
    recs = ",".join(
        f'{{"timeUnixNano":"{now + i}","traceId":"{client + 1:08x}{seq:08x}{i:016x}",'
        f'"spanId":"{i + 1:016x}","eventName":"gen_ai.user.message",'
        f'"body":{{"stringValue":"question {client}-{seq}-{i}: is this a flood?"}}}}'
        for i in range(records)
    )
    head = '{"resourceLogs":[{"scopeLogs":[{"scope":{"name":"flood"},"logRecords":['
    return (head + recs + "]}]}]}").encode()


class Prober:
    """A one-span trace request every ``PROBE_EVERY_S``, each in its own thread, so a stalled
    server shows as many slow probes, not one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.results: list[tuple[float, float | None]] = []  # (started, latency or None)
        self.acked: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seq = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending and wait for the probes in flight (each has a 30 s timeout)."""
        self._stop.set()
        self._thread.join()
        for t in self._threads:
            t.join(PROBE_TIMEOUT_S + 5)

    def between(self, t0: float, t1: float) -> tuple[list[float], int]:
        """Latencies of the probes started in [t0, t1), and how many failed."""
        with self.lock:
            picked = [lat for start, lat in self.results if t0 <= start < t1]
        return [lat for lat in picked if lat is not None], sum(lat is None for lat in picked)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._seq += 1
            t = threading.Thread(target=self._one, args=(self._seq,), daemon=True)
            t.start()
            self._threads.append(t)
            self._stop.wait(PROBE_EVERY_S)

    def _one(self, seq: int) -> None:
        req = workload_request(1, seed=700_000 + seq)
        body = req.SerializeToString()
        t0 = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT_S)
            conn.request("POST", "/v1/traces", body, {"Content-Type": PROTOBUF})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
        with self.lock:
            self.results.append((t0, time.monotonic() - t0 if ok else None))
            if ok:
                self.acked.extend(request_keys(req))


class Flood:
    """``clients`` threads posting log bodies without pause."""

    def __init__(
        self, port: int, clients: int, records: int, bodies: int = 24, gzip_level: int = 0
    ) -> None:
        self.port = port
        self.records = records
        # made before the flood, so the sender's own CPU does not compete with the server's
        # (after a client's last body it sends the first again: the server stores nothing
        # twice, but decodes and checks every record)
        self.bodies = [[log_body(c, k, records) for k in range(bodies)] for c in range(clients)]
        self.gzip_level = gzip_level
        self.wire = [
            [gzip.compress(b, gzip_level) if gzip_level else b for b in mine]
            for mine in self.bodies
        ]
        self.lock = threading.Lock()
        self.statuses: dict[int, int] = {}
        self.missing_retry_after = 0
        self.transport_errors = 0
        self.acked_bodies: list[bytes] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(c,), daemon=True) for c in range(clients)
        ]

    def start(self) -> Flood:
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout: float) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)

    def _client(self, c: int) -> None:
        seq = 0
        while not self.stop.is_set():
            k = seq % len(self.bodies[c])
            body = self.bodies[c][k]
            seq += 1
            headers = {"Content-Type": JSON}
            if self.gzip_level:
                headers["Content-Encoding"] = "gzip"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                conn.request("POST", "/v1/logs", self.wire[c][k], headers)
                resp = conn.getresponse()
                resp.read()
                conn.close()
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.transport_errors += 1
                self.stop.wait(0.2)
                continue
            with self.lock:
                self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    self.acked_bodies.append(body)
                elif resp.status in (429, 503) and not resp.getheader("Retry-After"):
                    self.missing_retry_after += 1
            if resp.status in (429, 503):
                self.stop.wait(float(resp.getheader("Retry-After") or 1))

    @property
    def acked_records(self) -> int:
        return len(self.acked_bodies) * self.records


def missing_log_records(data_dir: Path, bodies: list[bytes]) -> tuple[int, int]:
    """(acknowledged log records absent from ``log_events``, rows in it); reads the file, so
    the server must have stopped."""
    unique = {id(b): b for b in bodies}.values()
    ids = sorted({row[0] for body in unique for row in decode_logs_json(body, Limits()).rows})
    con = duckdb.connect(str(data_dir / "prefixscope.duckdb"), read_only=True)
    try:
        con.register("acked", pa.table({"id": pa.array(ids, pa.string())}))
        n = con.execute("SELECT count(*) FROM acked ANTI JOIN log_events USING (id)").fetchall()
        rows = con.execute("SELECT count(*) FROM log_events").fetchall()
    finally:
        con.close()
    return int(n[0][0]), int(rows[0][0])


def run(*, seconds: float = 30.0, clients: int = 4, records: int = 10_000,
        baseline_s: float = 8.0, exit_bound_s: float = 45.0, p99_slack_ms: float = 250.0,
        bodies: int = 24, gzip_level: int = 0, args: tuple[str, ...] = ()) -> Report:  # fmt: skip
    rep = Report("logflood")
    data = scratch_dir("logflood") / "data"
    srv = ServerProcess(data, list(args))
    srv.start()
    assert srv.proc is not None
    probe = Prober(srv.http_port).start()
    t_base = time.monotonic()
    time.sleep(baseline_s)
    flood = Flood(srv.http_port, clients, records, bodies, gzip_level).start()
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    with flood.lock:
        acked_during = flood.acked_records
    probe.stop()  # the probes in flight are answered (or time out) before the SIGTERM
    peak = vm_hwm_mb(srv.proc.pid)
    base_lat, base_fail = probe.between(t_base, t0)
    flood_lat, flood_fail = probe.between(t0, t1)
    wall = t1 - t0
    # SIGTERM while the flood goes on: the server must drain and exit by itself
    t_term = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    killed = False
    try:
        srv.proc.wait(exit_bound_s * 2)
    except subprocess.TimeoutExpired:
        killed = True
        srv.proc.kill()
        srv.proc.wait(30)
    exit_s = time.monotonic() - t_term
    flood.join(150)
    lost_logs, stored_logs = missing_log_records(data, flood.acked_bodies)
    lost_spans, dups = missing_keys(data, probe.acked)

    b99, f99 = percentile(base_lat, 99) * 1000, percentile(flood_lat, 99) * 1000
    rep.add("probe alone: one-span requests", len(base_lat))
    rep.add("probe alone: p50 / p99 (ms)",
            f"{percentile(base_lat, 50) * 1000:.1f} / {b99:.1f}")  # fmt: skip
    rep.add("log clients x records per body", f"{clients} x {records:,}")
    rep.add("probe under flood: one-span requests", len(flood_lat))
    rep.add("probe under flood: p50 / p99 / max (ms)",
            f"{percentile(flood_lat, 50) * 1000:.1f} / {f99:.1f} / "
            f"{max(flood_lat, default=float('nan')) * 1000:.1f}",
            f"p99 <= alone + {p99_slack_ms:g}", f99 <= b99 + p99_slack_ms)  # fmt: skip
    rep.add("probe failures (alone / flood)", f"{base_fail} / {flood_fail}", "0 / 0",
            base_fail == 0 and flood_fail == 0)  # fmt: skip
    rep.add("log records acknowledged / s", acked_during / wall)
    rep.add("log records stored (distinct, whole run)", stored_logs)
    shed = flood.statuses.get(429, 0) + flood.statuses.get(503, 0)
    rep.add("log answers 200 / shed (429, 503)", f"{flood.statuses.get(200, 0)} / {shed}",
            "shed > 0", shed > 0)  # fmt: skip
    rep.add("server peak RSS (MiB)", round(peak))
    other = sum(flood.statuses.values()) - shed - flood.statuses.get(200, 0)
    rep.add("log answers shed without Retry-After", flood.missing_retry_after, "0",
            flood.missing_retry_after == 0)  # fmt: skip
    rep.add("log answers other than 200/429/503", other, "0", other == 0)
    rep.add("SIGTERM under flood: exit (s)",
            f"{exit_s:.1f}" + (" (SIGKILL needed)" if killed else ""),
            f"<= {exit_bound_s:g}", not killed and exit_s <= exit_bound_s)  # fmt: skip
    rep.add("acknowledged log records lost", lost_logs, "0", lost_logs == 0)
    rep.add("acknowledged probe spans lost", lost_spans, "0", lost_spans == 0)
    rep.add("duplicates in spans", dups, "0", dups == 0)
    rep.notes.append(f"server log: {srv.log_path}")
    return rep


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of the flood")
    ap.add_argument("--clients", type=int, default=4, help="concurrent log senders")
    ap.add_argument("--records", type=int, default=10_000, help="log records per body")
    ap.add_argument("--bodies", type=int, default=24, help="distinct bodies per client")
    ap.add_argument("--gzip-level", type=int, default=0, help="gzip the bodies (0: no)")
    ap.add_argument("--baseline-s", type=float, default=8.0, help="probe alone first, seconds")
    ap.add_argument("--exit-bound-s", type=float, default=45.0, help="SIGTERM exit bound")
    ap.add_argument("--p99-slack-ms", type=float, default=250.0,
                    help="probe p99 under flood may exceed p99 alone by this")  # fmt: skip
    a, server_args = ap.parse_known_args(argv)
    return main_exit(run(**vars(a), args=tuple(server_args)))


if __name__ == "__main__":
    main()
