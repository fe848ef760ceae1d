"""The detection cube kept between runs on the embedded store, one part per UTC day.

A cube is additive over disjoint sets of requests (:mod:`.cube`), so the cube of a window is
the sum of the cubes of the whole days inside it plus those of the partial days at its ends.
The server's detector, gate and routing advice ask for it every few minutes while most days
have not changed since the last run: this module keeps each day's part in memory and
recomputes only the days whose inputs changed.

What a day's part depends on, and how a change is seen (every run, by content, whoever wrote
it: the resolver, the annotation endpoints, online evaluation, retention, tier moves):

- **its requests** (both tiers): a fingerprint per request day, the count and an order-free
  hash of the rows' identity and resolved shape (a re-resolved trace changes it);
- **the scores and feedback attributed to them**: a fingerprint per *created* hour; a changed
  hour's rows are traced to their requests' days (and the days its rows had before, kept from
  the last look, cover removed rows; when those are unknown and rows were removed, every day
  is recomputed);
- **the served-model mapping and the views' definitions**: any change drops every part.

Parts are recomputed lazily, only for days a window covers whole; partial days are computed
from the rows each time. Runs with a one-run mapping (``--served-model``: temporary views) and
connections that are not an embedded store (lake, Spark) are never cached. The cached parts
hold per-cell sums (hundreds of cells a day), so a store's cache is small.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import duckdb

from prefixscope.collector.storage import request_store

from .cube import DAY, Cube, build_cube, concat
from .query import Window

#: annotations are fingerprinted per created hour (a new score touches one small bucket)
_ANNOTATIONS = ("scores", "feedback")
#: stores whose cubes are kept (one process rarely opens more; tests open many)
MAX_STORES = 8

Fingerprint = tuple[int, int]


@dataclass(slots=True)
class _Parts:
    """One store's cached day parts for one set of dims."""

    context: tuple[object, ...] = ()
    days: dict[date, Cube] = field(default_factory=dict)
    request_fp: dict[date, Fingerprint] = field(default_factory=dict)
    #: (table, created hour) -> fingerprint, and the request days its rows belonged to
    annotation_fp: dict[tuple[str, datetime], Fingerprint] = field(default_factory=dict)
    annotation_days: dict[tuple[str, datetime], frozenset[date]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_stores: dict[tuple[str, tuple[str, ...]], _Parts] = {}
_stores_lock = threading.Lock()


def cached_cube(con: duckdb.DuckDBPyConnection, dims: Sequence[str], window: Window) -> Cube:
    """``build_cube(con, dims, window)``, from cached day parts where the store allows.

    The cube's ``meta["cache"]`` says what was done: whole days reused and computed, and
    the partial days at the window's ends (computed from the rows, in one scan)."""
    dims = tuple(dims)
    path = _store_path(con)
    if path is None:
        return build_cube(con, dims, window)
    with _stores_lock:
        parts = _stores.pop((path, dims), None) or _Parts()
        _stores[(path, dims)] = parts  # most recently used last
        while len(_stores) > MAX_STORES:
            _stores.pop(next(iter(_stores)))
    with parts.lock:
        _invalidate(con, parts)
        pieces: list[Cube] = []
        needed: list[date] = []
        edges: list[tuple[datetime, datetime]] = []
        for day, lo, hi in _days(window, parts.request_fp):
            if lo is not None or hi is not None:
                edges.append((lo or _start(day), hi or _end(day)))
            elif day in parts.days:
                pieces.append(parts.days[day])
            else:
                needed.append(day)
        reused = len(pieces)
        if needed:  # one scan from the first to the last day needed; every day in it is kept
            computed = _compute_days(con, dims, min(needed), max(needed))
            parts.days.update(computed)
            pieces.extend(part for day, part in computed.items() if day in needed)
        if edges:
            pieces.append(_edges(con, dims, edges))
        cube = concat(pieces, window) if pieces else build_cube(con, dims, window)
        cube.meta["cache"] = {
            "days_reused": reused,
            "days_computed": len(needed),
            "partial_days": len(edges),
        }
        return cube


def _edges(
    con: duckdb.DuckDBPyConnection, dims: tuple[str, ...], ranges: list[tuple[datetime, datetime]]
) -> Cube:
    """The cube of the partial days' ranges, from the rows in one scan."""
    where = " OR ".join("(s.start_time >= ? AND s.start_time < ?)" for _ in ranges)
    params = [t for r in ranges for t in r]
    span = Window(min(lo for lo, _ in ranges), max(hi for _, hi in ranges))
    return build_cube(con, dims, span, extra_where=where, extra_params=params)


def _store_path(con: object) -> str | None:
    """The file of an embedded store read through its standard views, else None."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return None
    rows = con.execute(
        "SELECT d.path, "
        "(SELECT count(*) FROM duckdb_tables() t WHERE t.table_name = ? "
        " AND t.database_name = d.database_name), "
        "(SELECT count(*) FROM duckdb_views() v WHERE v.view_name = ? AND v.temporary) "
        "FROM duckdb_databases() d WHERE d.database_name = current_database()",
        [request_store.ROWS, request_store.BASE_VIEW],
    ).fetchall()
    if not rows or not rows[0][0] or not rows[0][1] or rows[0][2]:
        return None
    return str(rows[0][0])


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


def _invalidate(con: duckdb.DuckDBPyConnection, parts: _Parts) -> None:
    """Drop the parts of every day whose inputs changed since the last look."""
    context = _context(con)
    if context != parts.context:
        parts.context = context
        parts.days.clear()
    now_req = {
        d: (int(n), int(h))
        for d, n, h in con.execute(
            "SELECT CAST(start_time AS DATE), count(*), coalesce(bit_xor(version), 0) "
            f"FROM {request_store.change_source(con)} GROUP BY ALL"
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
                f"FROM {t} GROUP BY ALL"
                for t in _ANNOTATIONS
            )
        ).fetchall()
    }
    # every bucket's request days are known from its first look on: a bucket that changed
    # dirties the days its rows had (removed rows included) and the days they have now
    changed = [
        k
        for k in now_ann.keys() | parts.annotation_fp.keys()
        if now_ann.get(k) != parts.annotation_fp.get(k)
    ]
    learn = [k for k in changed if k in now_ann]
    found = _annotation_days(con, learn, everything=not parts.annotation_fp)
    for key in changed:
        dirty |= parts.annotation_days.pop(key, frozenset())
        if key in found:
            dirty |= found[key]
            parts.annotation_days[key] = found[key]
    parts.annotation_fp = now_ann
    for d in dirty:
        parts.days.pop(d, None)


def _annotation_days(
    con: duckdb.DuckDBPyConnection, keys: list[tuple[str, datetime]], *, everything: bool
) -> dict[tuple[str, datetime], frozenset[date]]:
    """The request days of the rows in each (table, created hour) bucket of ``keys`` (one
    join; ``everything``: the keys are all the buckets, no filter)."""
    if not keys:
        return {}
    selects = []
    params: list[object] = []
    for table in _ANNOTATIONS:
        hours = sorted({h for t, h in keys if t == table})
        if not hours:
            continue
        where = ""
        if not everything:
            where = "WHERE date_trunc('hour', created_at) IN (SELECT unnest(?::TIMESTAMP[]))"
            params.append(hours)
        selects.append(
            f"SELECT DISTINCT '{table}' AS t, date_trunc('hour', created_at) AS hour, trace_id "
            f"FROM {table} {where}"
        )
    rows = con.execute(
        f"""SELECT DISTINCT a.t, a.hour, CAST(r.start_time AS DATE) FROM (
  {" UNION ALL ".join(selects)}
) a JOIN (SELECT trace_id, start_time FROM {request_store.rows_source(con)}) r
  ON r.trace_id = a.trace_id""",
        params,
    ).fetchall()
    out: dict[tuple[str, datetime], set[date]] = {k: set() for k in keys}
    for t, hour, day in rows:
        out.setdefault((str(t), hour), set()).add(day)
    return {k: frozenset(v) for k, v in out.items()}


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _end(day: date) -> datetime:
    return _start(day) + timedelta(days=1)


def _days(
    window: Window, known: dict[date, Fingerprint]
) -> list[tuple[date, datetime | None, datetime | None]]:
    """The days with requests that ``window`` touches: (day, lo, hi), where lo/hi are the
    window's bounds inside a day it covers only in part (None when it covers the day)."""
    out = []
    for day in sorted(known):
        start, end = _start(day), _end(day)
        if window.since is not None and window.since >= end:
            continue
        if window.until is not None and window.until <= start:
            continue
        lo = window.since if window.since is not None and window.since > start else None
        hi = window.until if window.until is not None and window.until < end else None
        out.append((day, lo, hi))
    return out


def _compute_days(
    con: duckdb.DuckDBPyConnection, dims: tuple[str, ...], first: date, last: date
) -> dict[date, Cube]:
    """The parts of the days from ``first`` to ``last``, in one scan grouped by day too."""
    whole = build_cube(con, (*dims, DAY), Window(_start(first), _end(last)))
    out: dict[date, Cube] = {}
    for value, part in whole.partition().items():
        day = date.fromisoformat(str(value))
        part.window = Window(_start(day), _end(day))
        out[day] = part
    return out
