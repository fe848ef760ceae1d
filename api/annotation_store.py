"""Durable, idempotent writes of evaluator scores and user feedback.

A request's records are inserted in one transaction from an Arrow table (fast, no per-row
round trips) with ``ON CONFLICT (id) DO NOTHING``: re-sending a record with the same ``id``
is a no-op, reported in ``duplicate_ids``. A record sent without an ``id`` gets one derived
from the request's ``Idempotency-Key`` header or, without one, from its content
(:func:`record_id`), so a client's retry never adds a row. The call returns only after
COMMIT, so a 200 means the records are durable. Trace ids without a stored span are
accepted and reported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from prefixscope.analytics.query import PREFIX_SQL, REQUESTS, judged_sql
from prefixscope.collector.spans.model import FEEDBACK_SCHEMA, SCORE_SCHEMA
from prefixscope.collector.storage.store import Store
from prefixscope.collector.storage.tables import write_lake_table
from prefixscope.errors import Unavailable

from .models import FeedbackIn, ScoreIn, WriteResult

# Column layouts are defined once, with the lake tables (collector/storage/tables.py).
SCORE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = tuple((f.name, f.type) for f in SCORE_SCHEMA)
FEEDBACK_COLUMNS: tuple[tuple[str, pa.DataType], ...] = tuple(
    (f.name, f.type) for f in FEEDBACK_SCHEMA
)
#: Attempts when two writers race on the same ids (DuckDB optimistic concurrency).
_ATTEMPTS = 3


def utc_naive(ts: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """Stored timestamps are naive UTC."""
    if ts is None:
        return now
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.UTC)
    return ts.replace(tzinfo=None)


def record_id(table: str, rec: dict[str, Any], idempotency_key: str | None, index: int) -> str:
    """The id of a record sent without one, the same on every retry of the same request.

    With an ``Idempotency-Key`` header: derived from the key and the record's position in
    the request. Without: derived from the record's content (everything but ``created_at``),
    so a client that resends the same score or feedback adds nothing, while a new value for
    the same (span, evaluator) is a new record (the analytics count the latest one).
    """
    if idempotency_key is not None:
        material = f"{table}\x1fkey\x1f{idempotency_key}\x1f{index}"
    else:
        fields = sorted((k, v) for k, v in rec.items() if k not in ("id", "created_at"))
        material = f"{table}\x1f" + "\x1f".join(f"{k}={v!r}" for k, v in fields)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def records_of(
    items: Sequence[ScoreIn | FeedbackIn],
    columns: tuple[tuple[str, Any], ...],
    table: str,
    idempotency_key: str | None,
) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    out = []
    for index, item in enumerate(items):
        rec = item.model_dump()
        rec["trace_id"] = rec["trace_id"].lower()
        rec["span_id"] = rec["span_id"].lower() if rec["span_id"] else None
        rec["id"] = rec["id"] or record_id(table, rec, idempotency_key, index)
        rec["created_at"] = utc_naive(rec["created_at"], now)
        out.append({name: rec.get(name) for name, _ in columns})
    return out


def write_lake(
    lake_url: str,
    table: str,
    items: Sequence[ScoreIn | FeedbackIn],
    idempotency_key: str | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
) -> WriteResult:
    """Publish records to a lake's ``scores`` or ``feedback`` table (a lake collector's
    ``POST /api/v1/scores|feedback``, ``prefixscope lake load``): the same ids as the store
    (:func:`record_id`), durable when this returns (segments published like span segments).

    A collector holds no index of what the lake has: a record whose id is already there is
    written again and removed by readers and ``prefixscope lake compact`` (one copy per id), so
    ``duplicate_ids`` lists only ids repeated inside the request, and ``unknown_trace_ids``
    stays empty (the collector does not know the lake's traces)."""
    columns = SCORE_COLUMNS if table == "scores" else FEEDBACK_COLUMNS
    recs = records_of(items, columns, table, idempotency_key)
    unique: dict[str, dict[str, Any]] = {}
    for rec in recs:  # a repeated id inside one request: the first one wins
        unique.setdefault(rec["id"], rec)
    arrow = pa.Table.from_pylist(list(unique.values()), schema=pa.schema(list(columns)))
    try:
        write_lake_table(lake_url, table, arrow, storage_options=storage_options)
    except OSError as exc:
        raise Unavailable(
            f"could not publish {table} to the lake: {exc}", retry_after_s=1
        ) from None
    ids = [r["id"] for r in recs]
    repeated = Counter(ids) if len(unique) < len(ids) else Counter()
    return WriteResult(
        accepted=len(recs),
        inserted=len(unique),
        ids=ids,
        duplicate_ids=sorted(i for i, n in repeated.items() if n > 1),
        unknown_trace_ids=[],
    )


def write_scores(
    store: Store, items: Sequence[ScoreIn], idempotency_key: str | None = None
) -> WriteResult:
    records = records_of(items, SCORE_COLUMNS, "scores", idempotency_key)
    return _write(store, "score_rows", SCORE_COLUMNS, records)


def write_feedback(
    store: Store, items: Sequence[FeedbackIn], idempotency_key: str | None = None
) -> WriteResult:
    records = records_of(items, FEEDBACK_COLUMNS, "feedback", idempotency_key)
    return _write(store, "feedback_rows", FEEDBACK_COLUMNS, records)


def _write(
    store: Store,
    table: str,
    columns: tuple[tuple[str, pa.DataType], ...],
    records: list[dict[str, Any]],
) -> WriteResult:
    ids = [r["id"] for r in records]
    unique: dict[str, dict[str, Any]] = {}
    for rec in records:  # a repeated id inside one request: the first one wins
        unique.setdefault(rec["id"], rec)
    arrow = pa.Table.from_pylist(list(unique.values()), schema=pa.schema(list(columns)))
    names = ", ".join(name for name, _ in columns)

    def attempt() -> WriteResult:
        cur = store.cursor()
        try:
            return _insert(cur, table, names, arrow, ids, records)
        except duckdb.Error:
            _safe_rollback(cur)
            raise
        finally:
            cur.close()

    for attempt_no in range(_ATTEMPTS):
        try:  # out of memory: the store stops ad-hoc reads and retries
            return store.write(attempt)
        except duckdb.TransactionException:
            if attempt_no == _ATTEMPTS - 1:
                raise Unavailable(
                    f"could not commit {table}: concurrent writers", retry_after_s=1
                ) from None
        except duckdb.Error as exc:
            raise Unavailable(f"could not commit {table}: {exc}", retry_after_s=1) from None
    raise AssertionError("unreachable")


def _insert(
    cur: duckdb.DuckDBPyConnection,
    table: str,
    names: str,
    arrow: pa.Table,
    ids: list[str],
    records: list[dict[str, Any]],
) -> WriteResult:
    cur.register("_incoming", arrow)
    try:
        cur.execute("BEGIN TRANSACTION")
        existing = {
            row[0]
            for row in cur.execute(
                f"SELECT id FROM {table} WHERE id IN (SELECT id FROM _incoming)"
            ).fetchall()
        }
        cur.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM _incoming "
            "ON CONFLICT (id) DO NOTHING"
        )
        trace_ids = sorted({r["trace_id"] for r in records})
        known = {
            row[0]
            for row in cur.execute(
                "SELECT DISTINCT trace_id FROM spans WHERE trace_id IN "
                "(SELECT unnest(?::VARCHAR[]))",
                [trace_ids],
            ).fetchall()
        }
        cur.execute("COMMIT")
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.unregister("_incoming")
    inserted = arrow.num_rows - len(existing)
    return WriteResult(
        accepted=len(records),
        inserted=inserted,
        ids=ids,
        duplicate_ids=sorted(existing),
        unknown_trace_ids=[t for t in trace_ids if t not in known],
    )


def _safe_rollback(cur: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        cur.execute("ROLLBACK")


def variant_keys(
    store: Store, refs: Sequence[tuple[str, str | None]]
) -> list[tuple[str, str, str]]:
    """(prefix_id, prefix_version, route) of each feedback target's request (attributed as
    analytics attributes it: the request the span belongs to, or for trace-level feedback the
    trace's last request); targets with no resolved request are left out."""
    if not refs:
        return []
    cur = store.read_cursor()
    try:
        rows = cur.execute(
            f"""WITH t AS (SELECT unnest(?::VARCHAR[]) AS trace_id, unnest(?::VARCHAR[]) AS span_id,
  unnest(range(?)) AS i)
SELECT t.i, {PREFIX_SQL}, coalesce(s.prefix_version, ''), coalesce(s.route, '')
FROM t JOIN {REQUESTS} s ON s.trace_id = t.trace_id AND {judged_sql(alias="s")}
QUALIFY row_number() OVER (PARTITION BY t.i ORDER BY s.end_time DESC, s.span_id DESC) = 1""",
            [[r[0] for r in refs], [r[1] for r in refs], len(refs)],
        ).fetchall()
    finally:
        cur.close()
    return [(pid, ver, route) for _, pid, ver, route in sorted(rows)]
