"""Array helpers of the request resolver: numpy views of Arrow columns, dense codes, and
pointer jumping over the span forest (a parent pointer per span) in O(log depth) passes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: bound on pointer jumps (2**64 levels): beyond it only a parent cycle is left
MAX_JUMPS = 64


def np_of(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return np.asarray(arr.to_numpy(zero_copy_only=False))


def valid_of(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np_of(pc.is_valid(arr))


def codes_of(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dense integer codes of a string column (-1 for NULL)."""
    enc = pc.dictionary_encode(arr)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    return np.asarray(enc.indices.fill_null(-1).to_numpy(), dtype=np.int64)


def lexical_rank(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The rank of each value in sorted order (ties share a rank): a tie-break every engine
    reproduces from the value itself."""
    enc = pc.dictionary_encode(arr)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    order = np.asarray(pc.sort_indices(enc.dictionary).to_numpy(), dtype=np.int64)
    rank_of_code = np.empty(len(order), dtype=np.int64)
    rank_of_code[order] = np.arange(len(order))
    idx = np.asarray(enc.indices.fill_null(0).to_numpy(), dtype=np.int64)
    return rank_of_code[idx] if len(order) else np.zeros(len(idx), dtype=np.int64)


def pointer_jump(pointer: np.ndarray, done: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Pointer jumping: follow ``pointer`` until it reaches -1 or a node where ``done`` holds
    (O(log depth) rounds); pointers still moving after the bound are in a cycle: -1."""
    g = pointer.copy()
    for _ in range(MAX_JUMPS):
        act = np.nonzero(g >= 0)[0]
        if len(act):
            act = act[~done(g[act])]
        if not len(act):
            return g
        g[act] = g[g[act]]
    act = np.nonzero(g >= 0)[0]
    g[act[~done(g[act])]] = -1
    return g


def nearest_marked(parent: np.ndarray, marked: np.ndarray, *, inclusive: bool) -> np.ndarray:
    """Each node's nearest marked ancestor (or itself, when ``inclusive``), else -1."""
    start = parent.copy()
    if inclusive:
        idx = np.arange(len(parent))
        start[marked] = idx[marked]
    return pointer_jump(start, lambda g: marked[g])


def last_per_group(group: np.ndarray, end_us: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For members ``i`` (``group[i] >= 0``), the member of each group with the largest
    ``(end_us, rank)``: returns ``best[g]`` indexed by group (-1 where empty)."""
    size = int(group.max()) + 1 if len(group) and group.max() >= 0 else 0
    best = np.full(size, -1, dtype=np.int64)
    mem = np.nonzero(group >= 0)[0]
    if not len(mem):
        return best
    order = np.lexsort((rank[mem], end_us[mem], group[mem]))
    mem = mem[order]
    g = group[mem]
    last = np.r_[g[1:] != g[:-1], True]
    best[g[last]] = mem[last]
    return best
