"""The analytics cube: sufficient statistics per cell, computed in SQL in four scans.

A :class:`Cube` holds, for every combination of its dimensions (a *cell*), counts, sums and
log-binned histograms of latency and TTFT, evaluator score moments and feedback counts.
It is small (its size is the number of cells x bins, not of spans) and additive, so coarser
views are exact roll-ups in numpy (:meth:`Cube.rollup`): one pass over the spans serves the
scorecard, the detector, the gate and the routing advice of a run.

The statements are engine-portable: :func:`build_cube` runs them on DuckDB (the embedded store
or a lake) or on Spark SQL (:mod:`.engines`), and both produce the same cube. This module is the
one definition of what is counted; everything downstream is numpy on the cube.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from .cube_arrays import (
    cell_ids,
    codes_in_order,
    combine_bins,
    combine_sums,
    floats,
    ints,
    naive_utc_times,
    sorted_codes,
    strings,
)
from .cube_sql import (
    HIST_SQL,
    REQ_COLUMNS,
    cells_sql,
    feedback_sql,
    score_rows,
)
from .engines import Engine, as_engine
from .query import BASE, REQUESTS, Window, group_expr

#: dims grouped on the raw column in SQL (cheaper) and normalised in Python afterwards
_RAW = {"prefix_id": "s.prefix_id", "prefix_version": "s.prefix_version"}
#: an internal dim: the request's UTC day as a DATE (``YYYY-MM-DD`` keys; what
#: :mod:`.cube_cache` splits a scan of several days by; cheaper to group than ``day``)
DAY = "__day"
#: an internal dim: the request's UTC hour (``YYYY-MM-DD HH:MM:SS`` keys; the changing days'
#: parts are kept by the hour)
HOUR = "__hour"
_INTERNAL = {DAY: "CAST(s.start_time AS DATE)", HOUR: "date_trunc('hour', s.start_time)"}
_SUMS = ("n", "errors", "fallbacks", "input_tokens", "output_tokens", "cached", "cache_base")


@dataclass(slots=True)
class Cube:
    """Additive per-cell statistics; arrays are aligned with :attr:`keys`."""

    dims: tuple[str, ...]
    window: Window
    keys: list[tuple[str | None, ...]]
    sums: dict[str, np.ndarray]
    first_seen: list[datetime | None]
    last_seen: list[datetime | None]
    # histograms: parallel arrays (cell, metric, bin, count)
    h_cell: np.ndarray
    h_metric: np.ndarray
    h_bin: np.ndarray
    h_count: np.ndarray
    # evaluator scores: (cell, name, n, sum, sum of squares)
    s_cell: np.ndarray
    s_name: list[str]
    s_n: np.ndarray
    s_sum: np.ndarray
    s_sumsq: np.ndarray
    # feedback: (cell, kind, flagged requests)
    f_cell: np.ndarray
    f_kind: list[str]
    f_count: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def index(self) -> dict[tuple[str | None, ...], int]:
        return {k: i for i, k in enumerate(self.keys)}

    def can_rollup(self, dims: Sequence[str]) -> bool:
        return all(
            d in self.dims or (d.startswith("cohort.") and "cohort" in self.dims) for d in dims
        )

    def rollup(self, dims: Sequence[str]) -> Cube:
        """The same statistics grouped by ``dims`` (each a dim of this cube or ``cohort.<k>``)."""
        dims = tuple(dims)
        if dims == self.dims:
            return self
        if not self.can_rollup(dims):
            raise ValueError(f"cannot roll up dims {self.dims} to {dims}")
        pos = {d: i for i, d in enumerate(self.dims)}
        cohort_pos = pos.get("cohort")
        parsed: dict[str | None, dict[str, Any]] = {}

        def value(key: tuple[str | None, ...], d: str) -> str | None:
            if d in pos:
                return key[pos[d]]
            raw = key[cohort_pos] if cohort_pos is not None else None
            if raw not in parsed:
                parsed[raw] = orjson.loads(raw) if raw else {}
            v = parsed[raw].get(d[len("cohort.") :])
            return None if v is None else str(v)

        new_index: dict[tuple[str | None, ...], int] = {}
        mapping = np.empty(len(self.keys), dtype=np.int64)
        for i, key in enumerate(self.keys):
            nk = tuple(value(key, d) for d in dims)
            mapping[i] = new_index.setdefault(nk, len(new_index))
        return self.regroup(dims, mapping, list(new_index))

    def regroup(
        self, dims: tuple[str, ...], mapping: np.ndarray, keys: list[tuple[str | None, ...]]
    ) -> Cube:
        """Merge cells: cell ``i`` goes to new cell ``mapping[i]`` whose key is ``keys[j]``
        (:meth:`expand` with each cell going to exactly one new cell)."""
        return self.expand(dims, np.arange(len(self.keys)), np.asarray(mapping), keys)

    def expand(
        self,
        dims: tuple[str, ...],
        old: np.ndarray,
        new: np.ndarray,
        keys: list[tuple[str | None, ...]],
        weight: np.ndarray | None = None,
    ) -> Cube:
        """A cube whose cell ``j`` adds up the cells ``old[i]`` with ``new[i] == j`` (each
        times ``weight[i]``, default 1): like :meth:`regroup`, but a cell may go to several
        new cells (a request counts in every cohort slice it belongs to) and a weight of -1
        subtracts (the complement of a slice within another). ``keys[j]`` is cell j's key."""
        m = len(keys)
        w = np.ones(len(old)) if weight is None else np.asarray(weight, np.float64)
        sums = {k: np.bincount(new, weights=v[old] * w, minlength=m) for k, v in self.sums.items()}
        first: list[datetime | None] = [None] * m
        last: list[datetime | None] = [None] * m
        for i, j in zip(old.tolist(), new.tolist(), strict=True):
            f, la = self.first_seen[i], self.last_seen[i]
            if f is not None and (first[j] is None or f < first[j]):
                first[j] = f
            if la is not None and (last[j] is None or la > last[j]):
                last[j] = la
        # entries keyed by old cell -> one copy per (old, new) pair
        order = np.argsort(old, kind="stable")
        o_sorted, n_sorted, w_sorted = old[order], new[order], w[order]
        starts = np.searchsorted(o_sorted, np.arange(len(self.keys)), side="left")
        ends = np.searchsorted(o_sorted, np.arange(len(self.keys)), side="right")

        def fan(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """(entry index, new cell, weight) for every entry of cell ``cells[e]``."""
            counts = (ends - starts)[cells]
            entry = np.repeat(np.arange(len(cells)), counts)
            base = np.repeat(starts[cells], counts)
            offset = np.arange(len(entry)) - np.repeat(np.cumsum(counts) - counts, counts)
            pos = base + offset
            return entry, n_sorted[pos], w_sorted[pos]

        he, hn, hw = fan(self.h_cell)
        h = combine_bins(hn, self.h_metric[he], self.h_bin[he], self.h_count[he] * hw)
        keep = h[3] != 0  # a subtraction empties bins
        h = tuple(a[keep] for a in h)
        se, sn, sw = fan(self.s_cell)
        s_codes, s_names = sorted_codes(self.s_name)
        sc = combine_sums(
            sn, s_codes[se], (self.s_n[se] * sw, self.s_sum[se] * sw, self.s_sumsq[se] * sw)
        )
        fe, fn, fw = fan(self.f_cell)
        f_codes, f_names = sorted_codes(self.f_kind)
        fc = combine_sums(fn, f_codes[fe], (self.f_count[fe] * fw,))
        return replace(
            self,
            dims=dims,
            keys=keys,
            sums=sums,
            first_seen=first,
            last_seen=last,
            h_cell=h[0],
            h_metric=h[1],
            h_bin=h[2],
            h_count=h[3],
            s_cell=sc[0],
            s_name=[s_names[c] for c in sc[1]],
            s_n=sc[2][0],
            s_sum=sc[2][1],
            s_sumsq=sc[2][2],
            f_cell=fc[0],
            f_kind=[f_names[c] for c in fc[1]],
            f_count=fc[2][0],
        )

    def partition(self) -> dict[str | None, Cube]:
        """This cube split by its last dim: one cube per value, over the other dims (the
        inverse of :func:`concat` over parts that differ in one dim)."""
        dims = self.dims[:-1]
        values = [k[-1] for k in self.keys]
        codes, uniq = codes_in_order(values)
        local = np.zeros(len(self.keys), dtype=np.int64)
        out: dict[str | None, Cube] = {}
        masks_h = codes[self.h_cell] if len(self.h_cell) else np.zeros(0, np.int64)
        masks_s = codes[self.s_cell] if len(self.s_cell) else np.zeros(0, np.int64)
        masks_f = codes[self.f_cell] if len(self.f_cell) else np.zeros(0, np.int64)
        for code, value in enumerate(uniq):
            cells = np.flatnonzero(codes == code)
            local[cells] = np.arange(len(cells))
            h, sc, fb = masks_h == code, masks_s == code, masks_f == code
            s_idx, f_idx = np.flatnonzero(sc).tolist(), np.flatnonzero(fb).tolist()
            out[value] = replace(
                self,
                dims=dims,
                keys=[self.keys[i][:-1] for i in cells.tolist()],
                sums={k: v[cells] for k, v in self.sums.items()},
                first_seen=[self.first_seen[i] for i in cells.tolist()],
                last_seen=[self.last_seen[i] for i in cells.tolist()],
                h_cell=local[self.h_cell[h]],
                h_metric=self.h_metric[h],
                h_bin=self.h_bin[h],
                h_count=self.h_count[h],
                s_cell=local[self.s_cell[sc]],
                s_name=[self.s_name[i] for i in s_idx],
                s_n=self.s_n[sc],
                s_sum=self.s_sum[sc],
                s_sumsq=self.s_sumsq[sc],
                f_cell=local[self.f_cell[fb]],
                f_kind=[self.f_kind[i] for i in f_idx],
                f_count=self.f_count[fb],
                meta=dict(self.meta),
            )
        return out

    def histogram(self, metric: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cell, bin, count) of one histogram metric, sorted by (cell, bin)."""
        sel = self.h_metric == metric
        c, b, n = self.h_cell[sel], self.h_bin[sel], self.h_count[sel]
        order = np.lexsort((b, c))
        return c[order], b[order], n[order]


def concat(cubes: Sequence[Cube], window: Window) -> Cube:
    """One cube of ``window`` adding up ``cubes`` (same dims; parts over disjoint requests,
    such as the days of a window), cells with equal keys merged."""
    first = cubes[0]
    keys: list[tuple[str | None, ...]] = []
    offsets = []
    for c in cubes:
        if c.dims != first.dims:
            raise ValueError(f"cannot concatenate cubes of dims {first.dims} and {c.dims}")
        offsets.append(len(keys))
        keys.extend(c.keys)

    def cat(get: Any, shift: bool = False) -> np.ndarray:
        arrays = [
            np.asarray(get(c)) + (o if shift else 0) for c, o in zip(cubes, offsets, strict=True)
        ]
        return np.concatenate(arrays) if arrays else np.zeros(0)

    whole = Cube(
        dims=first.dims,
        window=window,
        keys=keys,
        sums={k: cat(lambda c, k=k: c.sums[k]) for k in first.sums},
        first_seen=[v for c in cubes for v in c.first_seen],
        last_seen=[v for c in cubes for v in c.last_seen],
        h_cell=cat(lambda c: c.h_cell, True).astype(np.int64),
        h_metric=cat(lambda c: c.h_metric).astype(np.int64),
        h_bin=cat(lambda c: c.h_bin).astype(np.int64),
        h_count=cat(lambda c: c.h_count).astype(np.int64),
        s_cell=cat(lambda c: c.s_cell, True).astype(np.int64),
        s_name=[v for c in cubes for v in c.s_name],
        s_n=cat(lambda c: c.s_n).astype(np.float64),
        s_sum=cat(lambda c: c.s_sum).astype(np.float64),
        s_sumsq=cat(lambda c: c.s_sumsq).astype(np.float64),
        f_cell=cat(lambda c: c.f_cell, True).astype(np.int64),
        f_kind=[v for c in cubes for v in c.f_kind],
        f_count=cat(lambda c: c.f_count).astype(np.float64),
        meta=dict(first.meta),
    )
    index: dict[tuple[str | None, ...], int] = {}
    mapping = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
    return whole.regroup(first.dims, mapping, list(index))


def build_cube(
    con: duckdb.DuckDBPyConnection | Engine,
    dims: Sequence[str],
    window: Window | None = None,
    *,
    extra_where: str = "TRUE",
    extra_params: Sequence[Any] = (),
    annotations_where: str = "TRUE",
) -> Cube:
    """Scan the requests of ``window`` once per statistic family, grouped by ``dims``.

    ``con`` is a DuckDB connection or any :class:`~.engines.Engine` (DuckDB, Spark): the same
    statements run on each, with the engine's
    :class:`~prefixscope.collector.storage.dialect.Dialect` spellings. ``extra_where`` (over
    alias ``s`` = a request of :data:`~.query.REQUESTS`) must be written for that engine.
    ``annotations_where`` (over alias ``t``, a ``scores`` or ``feedback`` row; no parameters)
    may narrow the annotation rows read: a caller that knows which rows can belong to the
    window's requests (:mod:`.cube_cache`) saves reading every score for the join.
    """
    engine = as_engine(con)
    d = engine.dialect
    window = window or Window()
    dims = tuple(dims)
    exprs = [_RAW.get(dim) or _INTERNAL.get(dim) or group_expr(dim, d) for dim in dims]
    where, params = window.where("s")
    keys_sql = "".join(f"{e} AS k{i}, " for i, e in enumerate(exprs))
    req_sql = (
        f"SELECT {d.hash(exprs)} AS g, {keys_sql}{REQ_COLUMNS} FROM {REQUESTS} s "
        f"WHERE {where} AND ({extra_where})"
    )
    with engine.shared("req", req_sql, [*params, *extra_params]) as req:
        rows = engine.arrow(req.sql(cells_sql(len(dims))), req.params)
        hist = engine.arrow(req.sql(HIST_SQL), req.params)
        scores = score_rows(engine, req, annotations_where)
        fb = engine.arrow(req.sql(feedback_sql(d, annotations_where)), req.params)
    nd = len(dims)
    keys = list(zip(*(strings(rows.column(f"k{i}")) for i in range(nd)))) or [()] * rows.num_rows
    gids = cell_ids(rows.column("g"))
    if len(np.unique(gids)) != len(gids):
        raise RuntimeError("two cube cells have the same hash; please report this")
    order = np.argsort(gids)
    sorted_g = gids[order]

    def cell_of(g: pa.ChunkedArray) -> np.ndarray:
        arr = cell_ids(g)
        return order[np.searchsorted(sorted_g, arr)] if len(arr) else np.zeros(0, np.int64)

    cube = Cube(
        dims=dims,
        window=window,
        keys=keys,
        sums={name: floats(rows.column(name)) for name in _SUMS},
        first_seen=naive_utc_times(rows.column("first_seen")),
        last_seen=naive_utc_times(rows.column("last_seen")),
        h_cell=cell_of(hist.column("g")),
        h_metric=ints(hist.column("m")),
        h_bin=ints(hist.column("b")),
        h_count=ints(hist.column("c")),
        s_cell=cell_of(scores.column("g")),
        s_name=[str(v) for v in scores.column("name").to_pylist()],
        s_n=floats(scores.column("n")),
        s_sum=floats(scores.column("s")),
        s_sumsq=floats(scores.column("ss")),
        f_cell=cell_of(fb.column("g")),
        f_kind=[str(v) for v in fb.column("kind").to_pylist()],
        f_count=floats(fb.column("c")),
        meta={"engine": engine.name},
    )
    return _normalise(cube)


def _normalise(cube: Cube) -> Cube:
    """Map raw prefix ids (NULL, '', 'base') to ``base`` and versions (NULL, base) to ''."""
    if "prefix_id" not in cube.dims and "prefix_version" not in cube.dims:
        return cube
    pi = cube.dims.index("prefix_id") if "prefix_id" in cube.dims else None
    pv = cube.dims.index("prefix_version") if "prefix_version" in cube.dims else None
    new_index: dict[tuple[str | None, ...], int] = {}
    mapping = np.empty(len(cube.keys), dtype=np.int64)
    for i, key in enumerate(cube.keys):
        k = list(key)
        is_base = False
        if pi is not None:
            is_base = k[pi] in (None, "", BASE)
            k[pi] = BASE if is_base else k[pi]
        if pv is not None:
            k[pv] = "" if is_base or k[pv] is None else k[pv]
        mapping[i] = new_index.setdefault(tuple(k), len(new_index))
    if len(new_index) == len(cube.keys):
        cube.keys = list(new_index)
        return cube
    return cube.regroup(cube.dims, mapping, list(new_index))
