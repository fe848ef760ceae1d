"""What changed since the kept cube's parts were computed (:mod:`.cube_cache`, whose
docstring says what a day's part depends on): the requests' fingerprints per hour, the
annotations' per created hour, the mapping and the registry; and which request hours the
score and feedback rows of a created hour belong to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb

from prefixscope.collector.storage import request_store, request_views
from prefixscope.collector.storage.annotation_views import annotation_versions as versions

from . import cube_disk

#: annotations are fingerprinted per created hour (a new score touches one small bucket)
ANNOTATIONS = ("scores", "feedback")
#: what an annotation row's fingerprint covers (read from every stored version of the rows,
#: :func:`~prefixscope.collector.storage.annotation_views.annotation_versions`: a change of
#: the views is a change of those, and reading them skips the views' de-duplication)
_ANNOTATION_COLUMNS = "id, trace_id, span_id, value, created_at"


def _context(con: duckdb.DuckDBPyConnection) -> tuple[object, ...]:
    """What every day's part depends on besides its rows: the served-model mapping, the
    registry, and whether the view applies the mapping yet (``refresh_view`` redefines it
    after a change). Not the views' text: a tier move rewrites it, and keeps every row."""
    row = con.execute(
        "SELECT (SELECT bool_or(contains(sql, 'served_models')) FROM duckdb_views() "
        f"  WHERE view_name = '{request_store.BASE_VIEW}' AND NOT temporary), "
        "(SELECT count(*) FROM served_models), "
        "(SELECT bit_xor(hash(*COLUMNS(*))) FROM served_models), "
        "(SELECT count(*) FROM prefixes), "
        "(SELECT bit_xor(hash(*COLUMNS(*))) FROM prefixes)"
    ).fetchall()[0]
    return tuple(row)


def invalidate(con: duckdb.DuckDBPyConnection, parts: cube_disk.Kept) -> bool:
    """Drop the parts of every hour and day whose inputs changed since the last look; whether
    any fingerprint changed."""
    context = _context(con)
    changed_context = context != parts.context
    if changed_context:
        parts.context = context
        parts.days.clear()
        parts.hours.clear()
        parts.split.clear()
    now_req = {
        hour: (int(n), int(h))
        for hour, n, h in con.execute(
            "SELECT date_trunc('hour', start_time), count(*), coalesce(bit_xor(version), 0) "
            f"FROM {request_views.change_source(con)} GROUP BY ALL"
        ).fetchall()
    }
    dirty = {
        d
        for d in now_req.keys() | parts.request_fp.keys()
        if now_req.get(d) != parts.request_fp.get(d)
    }
    parts.request_fp = now_req
    now_ann = {
        (str(t), hour): (int(n), int(h))
        for t, hour, n, h in con.execute(
            " UNION ALL ".join(
                f"SELECT '{t}', date_trunc('hour', created_at), count(*), "
                f"coalesce(bit_xor(hash(id, trace_id, span_id, value, created_at)), 0) "
                f"FROM {versions(con, t, _ANNOTATION_COLUMNS)} GROUP BY ALL"
                for t in ANNOTATIONS
            )
        ).fetchall()
    }
    # a bucket that changed dirties the days its rows had (removed rows included: learned when
    # those days were computed) and the days its rows have now
    changed = [
        k
        for k in now_ann.keys() | parts.annotation_fp.keys()
        if now_ann.get(k) != parts.annotation_fp.get(k)
    ]
    parts.annotation_fp = now_ann
    if not parts.days and not parts.hours:  # nothing kept: nothing to drop (computing learns)
        parts.annotation_hours.clear()
        return True
    found = annotation_hours(con, buckets=[k for k in changed if k in now_ann])
    for key in changed:
        dirty |= parts.annotation_hours.pop(key, frozenset())
        if key in found:
            dirty |= found[key]
            parts.annotation_hours[key] = found[key]
    for hour in dirty:
        parts.hours.pop(hour, None)
        if parts.days.pop(hour.date(), None) is not None:
            parts.split.add(hour.date())  # a kept day that changes: keep it by the hour
    return bool(changed_context or dirty or changed)


def annotation_hours(
    con: duckdb.DuckDBPyConnection,
    *,
    buckets: list[tuple[str, datetime]] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> dict[tuple[str, datetime], frozenset[datetime]]:
    """The request hours of the score and feedback rows of each (table, created hour): of the
    ``buckets`` given (all requests), or of every bucket for the requests that started in
    ``window``. One join on a 64-bit hash of the trace id (no hex parsing of every row): a
    collision can only add an hour, and an added hour costs a scan, never a wrong cube. Ids are
    stored as lower-case full-width hex by every writer, so equal hashes of equal strings
    find every row the cube's numeric join attributes. The build side is the smaller of the
    two (the changed buckets' rows, or one scan's requests)."""
    if buckets is not None and not buckets:
        return {}
    selects: list[str] = []
    params: list[Any] = []
    for table in ANNOTATIONS:
        where = ""
        if buckets is not None:
            hours = sorted({h for t, h in buckets if t == table})
            if not hours:
                continue
            where = "WHERE date_trunc('hour', created_at) IN (SELECT unnest(?::TIMESTAMP[]))"
            params.append(hours)
        source = versions(con, table, "trace_id, created_at")
        selects.append(
            f"SELECT DISTINCT '{table}' AS t, date_trunc('hour', created_at) AS hour, "
            f"hash(trace_id) AS k FROM {source} {where}"
        )
    requests = f"SELECT hash(trace_id) AS k, start_time FROM {request_views.rows_source(con)}"
    if window is not None:
        requests += " WHERE start_time >= ? AND start_time < ?"
        params += list(window)
    rows = con.execute(
        f"""SELECT DISTINCT a.t, a.hour, date_trunc('hour', r.start_time) FROM (
  {" UNION ALL ".join(selects)}
) a JOIN ({requests}) r ON r.k = a.k""",
        params,
    ).fetchall()
    out: dict[tuple[str, datetime], set[datetime]] = {k: set() for k in buckets or ()}
    for t, hour, request_hour in rows:
        out.setdefault((str(t), hour), set()).add(request_hour)
    return {k: frozenset(v) for k, v in out.items()}
