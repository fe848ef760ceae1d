"""Array helpers of the cube: integer codes, the distinct rows of packed integer keys (the
roll-ups' and merges' group-by), and numpy views of an engine's Arrow columns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa


def sorted_codes(names: list[str]) -> tuple[np.ndarray, list[str]]:
    uniq = sorted(set(names))
    look = {n: i for i, n in enumerate(uniq)}
    return np.array([look[n] for n in names], dtype=np.int64), uniq


def codes_in_order(values: list[str | None]) -> tuple[np.ndarray, list[str | None]]:
    """Codes of values that may be None, in first-seen order."""
    look: dict[str | None, int] = {}
    codes = np.fromiter((look.setdefault(v, len(look)) for v in values), np.int64, len(values))
    return codes, list(look)


#: below this many possible packed keys, :func:`unique_rows` marks them in a dense array
DENSE_MIN = 1 << 22


def unique_rows(columns: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows of integer ``columns`` (sorted) and each row's index among them.

    The columns are packed into one int64 key (mixed radix over each column's range), so the
    sort is one of plain integers: ``np.unique(axis=0)`` sorts rows as records, about 20x
    slower on the cube's hundreds of thousands of histogram entries."""
    cols = [np.asarray(c, dtype=np.int64) for c in columns]
    lows = [int(c.min()) for c in cols]
    spans = [int(c.max()) - lo + 1 for c, lo in zip(cols, lows, strict=True)]
    if float(np.prod(np.asarray(spans, dtype=np.float64))) >= 2.0**62:  # cannot pack
        uniq2, inv2 = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
        return [uniq2[:, i] for i in range(len(cols))], inv2.ravel()
    key = np.zeros(len(cols[0]), dtype=np.int64)
    for c, lo, span in zip(cols, lows, spans, strict=True):
        key = key * span + (c - lo)
    size = int(np.prod(np.asarray(spans, dtype=np.float64)))
    if size <= max(DENSE_MIN, 4 * len(key)):  # a flag per possible key: no sort at all
        present = np.zeros(size, dtype=bool)
        present[key] = True
        uniq = np.flatnonzero(present)
        rank = np.cumsum(present) - 1
        inv = rank[key]
    else:
        uniq, inv = np.unique(key, return_inverse=True)
    out: list[np.ndarray] = []
    for lo, span in zip(reversed(lows), reversed(spans), strict=True):
        out.append(uniq % span + lo)
        uniq = uniq // span
    return out[::-1], inv.ravel()


def combine_bins(
    cell: np.ndarray, metric: np.ndarray, b: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, ...]:
    if len(cell) == 0:
        return cell, metric, b, count
    (u_cell, u_metric, u_bin), inv = unique_rows([cell, metric, b])
    total = np.bincount(inv, weights=count, minlength=len(u_cell)).astype(np.int64)
    return u_cell, u_metric, u_bin, total


def combine_sums(
    cell: np.ndarray, code: np.ndarray, values: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    if len(cell) == 0:
        return cell, code, list(values)
    (u_cell, u_code), inv = unique_rows([cell, code])
    return u_cell, u_code, [np.bincount(inv, weights=v, minlength=len(u_cell)) for v in values]


def cell_ids(col: pa.ChunkedArray) -> np.ndarray:
    """Cell hashes as uint64 (DuckDB's ``hash`` is UBIGINT, Spark's ``xxhash64`` BIGINT)."""
    arr = np.asarray(col.to_numpy())
    if arr.dtype == np.int64:
        return arr.view(np.uint64)
    return arr.astype(np.uint64)


def floats(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(col.cast(pa.float64()).to_numpy(), dtype=np.float64)


def ints(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(col.cast(pa.int64()).to_numpy(), dtype=np.int64)


def strings(col: pa.ChunkedArray) -> list[str | None]:
    return [None if v is None else str(v) for v in col.to_pylist()]


def naive_utc_times(col: pa.ChunkedArray) -> list[datetime | None]:
    """Naive UTC datetimes (an engine may return time-zone-aware UTC values)."""
    out: list[datetime | None] = []
    for v in col.to_pylist():
        if v is not None and v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        out.append(v)
    return out
