"""Disk full and read-only data directory: ingest answers 503 + Retry-After, nothing
acknowledged is lost, and the server recovers (200 again) when space / write access returns.

The data directory lives on a small tmpfs (needs root: ``mount -t tmpfs``). Phase 1 fills the
file system with a filler file while a client keeps sending reference-workload requests, then
deletes the filler; phase 2 remounts the tmpfs read-only, then read-write again. After each
phase the server is stopped and every acknowledged span is looked up in the store.

Usage:  .venv/bin/python bench/reliability/diskfull.py [--size-mb 48] [--fault-s 5]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import os
import subprocess
import threading
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
    request_keys,
    scratch_dir,
    workload_request,
)


class Sender:
    """One client sending distinct workload requests; remembers what was acknowledged."""

    def __init__(self, srv: ServerProcess, spans: int, seed0: int) -> None:
        self.srv = srv
        self.spans = spans
        self.seed = seed0
        self.acked: list[tuple[str, str]] = []
        self.statuses: list[tuple[float, int, str | None]] = []  # (time, status, Retry-After)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            req = workload_request(self.spans, self.seed)
            self.seed += 1
            try:
                conn = conn or http.client.HTTPConnection(
                    "127.0.0.1", self.srv.http_port, timeout=30
                )
                conn.request(
                    "POST", "/v1/traces", req.SerializeToString(),
                    {"Content-Type": "application/x-protobuf"},
                )  # fmt: skip
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                conn = None
                time.sleep(0.05)
                continue
            self.statuses.append((time.monotonic(), resp.status, resp.getheader("Retry-After")))
            if resp.status == 200:
                self.acked.extend(request_keys(req))
            else:
                time.sleep(0.05)

    def count_since(self, t0: float, status: int) -> int:
        return sum(1 for t, s, _ in self.statuses if t >= t0 and s == status)

    def first_since(self, t0: float, status: int) -> float | None:
        return next((t for t, s, _ in self.statuses if t >= t0 and s == status), None)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def fill(path: Path) -> int:
    """Write zeros until the file system is full; bytes written."""
    written = 0
    chunk = b"\0" * (256 * 1024)
    with open(path, "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                small = b"\0" * 4096
                with contextlib.suppress(OSError):
                    while True:
                        written += fh.write(small)
                return written


def _wait_for(sender: Sender, t0: float, status: int, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = sender.first_since(t0, status)
        if t is not None:
            return t
        time.sleep(0.02)
    return None


def _phase(
    rep: Report,
    label: str,
    srv: ServerProcess,
    spans: int,
    seed0: int,
    fault_s: float,
    recover_timeout: float,
    inject: object,
    heal: object,
) -> tuple[list[tuple[str, str]], list[float]]:
    """Run one fault phase; return acknowledged keys and recovery times."""
    assert callable(inject) and callable(heal)
    recoveries: list[float] = []
    with Sender(srv, spans, seed0) as sender:
        deadline = time.monotonic() + 30
        while not sender.acked and time.monotonic() < deadline:
            time.sleep(0.05)
        t_fault = time.monotonic()
        inject()
        time.sleep(fault_s)
        t_heal = time.monotonic()
        heal()
        t_ok = _wait_for(sender, t_heal, 200, recover_timeout)
    statuses = [(s, ra) for t, s, ra in sender.statuses if t_fault <= t < t_heal]
    n503 = sum(1 for s, _ in statuses if s == 503)
    bad = [s for s, _ in statuses if s not in (200, 503)]
    no_retry_after = sum(1 for s, ra in statuses if s == 503 and not ra)
    rep.add(f"{label}: 503 answers while faulted", n503, "> 0", n503 > 0)
    rep.add(f"{label}: other non-200 answers while faulted", len(bad), "0", not bad)
    rep.add(f"{label}: 503 without Retry-After", no_retry_after, "0", no_retry_after == 0)
    if t_ok is None:
        rep.add(f"{label}: recovery time (s)", "never", f"< {recover_timeout:g}", False)
    else:
        recoveries.append(t_ok - t_heal)
        rep.add(f"{label}: recovery time (s)", round(t_ok - t_heal, 2), "", True)
    return sender.acked, recoveries


def run(*, size_mb: int = 48, fault_s: float = 5.0, spans: int = 512,
        recover_timeout: float = 30.0) -> Report:  # fmt: skip
    rep = Report("diskfull")
    base = scratch_dir("diskfull")
    mnt = base / "mnt"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mnt)], check=True
    )
    data = mnt / "data"
    srv: ServerProcess | None = None
    acked: list[tuple[str, str]] = []
    try:
        # -- phase 1: the file system fills up -------------------------------------------------
        srv = ServerProcess(data, ["--lake-roll-interval-s", "0"])
        srv.start()
        filler = mnt / "filler"
        keys, _ = _phase(
            rep, "disk full", srv, spans, 0, fault_s, recover_timeout,
            lambda: fill(filler), lambda: filler.unlink(),
        )  # fmt: skip
        acked += keys
        srv.stop()
        lost, dups = missing_keys(data, acked)
        rep.add("disk full: acknowledged spans lost", lost, "0", lost == 0)
        # -- phase 2: the data directory becomes read-only ---------------------------------------
        # The kernel refuses to remount a file system read-only while files on it are open for
        # writing, so a read-only bind mount is laid over the data directory: files the server
        # already holds stay writable, every file it opens from now on (the WAL after a
        # checkpoint, Parquet segments) is read-only. A small checkpoint threshold makes the
        # server checkpoint (and so open a new WAL) within the fault; with the default (512 MB)
        # it would keep writing its open WAL and never meet the read-only mount.
        srv = ServerProcess(data, ["--lake-roll-interval-s", "0", "--checkpoint-wal-mb", "4"])
        srv.start()

        def make_ro() -> None:
            subprocess.run(["mount", "--bind", str(data), str(data)], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(data)], check=True)

        def make_rw() -> None:
            subprocess.run(["umount", "-l", str(data)], check=True)

        keys, _ = _phase(
            rep, "read-only", srv, spans, 1_000_000, fault_s, recover_timeout, make_ro, make_rw
        )
        acked += keys
        srv.stop()
        rep.add("read-only: acknowledged spans lost", lost, "0", lost == 0)
        rep.add("duplicates in spans", dups, "0", dups == 0)
        rep.add("acknowledged spans checked", len(acked))
    finally:
        if srv is not None:
            srv.kill()
            log = srv.log()  # the log lives on the tmpfs: keep a copy
            (base / "server.log").write_text(log)
            n_tb = log.count("Traceback")
            rep.add("tracebacks in server log", n_tb, "0", n_tb == 0)
            if n_tb:
                rep.notes.append(f"server log: {base / 'server.log'}")
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    return rep


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=48, help="tmpfs size for the data dir")
    ap.add_argument("--fault-s", type=float, default=5.0, help="seconds each fault lasts")
    ap.add_argument("--spans", type=int, default=512, help="spans per request")
    ap.add_argument("--recover-timeout", type=float, default=30.0)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("diskfull needs root (mount -t tmpfs)")
    return main_exit(run(**vars(a)))


if __name__ == "__main__":
    main()
