"""Run every reliability benchmark with its defaults; print one combined markdown table.

Usage:  .venv/bin/python bench/reliability/run_all.py [--only crash sql ...] [--quick]

``--quick`` uses the test suite's small sizes (minutes, not a quarter of an hour).
"""

from __future__ import annotations

import argparse
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.reliability import auth, crash, diskfull, fuzz, logflood, overload, retries, sql
from bench.reliability.common import Report, markdown_table

#: name -> (run function, kwargs for --quick)
BENCHES: dict[str, tuple[Callable[..., Report], dict[str, Any]]] = {
    "crash": (crash.run, {"trials": 2, "clients": 2, "min_s": 0.5, "max_s": 1.0}),
    "retries": (retries.run, {"sdk_s": 3.0, "sdk_clients": 2, "bodies": 10, "copies": 3,
                              "spans": 64}),
    "overload": (overload.run, {"seconds": 6.0, "clients": 24}),
    "logflood": (logflood.run, {"seconds": 8.0, "baseline_s": 4.0, "bodies": 6,
                                "p99_slack_ms": 1000.0}),
    "fuzz": (fuzz.run, {"cases": 2000, "loris_s": 4.0}),
    "sql": (sql.run, {}),
    "auth": (auth.run, {}),
    "diskfull": (diskfull.run, {"fault_s": 5.0}),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these")
    ap.add_argument("--quick", action="store_true", help="small sizes, as in the test suite")
    a = ap.parse_args(argv)
    reports: list[Report] = []
    for name, (fn, quick) in BENCHES.items():
        if a.only and name not in a.only:
            continue
        if name == "diskfull" and os.geteuid() != 0:
            print(f"[{name}] skipped: needs root")
            continue
        t0 = time.monotonic()
        try:
            rep = fn(**(quick if a.quick else {}))
        except Exception:
            rep = Report(name)
            rep.add("run", "raised", "completes", False)
            rep.notes.append(traceback.format_exc())
        print(f"[{name}] {time.monotonic() - t0:.0f} s, goals {'met' if rep.ok else 'MISSED'}")
        for note in rep.notes:
            print(f"  - {note}")
        reports.append(rep)
    print()
    print(markdown_table(reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
