"""Crash safety: ``kill -9`` at random moments while real OTel SDK exporters send spans.

Each trial: several ``OTLPSpanExporter``s (HTTP and gRPC, each in a ``BatchSpanProcessor``,
wrapped to record the spans of every export that returned SUCCESS) send spans; after a random
delay the server gets SIGKILL; the clients are shut down; the store is read back (DuckDB replays
its WAL) and every acknowledged span of every trial so far is looked up; the server is restarted
on the same data directory (restart time = process start until ``/healthz`` answers 200).

Usage:  .venv/bin/python bench/reliability/crash.py [--trials 50] [--clients 4]
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.reliability.common import (
    Report,
    ServerProcess,
    main_exit,
    missing_keys,
    percentile,
    scratch_dir,
)
from bench.reliability.otelclients import SdkClient


def run(*, trials: int = 50, clients: int = 4, min_s: float = 0.3, max_s: float = 2.0,
        seed: int = 1) -> Report:  # fmt: skip
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)  # export errors are expected
    rng = random.Random(seed)
    rep = Report("crash")
    data = scratch_dir("crash") / "data"
    acked: list[tuple[str, str]] = []
    restarts: list[float] = []
    lost_per_trial: list[int] = []
    exports = {"success": 0, "failure": 0}
    srv = ServerProcess(data, ["--lake-roll-interval-s", "0"])
    srv.start()
    try:
        for trial in range(trials):
            cs = [
                SdkClient("http" if i % 2 == 0 else "grpc", http_port=srv.http_port,
                          grpc_port=srv.grpc_port, seed=trial * 100 + i, timeout_s=1.0).start()
                for i in range(clients)
            ]  # fmt: skip
            time.sleep(rng.uniform(min_s, max_s))
            srv.kill()  # SIGKILL mid-traffic
            for c in cs:
                c.stop_making()
            for c in cs:
                c.shutdown()  # pending exports fail against the dead server
                acked += c.exporter.acked
                for k, v in c.exporter.results.items():
                    exports[k] += v
            lost, _dups = missing_keys(data, acked)
            lost_per_trial.append(lost)
            srv = ServerProcess(data, ["--lake-roll-interval-s", "0"])
            t0 = time.monotonic()
            srv.start()
            restarts.append(time.monotonic() - t0)
    finally:
        srv.stop()
    lost, dups = missing_keys(data, acked)
    total_lost = max([lost, *lost_per_trial])
    rep.add("trials (kill -9 mid-traffic)", trials, ">= 50" if trials >= 50 else "", None)
    rep.add("acknowledged spans (cumulative)", len(set(acked)), "> 0", bool(acked))
    rep.add("acknowledged spans lost (worst trial)", total_lost, "0", total_lost == 0)
    rep.add("duplicates in spans", dups, "0", dups == 0)
    rep.add("exports SUCCESS / FAILURE", f"{exports['success']:,} / {exports['failure']:,}")
    rep.add("restart time p50 (s)", round(percentile(restarts, 50), 2))
    rep.add("restart time max (s)", round(max(restarts), 2) if restarts else "n/a")
    return rep


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--clients", type=int, default=4, help="SDK clients, alternating HTTP/gRPC")
    ap.add_argument("--min-s", type=float, default=0.3, help="earliest kill after trial start")
    ap.add_argument("--max-s", type=float, default=2.0, help="latest kill after trial start")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    return main_exit(run(**vars(a)))


if __name__ == "__main__":
    main()
