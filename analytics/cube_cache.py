"""The detection cube kept between runs on the embedded store, one part per UTC day.

A cube is additive over disjoint sets of requests (:mod:`.cube`), so the cube of a window is
the sum of the cubes of the whole days inside it plus those of the partial days at its ends.
The server's detector, gate and routing advice ask for it every few minutes while most days
have not changed since the last run: this module keeps each day's part in memory and
recomputes only the days whose inputs changed. The days that change (the latest, and any kept
day once it changes; :data:`SPLIT_DAYS` at most) are also kept by the hour, and a change then
rescans its hours only; fingerprints and learned annotation hours are per request hour.

What a day's part depends on, and how a change is seen (every run, by content, whoever wrote
it: the resolver, the annotation endpoints, online evaluation, retention, tier moves):

- **its requests** (both tiers): a fingerprint per request hour, the count and an order-free
  hash of each row's identity, the resolver pass that wrote it and its span count
  (``request_views.change_source``: a re-resolved trace changes it);
- **the scores and feedback attributed to them**: a fingerprint per *created* hour. A changed
  hour dirties the hours of its rows' requests now, and the hours its rows had when those
  were computed (each scan learns them), which covers rows that left the hour (retention; a
  score written again under its id);
- **the served-model mapping and the registry**: any change drops every part.

Parts are computed lazily, only for days a window covers whole, in scans of at most
:data:`SCAN_MAX_REQUESTS` requests (a bigger day is scanned in parts) so that the joins stay
within the store's memory budget; partial days at a window's ends are computed from the rows
each time. Runs with a one-run mapping (``--served-model``: temporary views) and connections
that are not an embedded store (lake, Spark) are never cached. The cached parts hold per-cell
sums (hundreds of cells a day), so a store's cache is small; it is also kept on disk beside the
store's file (:mod:`.cube_disk`), so the first run after a restart scans only what changed
while the server was down.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import duckdb

from prefixscope.collector.storage import request_store

from . import cube_disk
from .cube import DAY, HOUR, Cube, build_cube, concat
from .cube_changes import annotation_hours, invalidate
from .query import Window

#: stores whose cubes are kept (one process rarely opens more; tests open many)
MAX_STORES = 8
#: requests one scan reads at most (a day with more is scanned in parts): it bounds the
#: memory of the scan's joins within the store's budget (measured: the 100M-span benchmark,
#: 3.6M requests a day, runs in scans of half a day at a 1,024 MB budget; in one scan it runs
#: out of memory), and lets 10M spans (2.5M requests) go in one scan
SCAN_MAX_REQUESTS = 3_000_000
_HOUR = timedelta(hours=1)
#: the latest days with changes keep their parts by the hour too (new traffic lands there: a
#: change then scans its hours again, not its day)
SPLIT_DAYS = 2
#: a scan's annotation rows are narrowed to at most this many created-time ranges
_MAX_RANGES = 256


@dataclass(slots=True)
class _Parts(cube_disk.Kept):
    """One store's cached day parts for one set of dims, and where they are kept on disk."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: bool = False


_stores: dict[tuple[str, tuple[str, ...]], _Parts] = {}
_stores_lock = threading.Lock()


def cached_cube(con: duckdb.DuckDBPyConnection, dims: Sequence[str], window: Window) -> Cube:
    """``build_cube(con, dims, window)``, from cached day parts where the store allows.

    The cube's ``meta["cache"]`` says what was done: whole days reused and computed, and
    the partial days at the window's ends (computed from the rows, in scans of
    :func:`_plan`'s size)."""
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
        where = cube_disk.folder(path, dims)
        if not parts.loaded:
            parts.loaded = True
            if where is not None:
                cube_disk.load(where, dims, parts)
        changed = invalidate(con, parts)
        counts = _day_counts(parts.request_fp)
        if counts:  # the latest day changes next: keep it by the hour
            parts.split.add(max(counts))
        _prune(parts)
        pieces: list[Cube] = []
        needed: list[date] = []
        edges: list[tuple[datetime, datetime]] = []
        for day, lo, hi in _days(window, counts):
            if lo is not None or hi is not None:
                edges.append((lo or _start(day), hi or _end(day)))
            elif day in parts.days:
                pieces.append(parts.days[day])
            else:
                needed.append(day)
        reused = len(pieces)
        hours = 0
        if needed:
            computed, hours = _compute_days(con, dims, needed, parts)
            parts.days.update(computed)
            pieces.extend(computed.values())
        if (changed or needed) and where is not None:
            cube_disk.save(where, dims, parts)
        for lo, hi in _plan([(lo, hi, counts[lo.date()]) for lo, hi in edges]):
            pieces.append(build_cube(con, dims, Window(lo, hi)))
        cube = concat(pieces, window) if pieces else build_cube(con, dims, window)
        cube.meta["cache"] = {
            "days_reused": reused,
            "days_computed": len(needed),
            "partial_days": len(edges),
        }
        cube.meta["hours_computed"] = hours
        return cube


def _day_counts(request_fp: dict[datetime, cube_disk.Fingerprint]) -> dict[date, int]:
    out: dict[date, int] = {}
    for hour, (n, _) in request_fp.items():
        out[hour.date()] = out.get(hour.date(), 0) + n
    return out


def _prune(parts: _Parts) -> None:
    """Keep hour parts for the :data:`SPLIT_DAYS` latest split days only."""
    keep = set(sorted(parts.split)[-SPLIT_DAYS:])
    parts.split = keep
    for hour in [h for h in parts.hours if h.date() not in keep]:
        del parts.hours[hour]


def forget() -> None:
    """Drop every part kept in memory (what a restart does; the parts on disk stay)."""
    with _stores_lock:
        _stores.clear()


def _plan(ranges: list[tuple[datetime, datetime, int]]) -> list[tuple[datetime, datetime]]:
    """Scan windows covering ``ranges`` (sorted ``(lo, hi, requests)``; the requests may be an
    upper bound), each holding about :data:`SCAN_MAX_REQUESTS` at most: adjacent small
    ranges merged, a big one cut into equal parts."""
    out: list[tuple[datetime, datetime]] = []
    cur: list[Any] = []  # [lo, hi, requests]
    for lo, hi, n in ranges:
        pieces = max(1, -(-n // SCAN_MAX_REQUESTS))
        step = (hi - lo) / pieces
        for k in range(pieces):
            a, b = lo + step * k, (hi if k == pieces - 1 else lo + step * (k + 1))
            m = n / pieces
            if cur and cur[1] == a and cur[2] + m <= SCAN_MAX_REQUESTS:
                cur[1], cur[2] = b, cur[2] + m
            else:
                if cur:
                    out.append((cur[0], cur[1]))
                cur = [a, b, m]
    if cur:
        out.append((cur[0], cur[1]))
    return out


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


def _created_in(hours: set[datetime]) -> str:
    """A condition on ``t.created_at``: within one of ``hours`` (contiguous hours merged into
    one range, so the scan can skip the row groups outside them)."""
    ranges: list[list[datetime]] = []
    for h in sorted(hours):
        if ranges and ranges[-1][1] == h:
            ranges[-1][1] = h + _HOUR
        else:
            ranges.append([h, h + _HOUR])
    if not ranges:
        return "FALSE"
    if len(ranges) > _MAX_RANGES:  # scattered hours: reading every row is as cheap
        return "TRUE"
    return " OR ".join(
        f"(t.created_at >= TIMESTAMP '{a.isoformat(sep=' ')}' "
        f"AND t.created_at < TIMESTAMP '{b.isoformat(sep=' ')}')"
        for a, b in ranges
    )


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _end(day: date) -> datetime:
    return _start(day) + timedelta(days=1)


def _days(
    window: Window, known: dict[date, int]
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
    con: duckdb.DuckDBPyConnection, dims: tuple[str, ...], days: list[date], parts: _Parts
) -> tuple[dict[date, Cube], int]:
    """The parts of whole ``days`` and how many hours were scanned for them. A split day
    (:data:`SPLIT_DAYS`) adds up its hour parts, scanning the hours not kept; another is
    scanned grouped by day. Scans are of :func:`_plan`'s size (:func:`_scan`)."""
    split = sorted(d for d in days if d in parts.split)
    whole = sorted(d for d in days if d not in parts.split)
    counts = _day_counts(parts.request_fp)
    pieces: dict[date, list[Cube]] = {}
    for lo, hi in _plan([(_start(d), _end(d), counts[d]) for d in whole]):
        for value, part in _scan(con, dims, DAY, lo, hi, parts).partition().items():
            pieces.setdefault(date.fromisoformat(str(value)), []).append(part)
    hours_of = {d: sorted(h for h in parts.request_fp if h.date() == d) for d in split}
    missing = [h for d in split for h in hours_of[d] if h not in parts.hours]
    by_hour: dict[datetime, list[Cube]] = {}
    for lo, hi in _plan([(h, h + _HOUR, parts.request_fp[h][0]) for h in missing]):
        for value, part in _scan(con, dims, HOUR, lo, hi, parts).partition().items():
            by_hour.setdefault(datetime.fromisoformat(str(value)), []).append(part)
    for hour, got in by_hour.items():
        parts.hours[hour] = concat(got, Window(hour, hour + _HOUR))
    for d in split:
        pieces[d] = [parts.hours[h] for h in hours_of[d] if h in parts.hours]
    out: dict[date, Cube] = {}
    for day in days:
        window = Window(_start(day), _end(day))
        got = pieces.get(day, [])
        out[day] = concat(got, window) if got else build_cube(con, dims, window)
    return out, len(missing)


def _scan(
    con: duckdb.DuckDBPyConnection,
    dims: tuple[str, ...],
    grain: str,
    lo: datetime,
    hi: datetime,
    parts: _Parts,
) -> Cube:
    """The cube of the requests in [lo, hi) by ``dims`` and ``grain`` (:data:`DAY` or
    :data:`HOUR`). It first learns which created hours hold scores and feedback of those
    requests (and which request hours those hours' rows belong to, so that a later change of
    a created hour is local); its joins then read those hours' rows only, not every score of
    the store."""
    found = annotation_hours(con, window=(lo, hi))
    for key, hours in found.items():
        parts.annotation_hours[key] = parts.annotation_hours.get(key, frozenset()) | hours
    return build_cube(
        con, (*dims, grain), Window(lo, hi), annotations_where=_created_in({h for _, h in found})
    )
