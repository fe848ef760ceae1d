"""Retries and duplicates: clients that retry must never duplicate a span.

A. The OTel SDK's own retry: HTTP and gRPC ``OTLPSpanExporter``s against a server started with
   a tiny ``--queue-max-spans`` so it sheds (429 / RESOURCE_EXHAUSTED with Retry-After /
   RetryInfo) and the exporters retry.
B. A raw client resending the same body many times, from several threads at once (copies can
   land in one group commit), and after client-side timeouts (a very short timeout: the server
   commits a request the client gave up on, then the client resends it).

Figures: duplicates in ``spans`` = ``count(*) - count(DISTINCT (trace_id, span_id))`` (goal 0)
and acknowledged spans missing (goal 0).

Usage:  .venv/bin/python bench/reliability/retries.py [--sdk-s 20] [--bodies 200] [--copies 5]
"""

from __future__ import annotations

import argparse
import http.client
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
    request_keys,
    scratch_dir,
    workload_request,
)
from bench.reliability.otelclients import SdkClient


def _metric(srv: ServerProcess, name: str, label: str = "") -> float:
    """Sum of a Prometheus metric's samples whose labels contain ``label``."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    pattern = rf"^{name}(\{{[^}}]*\}})? ([0-9.e+]+)$"
    return sum(float(v) for labels, v in re.findall(pattern, text, re.M) if label in labels)


def _resend(srv: ServerProcess, body: bytes, copies: int, timeout: float) -> tuple[bool, int]:
    """Send ``body`` ``copies`` times, the first ``copies - 1`` with ``timeout``, then with a
    normal timeout until a 200; (acked, client timeouts)."""
    acked, timeouts, sent = False, 0, 0
    deadline = time.monotonic() + 60
    while (sent < copies or not acked) and time.monotonic() < deadline:
        sent += 1
        t = timeout if sent < copies else 30.0
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=t)
        try:
            conn.request("POST", "/v1/traces", body, {"Content-Type": PROTOBUF})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                acked = True
            elif resp.status in (429, 503):
                time.sleep(0.05)
        except TimeoutError:
            timeouts += 1
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
        finally:
            conn.close()
    return acked, timeouts


def run(*, sdk_s: float = 20.0, sdk_clients: int = 4, bodies: int = 200, copies: int = 5,
        spans: int = 512, short_timeout_s: float = 0.005) -> Report:  # fmt: skip
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)  # retries are expected
    rep = Report("retries")
    data = scratch_dir("retries") / "data"
    # -- A: the SDK's own retry against a shedding server ---------------------------------------
    srv = ServerProcess(data, ["--queue-max-spans", "600", "--retry-after-s", "1",
                               "--lake-roll-interval-s", "0"])  # fmt: skip
    srv.start()
    acked: list[tuple[str, str]] = []
    try:
        cs = [
            SdkClient("http" if i % 2 == 0 else "grpc", http_port=srv.http_port,
                      grpc_port=srv.grpc_port, seed=i, timeout_s=30.0, batch=512).start()
            for i in range(sdk_clients)
        ]  # fmt: skip
        time.sleep(sdk_s)
        for c in cs:
            c.stop_making()
        for c in cs:
            c.shutdown()  # flushes: the exporters keep retrying until their queue is empty
            acked += c.exporter.acked
        shed = sum(
            _metric(srv, "prefixscope_ingest_requests_total", f'status="{code}"')
            for code in ("429", "503", "RESOURCE_EXHAUSTED", "UNAVAILABLE")
        )
        sdk_acked = len(acked)
    finally:
        srv.stop()
    rep.add("A: SDK spans acknowledged", sdk_acked, "> 0", sdk_acked > 0)
    rep.add("A: requests shed (429/503/RESOURCE_EXHAUSTED), retried by the SDK", int(shed), "> 0",
            shed > 0)  # fmt: skip
    # -- B: a raw client resending the same bodies, concurrently and after timeouts ---------------
    srv = ServerProcess(data, ["--lake-roll-interval-s", "0"])
    srv.start()
    timeouts = 0
    try:
        reqs = [workload_request(spans, seed=50_000 + k) for k in range(bodies)]
        payloads = [r.SerializeToString() for r in reqs]
        with ThreadPoolExecutor(max_workers=8) as pool:
            # the same body from `copies` threads at once
            futs = [pool.submit(_resend, srv, payloads[k], 1, 30.0)
                    for k in range(bodies // 2) for _ in range(copies)]  # fmt: skip
            for k, f in enumerate(futs):
                ok, _ = f.result()
                if ok:
                    acked += request_keys(reqs[k // copies])
            # a client that times out almost at once, and resends
            futs2 = {k: pool.submit(_resend, srv, payloads[k], copies, short_timeout_s)
                     for k in range(bodies // 2, bodies)}  # fmt: skip
            lock = threading.Lock()
            for k, f in futs2.items():
                ok, t = f.result()
                with lock:
                    timeouts += t
                if ok:
                    acked += request_keys(reqs[k])
        dup_metric = _metric(srv, "prefixscope_spans_duplicate_total")
    finally:
        srv.stop()
    rep.add("B: raw resends (copies per body)", f"{bodies} bodies x {copies}")
    rep.add("B: client timeouts followed by a resend", timeouts, "> 0", timeouts > 0)
    rep.add("B: duplicate spans the server ignored", int(dup_metric), "> 0", dup_metric > 0)
    lost, dups = missing_keys(data, acked)
    rep.add("acknowledged spans checked", len(set(acked)))
    rep.add("acknowledged spans missing", lost, "0", lost == 0)
    rep.add("duplicates in spans", dups, "0", dups == 0)
    return rep


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sdk-s", type=float, default=20.0, help="seconds of SDK traffic")
    ap.add_argument("--sdk-clients", type=int, default=4)
    ap.add_argument("--bodies", type=int, default=200, help="distinct bodies resent")
    ap.add_argument("--copies", type=int, default=5, help="sends of each body")
    ap.add_argument("--spans", type=int, default=512, help="spans per body")
    ap.add_argument("--short-timeout-s", type=float, default=0.005)
    a = ap.parse_args(argv)
    return main_exit(run(**vars(a)))


if __name__ == "__main__":
    main()
