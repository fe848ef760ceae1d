"""/metrics render cost at the per-variant series cap: prometheus_client's ``generate_latest``
over ``VariantMetrics.collect()`` (a Python object per sample, what the server did before)
vs ``VariantMetrics.exposition()`` (text straight from the arrays, what it does now).

The series come from the reference workload's requests (``bench/soak.py``'s templates, the
same spans the soak sends), fed until the cap (``--max-series``, the server's default 500)
is reached, so the text is the one a scrape of a busy server returns (~16,700 lines). Both
renders must produce the same bytes; the script checks that before timing. Rounds
alternate; CPU seconds of this process (``time.process_time``).

Usage:  .venv/bin/python bench/metrics_render.py [--max-series 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from bench.soak import MARK, templates  # noqa: E402
from prefixscope.collector.decoding import PROTOBUF, decode_body  # noqa: E402
from prefixscope.collector.metrics.variants import VariantMetrics  # noqa: E402


def filled(max_series: int) -> VariantMetrics:
    vm = VariantMetrics(max_series=max_series)
    bodies = templates()
    k = 0
    while vm.series <= max_series:  # the cap's series and "other"
        body = bodies[k % len(bodies)].replace(MARK, k.to_bytes(4, "big"))
        table = decode_body(body, PROTOBUF, None, 1 << 26, 32768).table
        assert table is not None
        vm.observe(table)
        vm.flush()
        k += 1
        if k > 20_000:
            raise SystemExit(f"the workload gave fewer than {max_series} series")
    return vm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-series", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    vm = filled(args.max_series)
    registry = CollectorRegistry()
    registry.register(vm)
    text = vm.exposition()
    assert generate_latest(registry).decode() == text, "the two renders differ"
    print(f"load average: {os.getloadavg()}")
    print(f"{text.count(chr(10)):,} lines, {len(text):,} bytes")
    times: dict[str, list[float]] = {"generate_latest": [], "exposition": []}
    for _ in range(args.rounds):
        for name, render in (
            ("generate_latest", lambda: generate_latest(registry)),
            ("exposition", vm.exposition),
        ):
            t0 = time.process_time()
            render()
            times[name].append(time.process_time() - t0)
    for name, ts in times.items():
        print(
            f"{name:>16}: median {statistics.median(ts) * 1000:.1f} ms "
            f"(rounds: {', '.join(f'{t * 1000:.1f}' for t in ts)})"
        )
    ratio = statistics.median(times["generate_latest"]) / statistics.median(times["exposition"])
    print(f"ratio: {ratio:.1f}x")


if __name__ == "__main__":
    main()
