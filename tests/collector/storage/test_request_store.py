"""The embedded store's requests (``collector/storage/request_store.py``): resolved from
settled traces, resolved again whole when a trace's spans arrive in parts, never twice,
moved to the cold tier with the rest and read back through one view."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from prefixscope.collector.spans.model import SPAN_ARROW_SCHEMA
from prefixscope.collector.storage import request_store, tiers
from prefixscope.collector.storage.lake import LakeRoller
from prefixscope.collector.storage.request_store import RequestResolver, rebuild
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store
from prefixscope.metrics import Metrics

NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _span(trace: int, span: int, parent: int | None, **kw: Any) -> dict[str, Any]:
    start = kw.pop("start", NOW - dt.timedelta(seconds=1))
    ms = kw.pop("ms", 10.0)
    row: dict[str, Any] = {
        "trace_id": f"{trace:032x}",
        "span_id": f"{span:016x}",
        "parent_span_id": None if parent is None else f"{parent:016x}",
        "name": f"s{span}",
        "start_time": start,
        "end_time": start + dt.timedelta(milliseconds=ms),
        "duration_ms": ms,
        "status_code": "OK",
    }
    row.update(kw)
    return row


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    full = [{f.name: r.get(f.name) for f in SPAN_ARROW_SCHEMA} for r in rows]
    return pa.Table.from_pylist(full, schema=SPAN_ARROW_SCHEMA)


def _call(trace: int, span: int, parent: int | None, **kw: Any) -> dict[str, Any]:
    return _span(trace, span, parent, operation="chat", request_model="m", **kw)


def _rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    con = store.cursor()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def _resolver(store: Store, **kw: Any) -> RequestResolver:
    return RequestResolver(store.cursor, interval_s=0, **kw)


def test_a_trace_in_two_batches_is_resolved_again_whole(store: Store) -> None:
    """The model call is committed first, its route span (the scope's root) later: after the
    second batch the trace holds one request, with the route's latency, not two."""
    sink = DuckDBSink(store)
    sink.open()
    scope = {"variant_scope": "s1", "prefix_id": "p", "route": "/r"}
    sink.write(_table([_call(1, 2, 1, **scope), _call(7, 70, None)]), 1)
    res = _resolver(store)
    first = res.catch_up()
    assert (first.requests, first.replaced) == (2, 0)
    # the call is the outermost span of its scope seen so far
    where = f"WHERE span_id = '{2:016x}'"
    assert _rows(store, f"SELECT scope_span_id, route_latency_ms FROM requests_base {where}") == [
        (f"{2:016x}", 10.0)
    ]
    sink.write(_table([_span(1, 1, None, ms=50.0, **scope)]), 2)
    second = res.catch_up()
    assert (second.requests, second.replaced) == (1, 1)
    got = _rows(
        store,
        "SELECT trace_id, span_id, scope_span_id, route_latency_ms FROM requests_base "
        "ORDER BY trace_id",
    )
    assert got == [
        (f"{1:032x}", f"{2:016x}", f"{1:016x}", 50.0),
        (f"{7:032x}", f"{70:016x}", None, None),
    ]
    assert res.catch_up().requests == 0  # nothing new


def test_a_trace_still_receiving_spans_waits_for_the_settle_time(store: Store) -> None:
    sink = DuckDBSink(store)
    sink.open()
    sink.write(_table([_call(1, 1, None)]), 1)
    res = _resolver(store, settle=dt.timedelta(seconds=0.5))
    assert res.run_pass().requests == 0  # committed just now: not settled
    assert request_store.watermark(store.cursor()) == 0
    time.sleep(0.6)
    sink.write(_table([_call(2, 2, None)]), 2)  # batch 2 not settled yet, batch 1 is
    done = res.run_pass()
    assert (done.requests, done.batches) == (1, (0, 1))
    time.sleep(0.6)
    assert res.run_pass().requests == 1
    assert _rows(store, "SELECT count(*) FROM request_rows") == [(2,)]


def test_a_settled_trace_defers_when_a_later_span_of_it_is_not_settled(store: Store) -> None:
    sink = DuckDBSink(store)
    sink.open()
    sink.write(_table([_call(1, 2, 1, variant_scope="s")]), 1)
    time.sleep(0.6)
    sink.write(_table([_span(1, 1, None, variant_scope="s")]), 2)
    res = _resolver(store, settle=dt.timedelta(seconds=0.5))
    report = res.run_pass()  # batch 1 settled, but its trace got a span in batch 2
    assert (report.requests, report.deferred) == (0, 1)
    time.sleep(0.6)
    assert res.run_pass().requests == 1
    assert _rows(store, "SELECT scope_span_id FROM request_rows") == [(f"{1:016x}",)]


def test_a_span_later_than_the_lookback_is_resolved_with_what_is_in_reach(store: Store) -> None:
    """The documented limit: past ``lookback``, the trace's earlier spans are not read again;
    the late route span alone is a scope without a call (two requests for one call)."""
    sink = DuckDBSink(store)
    sink.open()
    sink.write(_table([_call(1, 2, 1, variant_scope="s")]), 1)
    res = _resolver(store, lookback=dt.timedelta(seconds=0.3))
    res.catch_up()
    time.sleep(0.5)
    sink.write(_table([_span(1, 1, None, variant_scope="s")]), 2)
    res.catch_up()
    assert _rows(store, "SELECT count(*) FROM request_rows") == [(2,)]


def test_catch_up_takes_bounded_passes(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_store, "PASS_MAX_SPANS", 10)
    sink = DuckDBSink(store)
    sink.open()
    for batch in range(1, 6):
        sink.write(_table([_call(batch * 100 + i, 1, None) for i in range(7)]), batch)
    res = _resolver(store)
    calls = []
    real = res.run_pass

    def counting(settle: dt.timedelta | None = None) -> request_store.PassReport:
        report = real(settle)
        calls.append(report.requests)
        return report

    monkeypatch.setattr(res, "run_pass", counting)
    res.catch_up()
    assert sum(calls) == 35 and len(calls) >= 3 and max(calls) <= 14


def test_rows_written_without_ingest_are_resolved_by_rebuild(store: Store) -> None:
    con = store.cursor()
    con.from_arrow(
        _table([_call(1, 1, None), _span(1, 2, 1), _call(2, 3, None)])
        .append_column("ingested_at", pa.array([NOW] * 3, pa.timestamp("us")))
        .append_column("ingest_batch", pa.array([0, 0, 0], pa.int64()))
    ).insert_into("span_rows")
    assert rebuild(con, "ingest_batch = 0") == 2
    assert rebuild(con, "ingest_batch = 0") == 2  # again: replaced, not added
    assert _rows(store, "SELECT count(*) FROM request_rows") == [(2,)]
    con.close()


def test_requests_move_to_the_cold_tier_and_read_back_once(store: Store) -> None:
    sink = DuckDBSink(store)
    sink.open()
    old = NOW - dt.timedelta(days=5)
    sink.write(_table([_call(i, i, None, start=old) for i in range(1, 40)]), 1)
    sink.write(_table([_call(i, i, None) for i in range(40, 50)]), 2)
    res = _resolver(store)
    res.catch_up()
    roller = LakeRoller(
        store, Metrics(), interval_s=1, row_group_rows=1000, hot_retention=dt.timedelta(days=2)
    )
    before = _rows(store, "SELECT trace_id, span_id, latency_ms FROM requests_base ORDER BY 1")
    roller.roll()
    roller.move()
    assert _rows(store, "SELECT count(*) FROM request_rows") == [(10,)]  # the rest is cold
    assert tiers.state(store.cursor(), "requests").moved_batch == 1
    after = _rows(store, "SELECT trace_id, span_id, latency_ms FROM requests_base ORDER BY 1")
    assert after == before and len(after) == 49
    cold = list((store.lake_dir / "requests").glob("date=*/part-*.parquet"))
    assert len(cold) == 1
