"""Soak: one ``prefixscope serve`` over a deployment's lifetime, in spans.

Ingests ``--spans`` distinct spans (default 20M) of the reference workload (512-span requests,
``bench/workload.py``) from ``--clients`` keep-alive OTLP/HTTP clients into one fresh server
(default settings unless ``--server-args``), and reports per million spans:

* the acknowledged rate (a 200 means committed, hence queryable),
* request latency p99 and max (checkpoints show up here),
* the server's resident memory (serving process plus decode workers, sampled every 0.5 s)
  and the part DuckDB accounts to the store (``prefixscope_store_memory_bytes``),
* the CPU seconds the serving process and the decode workers spent on it, and the seconds the
  store's background passes (lake roll, tier move, cold compaction) took
  (``prefixscope_lake_pass_seconds``): where the time goes when the rate changes,
* the group commits in it and their mean duration (``prefixscope_commit_latency_seconds``):
  each client waits for its request's commit, so with few clients the rate follows it,

then the dedupe window's keys and reach at the end (``prefixscope_dedupe_window_*``: 20M
spans in ~5 min outgrow its memory bound, 19M keys at the default budget) and, after a clean
shutdown, disk per span of the DuckDB file and of the Parquet lake.
Goals (issue 14): the last million's rate >= 90 % of the second million's; RSS below
``--store-memory-mb`` + 400 MB throughout; p99 <= 1 s in every million.

Requests are distinct without Python work per span: templates are serialized once with a
4-byte marker at the start of every trace and span id, and request ``k`` replaces the marker
with ``k`` (``bytes.replace``), so the client costs little CPU beside the server.

Usage:  .venv/bin/python bench/soak.py [--spans 20000000] [--clients 8] [--png soak.png]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.workload import make_request  # noqa: E402
from prefixscope.collector.metrics.memory import resident_bytes  # noqa: E402
from tests.support.serverproc import ServerProcess, metric_values  # noqa: E402

MARK = b"\xfe\xed\xfa\xce"
TEMPLATES = 16
SPANS_PER_REQUEST = 512
MILLION = 1_000_000


def templates() -> list[bytes]:
    """Serialized requests whose ids all start with MARK (and MARK appears nowhere else)."""
    out = []
    for seed in range(TEMPLATES):
        req = make_request(SPANS_PER_REQUEST, seed=seed)
        ids = 0
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    sp.trace_id = MARK + sp.trace_id[4:]
                    sp.span_id = MARK + sp.span_id[4:]
                    ids += 2
                    if sp.parent_span_id:
                        sp.parent_span_id = MARK + sp.parent_span_id[4:]
                        ids += 1
        body = req.SerializeToString()
        if body.count(MARK) != ids:
            raise RuntimeError("marker collides with payload bytes; pick another MARK")
        out.append(body)
    return out


def rss_mb(pids: list[int]) -> float:
    return sum(resident_bytes(p) for p in pids) / 2**20


def child_pids(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(srv: ServerProcess) -> tuple[dict[str, float], float]:
    """From /metrics: seconds spent so far in each step of the store's background passes,
    and the MB DuckDB accounts to the store now (``prefixscope_store_memory_bytes``)."""
    passes: dict[str, float] = {}
    store = 0.0
    for (name, labels), value in metric_values(srv).items():
        if name == "prefixscope_lake_pass_seconds_sum":
            passes[dict(labels)["step"]] = value
        elif name == "prefixscope_store_memory_bytes":
            store += value / 2**20
        elif name in _COMMITS:  # the group commits: how many, and the seconds they took
            passes[_COMMITS[name]] = value
    return passes, store


_COMMITS = {
    "prefixscope_commit_latency_seconds_sum": "commit_s",
    "prefixscope_commit_latency_seconds_count": "commits",
}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


#: (t, server CPU s, decode workers' CPU s, {step: lake pass seconds})
Sample = tuple[float, float, float, dict[str, float]]


@dataclass
class Soak:
    acked: list[tuple[float, int, float]] = field(default_factory=list)  # (t, spans, latency)
    rss: list[tuple[float, float]] = field(default_factory=list)
    #: (t, server CPU s, decode workers' CPU s, {step: lake pass seconds}) every 2 s
    work: list[Sample] = field(default_factory=list)
    #: (t, MB DuckDB accounts to the store) every 2 s
    store_mb: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0


def run(spans: int, clients: int, server_args: list[str], data: Path) -> tuple[Soak, ServerProcess]:
    bodies = templates()
    n_requests = spans // SPANS_PER_REQUEST
    srv = ServerProcess(data, server_args)
    srv.start(timeout=120)
    assert srv.proc is not None
    soak = Soak()
    lock = threading.Lock()
    counter = iter(range(n_requests))
    done = threading.Event()
    t_start = time.perf_counter()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=300)
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                return
            body = bodies[k % TEMPLATES].replace(MARK, k.to_bytes(4, "big"))
            while True:
                t0 = time.perf_counter()
                conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
                t1 = time.perf_counter()
                if resp.status == 200:
                    with lock:
                        soak.acked.append((t1 - t_start, SPANS_PER_REQUEST, t1 - t0))
                    break
                with lock:
                    soak.errors += 1
                time.sleep(float(resp.getheader("Retry-After") or 1))

    def sampler() -> None:
        assert srv.proc is not None
        pids = [srv.proc.pid, *child_pids(srv.proc.pid)]
        i = 0
        while not done.is_set():
            now = time.perf_counter() - t_start
            soak.rss.append((now, rss_mb(pids)))
            if i % 4 == 0:
                try:
                    passes, store = scrape(srv)
                    soak.store_mb.append((now, store))
                except (OSError, httpx.HTTPError):
                    passes = {}
                workers = sum(cpu_s(p) for p in pids[1:])
                soak.work.append((now, cpu_s(pids[0]), workers, passes))
            i += 1
            done.wait(0.5)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    s = threading.Thread(target=sampler)
    s.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    s.join()
    return soak, srv


def per_million(soak: Soak) -> list[dict[str, float]]:
    rows = []
    acked = sorted(soak.acked)
    total, prev_t, bucket_lat = 0, 0.0, []
    target = MILLION
    for t, n, lat in acked:
        total += n
        bucket_lat.append(lat)
        if total >= target:
            rss = [r for ts, r in soak.rss if prev_t <= ts <= t] or [float("nan")]
            store = [m for ts, m in soak.store_mb if prev_t <= ts <= t] or [float("nan")]
            lat_sorted = sorted(bucket_lat)
            first, last = _around(soak.work, prev_t, t)
            rows.append(
                {
                    "million": target // MILLION,
                    "spans_per_s": MILLION / (t - prev_t),
                    "p99_ms": lat_sorted[int(0.99 * (len(lat_sorted) - 1))] * 1000,
                    "max_ms": lat_sorted[-1] * 1000,
                    "rss_max_mb": max(rss),
                    "store_max_mb": max(store),
                    # what the million cost (between the samples around it)
                    "server_cpu_s": last[1] - first[1],
                    "worker_cpu_s": last[2] - first[2],
                    **{
                        f"{step}_s": last[3].get(step, 0.0) - first[3].get(step, 0.0)
                        for step in ("roll", "move", "compact")
                    },
                    **_commits(first[3], last[3]),
                }
            )
            prev_t, bucket_lat, target = t, [], target + MILLION
    return rows


def _commits(first: dict[str, float], last: dict[str, float]) -> dict[str, float]:
    """Group commits between two samples and their mean duration: the writer's side of a
    request's latency (each client waits for its commit)."""
    n = last.get("commits", 0.0) - first.get("commits", 0.0)
    took = last.get("commit_s", 0.0) - first.get("commit_s", 0.0)
    return {"commits": n, "commit_ms": took / n * 1000 if n else float("nan")}


def _around(
    work: list[tuple[float, float, float, dict[str, float]]], t0: float, t1: float
) -> tuple[
    tuple[float, float, float, dict[str, float]], tuple[float, float, float, dict[str, float]]
]:
    """The last work sample at or before ``t0`` and the first at or after ``t1``."""
    empty: Sample = (0.0, 0.0, 0.0, {})
    before = [w for w in work if w[0] <= t0] or [work[0] if work else empty]
    after = [w for w in work if w[0] >= t1] or [work[-1] if work else empty]
    return before[-1], after[0]


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(9, 4.5))
    xs = [r["million"] for r in rows]
    ax1.plot(xs, [r["spans_per_s"] / 1000 for r in rows], "o-", label="acked spans/s (k)")
    ax1.set_xlabel("spans stored (millions)")
    ax1.set_ylabel("k spans/s acknowledged")
    ax1.set_ylim(bottom=0)
    ax2 = ax1.twinx()
    ax2.plot(xs, [r["rss_max_mb"] for r in rows], "s--", color="tab:red", label="RSS max (MB)")
    ax2.set_ylabel("server RSS, MB")
    ax2.set_ylim(bottom=0)
    fig.legend(loc="upper right", bbox_to_anchor=(0.88, 0.88))
    fig.suptitle("prefixscope serve: ingest rate and memory per million spans")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--spans", type=int, default=20 * MILLION)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--server-args", default="", help="extra `prefixscope serve` flags")
    ap.add_argument("--store-memory-mb", type=int, default=1024, help="for the RSS goal")
    ap.add_argument("--png", default=None, help="write the plot here")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="ps-soak-")) / "data"
    load_start = os.getloadavg()
    soak, srv = run(args.spans, args.clients, args.server_args.split(), data)
    values = metric_values(srv).items()
    dedupe = {n: v for (n, _), v in values if n.startswith("prefixscope_dedupe")}
    stop_t = time.perf_counter()
    srv.stop()
    shutdown_s = time.perf_counter() - stop_t
    rows = per_million(soak)
    stored = sum(n for _, n, _ in soak.acked)
    db = data / "prefixscope.duckdb"
    db_bytes = db.stat().st_size if db.exists() else 0
    lake_bytes = dir_bytes(data / "lake") if (data / "lake").exists() else 0
    print(f"load average before start: {load_start}; at the end: {os.getloadavg()}")
    print(
        "| million | spans/s | p99 ms | max ms | RSS max MB | DuckDB MB max | server CPU s "
        "| worker CPU s | roll s | move s | compact s | commits | commit ms |"
    )
    print("| ---: " * 13 + "|")
    for r in rows:
        print(
            f"| {r['million']} | {r['spans_per_s']:,.0f} | {r['p99_ms']:.0f} | "
            f"{r['max_ms']:.0f} | {r['rss_max_mb']:.0f} | {r['store_max_mb']:.0f} | "
            f"{r['server_cpu_s']:.1f} | "
            f"{r['worker_cpu_s']:.1f} | {r['roll_s']:.1f} | {r['move_s']:.1f} | "
            f"{r['compact_s']:.1f} | {r['commits']:.0f} | {r['commit_ms']:.1f} |"
        )
    print(f"\nspans acknowledged: {stored:,}; retried (429/503): {soak.errors}")
    print(f"shutdown (final commit, lake roll, checkpoint): {shutdown_s:.1f} s")
    print(
        "dedupe window at the end: {:,.0f} keys, reaching back {:.0f} s, {:,.0f} keys dropped "
        "early (its memory bound)".format(
            dedupe.get("prefixscope_dedupe_window_keys", float("nan")),
            dedupe.get("prefixscope_dedupe_window_seconds", float("nan")),
            dedupe.get("prefixscope_dedupe_evicted_keys_total", float("nan")),
        )
    )
    hot = stored
    if db.exists():  # the server has stopped: the file is ours to read
        import duckdb

        con = duckdb.connect(str(db), read_only=True)
        hot = int(con.execute("SELECT count(*) FROM span_rows").fetchall()[0][0])
        con.close()
    print(f"DuckDB file: {db_bytes / 1e6:.0f} MB = {db_bytes / max(stored, 1):.0f} B/span")
    print(
        f"hot tier: {hot:,} spans still in DuckDB ({stored - hot:,} moved to the lake) = "
        f"{db_bytes / max(hot, 1):.0f} B per hot span"
    )
    print(f"Parquet lake: {lake_bytes / 1e6:.0f} MB = {lake_bytes / max(stored, 1):.0f} B/span")
    if len(rows) >= 3:
        ratio = rows[-1]["spans_per_s"] / rows[1]["spans_per_s"]
        print(f"last million / second million: {ratio:.2f} (goal >= 0.90)")
    rss_max = max((r for _, r in soak.rss), default=float("nan"))
    goal = args.store_memory_mb + 400
    print(f"RSS max: {rss_max:.0f} MB (goal < {goal})")
    p99 = max((r["p99_ms"] for r in rows), default=0)
    print(f"p99 max over millions: {p99:.0f} ms (goal <= 1000)")
    if args.json:  # before the plot: a plotting failure must not lose the rows
        Path(args.json).write_text(json.dumps({"rows": rows, "stored": stored}, indent=1))
    if args.png:
        plot(rows, Path(args.png))
        print(f"plot: {args.png}")
    print(f"data directory: {data}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(data.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
