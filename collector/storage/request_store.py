"""The embedded store's requests: ``request_rows``, kept up to date from settled traces.

:func:`~prefixscope.collector.spans.requests.resolve` needs whole traces, and a trace's spans arrive
over seconds (each process exports on its own schedule, children before parents). The
resolver therefore works on *settled* traces and keeps a watermark: every span batch up to
``lake_state['requests']`` has been resolved.

A pass (:meth:`RequestResolver.run_pass`):

1. takes the span batches committed since the watermark, up to the newest one committed at
   least ``settle`` ago (all of them when ``settle`` is 0: :meth:`~RequestResolver.catch_up`);
2. reads every span of their traces that arrived within ``lookback`` before them (the rows are
   appended in batch order, so DuckDB reads only the recent row groups);
3. leaves for a later pass the traces that still received spans within ``settle``;
4. resolves the rest and, in one transaction, replaces the request rows those traces had (a
   trace whose spans came in two passes is resolved again, whole), inserts the new ones and
   moves the watermark.

So a request appears once its trace has been quiet for ``settle`` (analytics and the SQL
endpoint call :meth:`~RequestResolver.catch_up` first: they see every committed span), and a
span that arrives later than that still joins its trace as long as the trace's other spans
arrived within ``lookback`` of it. A span later than ``lookback`` is resolved with the part of
its trace within reach (DESIGN.md's limits; docs/requests.md says what that means).

Rows written straight into ``span_rows`` by tools (``ingest_batch = 0``: synthetic data, the
replay store path) have no batch to follow: their writers call :func:`rebuild` for them.

``request_rows`` moves to the cold tier by its ``start_time`` like scores and feedback
(``tiers.move_annotations``), in whole hours so that a day holds at most 24 files; the
``requests_base`` view reads both tiers with the served-model mapping applied
(``attribution.mapped_select``), and ``requests`` adds each request's scores and feedback.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ..spans.request_columns import SKELETON_COLUMNS
from ..spans.requests import resolve
from .background import log_pass_failure, lower_priority

log = logging.getLogger(__name__)

ROWS = "request_rows"
#: the view analytics reads: requests of both tiers, served-model mapping applied
BASE_VIEW = "requests_base"
#: the user's view: ``requests_base`` plus each request's latest scores and its feedback
VIEW = "requests"
#: lake_state's row for the resolver's watermark
STATE = "requests"
#: traces resolved per statement by :func:`rebuild` (bounds its memory)
REBUILD_SPANS_PER_CHUNK = 1_000_000
#: new spans one pass takes at most (a store upgraded with millions of unresolved spans, or
#: a long outage of the resolver, is caught up in passes of about this size)
PASS_MAX_SPANS = 1_000_000


@dataclass(slots=True)
class PassReport:
    batches: tuple[int, int] = (0, 0)  # (first, last] span batches resolved
    traces: int = 0
    deferred: int = 0
    requests: int = 0
    replaced: int = 0
    seconds: float = 0.0
    #: the pass stopped at PASS_MAX_SPANS: more batches are ready
    more: bool = False


def watermark(con: duckdb.DuckDBPyConnection) -> int:
    rows = con.execute("SELECT last_batch FROM lake_state WHERE table_name = ?", [STATE]).fetchall()
    return int(rows[0][0]) if rows else 0


def _set_watermark(con: duckdb.DuckDBPyConnection, batch: int) -> None:
    con.execute(
        "INSERT OR REPLACE INTO lake_state VALUES (?, ?, now()::TIMESTAMP)", [STATE, batch]
    ).fetchall()


def _skeleton_sql(source: str = "span_rows") -> str:
    return f"SELECT {', '.join(SKELETON_COLUMNS)} FROM {source}"


def _with_batch(requests: pa.Table, batch: int) -> pa.Table:
    return requests.append_column(
        "resolve_batch", pa.array([batch] * requests.num_rows, type=pa.int64())
    )


def _replace(
    con: duckdb.DuckDBPyConnection,
    requests: pa.Table,
    traces: pa.Table | None,
    batch: int,
    lowest: int,
) -> int:
    """Inside a transaction: drop the request rows of ``traces`` (written at or after batch
    ``lowest``), insert ``requests``; returns rows dropped."""
    dropped = 0
    if traces is not None and traces.num_rows:
        con.register("_req_replaced", traces)
        try:
            rows = con.execute(
                f"DELETE FROM {ROWS} WHERE resolve_batch >= ? "
                "AND trace_id IN (SELECT trace_id FROM _req_replaced)",
                [lowest],
            ).fetchall()
            dropped = int(rows[0][0]) if rows else 0
        finally:
            con.unregister("_req_replaced")
    if requests.num_rows:
        con.from_arrow(_with_batch(requests, batch)).insert_into(ROWS)
    return dropped


class RequestResolver:
    """Keeps ``request_rows`` up to date (see the module doc)."""

    def __init__(
        self,
        cursor: Callable[[], duckdb.DuckDBPyConnection],
        *,
        settle: dt.timedelta = dt.timedelta(seconds=10),
        lookback: dt.timedelta = dt.timedelta(minutes=2),
        interval_s: float = 5.0,
        lock: threading.Lock | None = None,
        on_resolved: Callable[[pa.Table, pa.Table | None], None] | None = None,
    ) -> None:
        self._cursor = cursor
        self.settle = settle
        self.lookback = lookback
        self._interval = interval_s
        #: shared with the lake roll and the tier move: one writer of request_rows at a time
        self._lock = lock or threading.Lock()
        #: called with each pass's new requests and the requests they replaced (per-variant
        #: metrics count each request once)
        self._on_resolved = on_resolved
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._interval <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="prefixscope-requests", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None
        try:
            self.catch_up()  # whatever is committed is resolved before the store closes
        except Exception:
            log.exception("final request resolution failed (the next start resolves it)")

    def _loop(self) -> None:

        lower_priority()
        while not self._stop.wait(self._interval):
            try:
                self.run_pass()
            except Exception as exc:  # the spans are safe; the next pass resolves them
                log_pass_failure(log, "request resolution failed; will retry", exc)

    def catch_up(self) -> PassReport:
        """Resolve every committed span now (a trace still receiving spans is resolved again
        when they arrive); returns the last pass's report."""
        while True:
            report = self.run_pass(settle=dt.timedelta(0))
            if not report.more:
                return report

    def run_pass(self, settle: dt.timedelta | None = None) -> PassReport:
        settle = self.settle if settle is None else settle
        with self._lock:
            con = self._cursor()
            try:
                return self._pass(con, settle)
            finally:
                con.close()

    def _pass(self, con: duckdb.DuckDBPyConnection, settle: dt.timedelta) -> PassReport:
        t0 = time.perf_counter()
        report = PassReport()
        low = watermark(con)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        rows = con.execute(
            "SELECT max(ingest_batch), max(ingest_batch) FILTER (WHERE ingested_at <= ?), "
            "min(ingested_at) FROM span_rows WHERE ingest_batch > ?",
            [now - settle, low],
        ).fetchall()
        newest, high, first_at = rows[0] if rows else (None, None, None)
        if newest is None or high is None or high <= low:
            return report
        high = int(high)
        counts = con.execute(
            "SELECT ingest_batch, count(*) FROM span_rows WHERE ingest_batch > ? "
            "AND ingest_batch <= ? GROUP BY 1 ORDER BY 1",
            [low, high],
        ).fetchall()
        total = 0
        for batch, count in counts:
            total += int(count)
            if total >= PASS_MAX_SPANS and int(batch) < high:
                high, report.more = int(batch), True
                break
        lookback_from = first_at - self.lookback
        rows = con.execute(
            "SELECT coalesce(min(ingest_batch), ?) FROM span_rows "
            "WHERE ingest_batch BETWEEN 1 AND ? AND ingested_at >= ?",
            [low + 1, low, lookback_from],
        ).fetchall()
        lowest = min(int(rows[0][0]), low + 1)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _req_new AS SELECT DISTINCT trace_id FROM span_rows "
            "WHERE ingest_batch > ? AND ingest_batch <= ?",
            [low, high],
        ).fetchall()
        try:
            spans = con.sql(
                f"SELECT {', '.join(SKELETON_COLUMNS)}, ingest_batch FROM span_rows "
                "WHERE ingest_batch >= $1 AND trace_id IN (SELECT trace_id FROM _req_new)",
                params=[lowest],
            ).to_arrow_table()
        finally:
            con.execute("DROP TABLE IF EXISTS _req_new").fetchall()
        traces = _trace_batches(spans)
        ready = (
            traces
            if settle <= dt.timedelta(0)
            else traces.filter(pc.less_equal(traces.column("hi"), high))
        )
        report.deferred = traces.num_rows - ready.num_rows
        if ready.num_rows < traces.num_rows:
            keep = pc.is_in(spans.column("trace_id"), ready.column("trace_id"))
            spans = spans.filter(keep)
        again = ready.filter(pc.less_equal(ready.column("lo"), low)).select(["trace_id"])
        requests = resolve(spans.drop_columns(["ingest_batch"]))

        def write() -> int:
            con.execute("BEGIN TRANSACTION")
            try:
                dropped = _replace(con, requests, again, high, lowest)
                _set_watermark(con, high)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return dropped

        replaced_rows = self._replaced(con, again, lowest) if self._on_resolved else None
        report.replaced = write()
        report.batches = (low, high)
        report.traces = ready.num_rows
        report.requests = requests.num_rows
        report.seconds = time.perf_counter() - t0
        if self._on_resolved is not None:
            try:
                self._on_resolved(requests, replaced_rows)
            except Exception:  # derived metrics never fail resolution
                log.exception("request metrics hook failed")
        return report

    @staticmethod
    def _replaced(con: duckdb.DuckDBPyConnection, traces: pa.Table, lowest: int) -> pa.Table | None:
        if not traces.num_rows:
            return None
        con.register("_req_replaced", traces)
        try:
            return con.sql(
                f"SELECT trace_id, span_id FROM {ROWS} WHERE resolve_batch >= $1 "
                "AND trace_id IN (SELECT trace_id FROM _req_replaced)",
                params=[lowest],
            ).to_arrow_table()
        finally:
            con.unregister("_req_replaced")


def _trace_batches(spans: pa.Table) -> pa.Table:
    """Per trace, the lowest and highest span batch read."""
    if not spans.num_rows:
        return pa.table(
            {
                "trace_id": pa.array([], pa.string()),
                "lo": pa.array([], pa.int64()),
                "hi": pa.array([], pa.int64()),
            }
        )
    grouped = spans.group_by("trace_id").aggregate(
        [("ingest_batch", "min"), ("ingest_batch", "max")]
    )
    return grouped.select(["trace_id", "ingest_batch_min", "ingest_batch_max"]).rename_columns(
        ["trace_id", "lo", "hi"]
    )


def rebuild(
    con: duckdb.DuckDBPyConnection,
    where: str = "TRUE",
    params: list[object] | None = None,
    *,
    source: str = "span_rows",
) -> int:
    """Resolve (again) every trace with a span matching ``where`` in ``source``, replacing
    its request rows; returns the requests written. For rows inserted without an ingest
    batch (synthetic data, replays) and for the upgrade of a store that predates requests.
    Runs in chunks of traces (by hash) of about :data:`REBUILD_SPANS_PER_CHUNK` spans."""
    params = params or []
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _req_rebuild AS SELECT DISTINCT trace_id FROM {source} "
        f"WHERE {where}",
        params,
    ).fetchall()
    try:
        total = int(
            con.execute(
                f"SELECT count(*) FROM {source} WHERE trace_id IN "
                "(SELECT trace_id FROM _req_rebuild)"
            ).fetchall()[0][0]
        )
        chunks = max(1, -(-total // REBUILD_SPANS_PER_CHUNK))
        batch = watermark(con)
        written = 0
        for k in range(chunks):
            part = (
                f"trace_id IN (SELECT trace_id FROM _req_rebuild WHERE hash(trace_id) % {chunks}"
                f" = {k})"
            )
            spans = con.sql(f"{_skeleton_sql(source)} WHERE {part}").to_arrow_table()
            requests = resolve(spans)
            traces = spans.select(["trace_id"]).group_by("trace_id").aggregate([])
            con.execute("BEGIN TRANSACTION")
            try:
                _replace(con, requests, traces, batch, 0)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            written += requests.num_rows
        return written
    finally:
        con.execute("DROP TABLE IF EXISTS _req_rebuild").fetchall()


__all__ = [
    "BASE_VIEW",
    "ROWS",
    "VIEW",
    "PassReport",
    "RequestResolver",
    "rebuild",
    "watermark",
]
