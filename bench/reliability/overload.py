"""Overload: offered load well above capacity for a while (default 60 s).

Many concurrent clients send reference-workload requests (512 spans) without pause; a prober
hits ``/healthz`` every 50 ms. Figures: share of requests shed (429/503, each must carry
Retry-After), server peak RSS (VmHWM) against a configured bound, ``/healthz`` latency p99
(the server must stay responsive), p99 latency of accepted requests, and every acknowledged
span committed (read back after a graceful stop).

Usage:  .venv/bin/python bench/reliability/overload.py [--seconds 60] [--clients 32]
        [--rss-bound-mb 1024]
"""

from __future__ import annotations

import argparse
import http.client
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

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


def run(*, seconds: float = 60.0, clients: int = 32, spans: int = 512,
        rss_bound_mb: float = 1024.0, healthz_bound_ms: float = 1000.0) -> Report:  # fmt: skip
    rep = Report("overload")
    data = scratch_dir("overload") / "data"
    srv = ServerProcess(data, ["--lake-roll-interval-s", "0"])
    srv.start()
    n_payloads = 64
    reqs = [workload_request(spans, seed=90_000 + k) for k in range(n_payloads)]
    payloads = [r.SerializeToString() for r in reqs]
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    missing_retry_after = 0
    accepted_lat: list[float] = []
    acked_req: set[int] = set()
    errors = 0
    health_lat: list[float] = []
    health_fail = 0
    stop = threading.Event()
    counter = iter(range(1 << 62))

    def client() -> None:
        nonlocal missing_retry_after, errors
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set():
            with lock:
                i = next(counter)
            k = i % n_payloads
            t0 = time.monotonic()
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=60)
                conn.request("POST", "/v1/traces", payloads[k], {"Content-Type": PROTOBUF})
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                conn = None
                with lock:
                    errors += 1
                continue
            dt = time.monotonic() - t0
            with lock:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    accepted_lat.append(dt)
                    acked_req.add(k)
                elif resp.status in (429, 503) and not resp.getheader("Retry-After"):
                    missing_retry_after += 1
            if resp.status != 200:
                conn.close()  # a shed answer may leave the body unread: start afresh
                conn = None

    def prober() -> None:
        nonlocal health_fail
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
                c.request("GET", "/healthz")
                ok = c.getresponse().status == 200
                c.close()
            except (OSError, http.client.HTTPException):
                ok = False
            health_lat.append(time.monotonic() - t0)
            if not ok:
                health_fail += 1
            stop.wait(0.05)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    probe = threading.Thread(target=prober, daemon=True)
    try:
        t_start = time.monotonic()
        probe.start()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(90)
        probe.join(30)
        wall = time.monotonic() - t_start
        peak = vm_hwm_mb(srv.proc.pid) if srv.proc else float("nan")
    finally:
        srv.stop()
    acked = [key for k in sorted(acked_req) for key in request_keys(reqs[k])]
    lost, dups = missing_keys(data, acked)
    total = sum(statuses.values())
    shed = statuses.get(429, 0) + statuses.get(503, 0)
    other = total - shed - statuses.get(200, 0)
    rep.add("offered requests (512 spans) / s", total / wall)
    rep.add("accepted spans / s", statuses.get(200, 0) * spans / wall)
    rep.add("share shed (429/503)", f"{100 * shed / max(total, 1):.1f}%", "> 0", shed > 0)
    rep.add("shed answers without Retry-After", missing_retry_after, "0", missing_retry_after == 0)
    rep.add("other non-200 answers / transport errors", f"{other} / {errors}", "0 / 0",
            other == 0 and errors == 0)  # fmt: skip
    rep.add("server peak RSS (MiB)", round(peak), f"< {rss_bound_mb:g}", peak < rss_bound_mb)
    h99 = percentile(health_lat, 99) * 1000
    rep.add("/healthz p99 during the storm (ms)", round(h99, 1), f"< {healthz_bound_ms:g}",
            h99 < healthz_bound_ms and health_fail == 0)  # fmt: skip
    rep.add("/healthz failures", health_fail, "0", health_fail == 0)
    rep.add("accepted request p99 (ms)", round(percentile(accepted_lat, 99) * 1000, 1))
    rep.add("acknowledged spans lost", lost, "0", lost == 0 and bool(acked))
    rep.add("duplicates in spans", dups, "0", dups == 0)
    return rep


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of the storm")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients")
    ap.add_argument("--spans", type=int, default=512, help="spans per request")
    ap.add_argument("--rss-bound-mb", type=float, default=1024.0, help="server peak RSS bound")
    ap.add_argument("--healthz-bound-ms", type=float, default=1000.0, help="/healthz p99 bound")
    a = ap.parse_args(argv)
    return main_exit(run(**vars(a)))


if __name__ == "__main__":
    main()
