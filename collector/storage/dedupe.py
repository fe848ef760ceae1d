"""Idempotent retries within a window, without an index that grows with the store.

A retried export carries spans the store already has. Instead of a primary key over every
stored ``(trace_id, span_id)`` (76 B/span on disk, a third of the insert cost, growing
forever), the writer keeps a 64-bit hash of each key it committed within ``--dedupe-window``,
in memory, in time buckets (sorted ``uint64`` pieces, merged as they grow, behind a bitmap of
their hashes' top bits, 16 bits per key; the open bucket's bitmap doubles as it fills), with
one more such filter over the whole window in front of them. A new group is checked with one
read of the window's filter per key, the buckets' bitmaps only where its bit is set (~10 %),
and ``searchsorted`` only where a bucket's bit is set too. 1,024 keys against 8M keys in 5
buckets: 0.13 ms, hashing them 0.15 ms (was 0.18 and 0.39 ms when the open bucket had no
bitmap and hex was parsed a digit at a time; one process, random keys, 2026-12-05, before the
window's filter). Per million spans of the soak's groups (``bench/store_growth.py``): 0.12 s
with one bucket, 0.25 s with nine (0.69 s with eight before the window's filter):

* no hash seen: the spans are new (no false negatives: every committed key of the window is
  in the buckets);
* a hash seen: a *candidate* duplicate, confirmed exactly against ``span_rows`` (a real
  retry, or a 64-bit collision, about 1 in 10^12 per span at 10M keys in the window), and
  dropped only if the store really has that key.

Duplicates inside one group are dropped the same way (first copy kept). Memory is 12-14
bytes per span committed in the window (the hash, 2 bytes of its bucket's bitmap, up to 4 in
the open bucket, and 2-4 of the window's filter; 15 minutes at 10k spans/s: ~120 MB),
independent of the store's size, and bounded: with ``max_keys`` (the server passes a quarter
of ``--store-memory-mb`` at 14 bytes a key) the oldest buckets go early when the window's
keys outgrow it, so the window covers less time at a rate above ``max_keys / window_s``. At
start-up the buckets are rebuilt from the rows ingested within the window (the newest
``max_keys`` of them).

Ids are hashed from their hex text without a Python object per span: fixed-width lowercase hex
(what the decoders produce) is parsed in numpy; anything else falls back to blake2b per id.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

_LUT = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _LUT[_c] = _i
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)


def _hex_words(arr: pa.Array, width: int) -> np.ndarray | None:
    """``(n, width // 16)`` uint64 words of fixed-width lowercase hex strings, or None when
    any value is null, of another width or not hex."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if arr.null_count or not pa.types.is_string(arr.type):
        return None
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    if n and (offsets[-1] - offsets[0] != n * width or np.any(np.diff(offsets) != width)):
        return None
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8, count=n * width, offset=int(offsets[0]))
    nib = _LUT[data]
    if n and nib.max() > 15:
        return None
    # two nibbles a byte, eight bytes a big-endian word: a few array passes, not one per digit
    packed = (nib[0::2] << np.uint8(4)) | nib[1::2]
    return packed.view(">u8").astype(np.uint64).reshape(n, width // 16)


def _blake(values: list[str | None]) -> np.ndarray:
    return np.array(
        [
            int.from_bytes(hashlib.blake2b((v or "").encode(), digest_size=8).digest(), "big")
            for v in values
        ],
        dtype=np.uint64,
    )


def key_hashes(trace_ids: pa.Array, span_ids: pa.Array) -> np.ndarray:
    """One 64-bit hash per ``(trace_id, span_id)``."""
    t = _hex_words(trace_ids, 32)
    s = _hex_words(span_ids, 16)
    if t is None:
        t = _blake(pa.array(trace_ids).to_pylist()).reshape(-1, 1)
    if s is None:
        s = _blake(pa.array(span_ids).to_pylist()).reshape(-1, 1)
    with np.errstate(over="ignore"):
        h = s[:, 0] * _M1
        for w in range(t.shape[1]):
            h = (h ^ (t[:, w] + np.uint64(w + 1))) * _M2
            h ^= h >> np.uint64(31)
    return h


def _member(sorted_arr: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if not len(sorted_arr):
        return np.zeros(len(keys), dtype=bool)
    idx = np.searchsorted(sorted_arr, keys)
    idx[idx == len(sorted_arr)] = len(sorted_arr) - 1
    return sorted_arr[idx] == keys


#: bits of a bucket's filter per key (a false positive, ~6 %, costs a binary search)
_FILTER_BITS_PER_KEY = 16


def _filter(pieces: list[np.ndarray], bits: int) -> np.ndarray:
    """A bitmap of 2**bits bits with the bit of each key's top ``bits`` bits set (``pieces``:
    sorted arrays)."""
    bitmap = np.zeros(1 << (bits - 3), dtype=np.uint8)
    for piece in pieces:
        _set_bits(bitmap, bits, piece)
    return bitmap


def _set_bits(bitmap: np.ndarray, bits: int, keys: np.ndarray) -> None:
    """Set the bits of ``keys`` (ascending). Ascending keys give ascending bytes, so the bits
    that land in one byte are OR-ed together by one ``reduceat`` and each byte is written
    once: 10x quicker than ``np.bitwise_or.at`` (~100 ns per key; sealing a bucket of 4.6M
    keys stalled the writer for 0.46 s)."""
    if not len(keys):
        return
    pos = keys >> np.uint64(64 - bits)
    byte = pos >> np.uint64(3)
    bit = np.left_shift(np.uint8(1), (pos & np.uint64(7)).astype(np.uint8))
    first = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
    bitmap[byte[first]] |= np.bitwise_or.reduceat(bit, first)


def _filter_bits(n: int, per_key: int = _FILTER_BITS_PER_KEY) -> int:
    """The bitmap size (log2 of its bits) that gives ``n`` keys ``per_key`` bits or more."""
    return max(int(n * per_key - 1).bit_length(), 3)


def _probe(bitmap: np.ndarray, bits: int, keys: np.ndarray) -> np.ndarray:
    """A mask: True where the bit of the key's top ``bits`` bits is set (maybe present)."""
    pos = keys >> np.uint64(64 - bits)
    return ((bitmap[pos >> np.uint64(3)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1).astype(bool)


@dataclass(slots=True)
class _Bucket:
    """Keys committed before ``end``: sorted pieces behind a bitmap of their hashes' top bits,
    so that a lookup costs one memory read per key unless the bit is set. The open bucket's
    bitmap is sized for twice its keys and rebuilt twice as large when they outgrow it (its
    pieces were searched whole before: 0.9 s per million spans once it held 4M keys); sealing
    merges the pieces into one array and fits the bitmap to it."""

    end: float  # keys committed before this time (monotonic clock) are in this bucket
    pieces: list[np.ndarray] = field(default_factory=list)  # sorted, sizes decreasing
    bitmap: np.ndarray | None = None
    bits: int = 3
    sealed: bool = False

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Add ``keys``; return them sorted."""
        keys = np.sort(keys)
        self.pieces.append(keys)
        # merge while the newest piece is at least half the one before: O(log n) pieces
        while len(self.pieces) > 1 and len(self.pieces[-1]) * 2 >= len(self.pieces[-2]):
            b = self.pieces.pop()
            a = self.pieces.pop()
            merged = np.concatenate([a, b])
            del a, b  # sorted in place: the merge holds two copies at most, not three
            merged.sort(kind="stable")
            self.pieces.append(merged)
        n = self.size
        if self.bitmap is None or _filter_bits(n) > self.bits:
            self.bits = _filter_bits(2 * n)
            self.bitmap = _filter(self.pieces, self.bits)
        else:
            _set_bits(self.bitmap, self.bits, keys)
        return keys

    def seal(self) -> None:
        """No more keys come: merge the pieces and fit the filter to them."""
        if len(self.pieces) > 1:
            merged = np.concatenate(self.pieces)
            self.pieces = []
            merged.sort(kind="stable")
            self.pieces = [merged]
        self.sealed = True
        if self.size:
            self.bits = _filter_bits(self.size)
            self.bitmap = _filter(self.pieces, self.bits)

    def member(self, keys: np.ndarray) -> np.ndarray:
        """``keys`` ascending."""
        if self.bitmap is None:
            return np.zeros(len(keys), dtype=bool)
        out = _probe(self.bitmap, self.bits, keys)
        if out.any():
            cand = keys[out]
            found = np.zeros(len(cand), dtype=bool)
            for piece in self.pieces:
                found |= _member(piece, cand)
            out[out] = found
        return out

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.pieces)


#: bits per key of the window's filter, at the size it is built for (twice the keys held)
_WINDOW_BITS_PER_KEY = 8


class RecentKeys:
    """Hashes of the keys committed within the last ``window_s`` seconds (at least).

    In front of the buckets, one filter over the whole window (the bit of each key's top bits,
    like a bucket's, at 4-8 bits per key held): a new key costs one read there, and only the
    ~10 % that hit a set bit go on to the buckets' filters. Without it a lookup read one bitmap
    per bucket, and the cost grew with the window: 0.12 s per million spans with one bucket,
    0.69 s with eight (``bench/store_growth.py``). Expired buckets' bits stay in it until it is
    rebuilt from the buckets, once it holds twice the keys it was built for (about once per
    window at a steady rate).

    ``max_keys`` (0: none) bounds the memory: when the buckets hold more keys, the oldest
    buckets go before their time (never the open one). The window then covers less than
    ``window_s``; :meth:`covered_s` says how much, :attr:`evicted` counts the keys that went
    early."""

    def __init__(self, window_s: float, buckets: int = 16, max_keys: int = 0) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        #: keys dropped before their time to stay within ``max_keys``
        self.evicted = 0
        #: the end of the newest bucket dropped early: every key committed since is held
        self._evicted_end: float | None = None
        self._span = max(window_s / buckets, 1.0)
        self._buckets: list[_Bucket] = []
        self._filter: np.ndarray | None = None
        self._filter_bits = 3
        #: keys whose bits were set in the filter since it was built (expired ones included)
        self._filter_keys = 0

    def __len__(self) -> int:
        return sum(b.size for b in self._buckets)

    @property
    def buckets(self) -> int:
        """Time buckets held."""
        return len(self._buckets)

    def covered_s(self, now: float | None = None) -> float:
        """How far back the window reaches now: ``window_s``, or less while the keys of the
        last ``window_s`` outgrow ``max_keys`` (a key committed within it is always held)."""
        if self._evicted_end is None:
            return self.window_s
        now = time.monotonic() if now is None else now
        return max(0.0, min(self.window_s, now - self._evicted_end))

    def seen(self, keys: np.ndarray) -> np.ndarray:
        """A mask: True where the hash was committed within the window (maybe a duplicate)."""
        # Binary searches with ascending keys stay in cache (numpy starts each search at the
        # previous result): 2.5x quicker than in arrival order with 20M keys in the window.
        found = np.zeros(len(keys), dtype=bool)
        if self._filter is None or not len(keys):
            return found
        order = np.argsort(keys)
        ks = keys[order]
        hit = _probe(self._filter, self._filter_bits, ks)
        if hit.any():
            cand = ks[hit]
            in_bucket = np.zeros(len(cand), dtype=bool)
            for b in self._buckets:
                in_bucket |= b.member(cand)
            found[order[hit]] = in_bucket
        return found

    def add(self, keys: np.ndarray, now: float | None = None) -> None:
        if not len(keys) or self.window_s <= 0:
            return
        now = time.monotonic() if now is None else now
        # a bucket is kept until its newest key is older than the window
        self._buckets = [b for b in self._buckets if b.end > now - self.window_s]
        if not self._buckets or now >= self._buckets[-1].end:
            if self._buckets:
                self._buckets[-1].seal()
            self._buckets.append(_Bucket(now + self._span))
        ascending = self._buckets[-1].add(keys)
        if self.max_keys > 0:
            self._evict(self.max_keys)
        self._filter_keys += len(keys)
        capacity = (1 << self._filter_bits) // _WINDOW_BITS_PER_KEY
        if self._filter is None or self._filter_keys > capacity:
            held = len(self)
            self._filter_bits = _filter_bits(2 * held, _WINDOW_BITS_PER_KEY)
            self._filter = _filter([p for b in self._buckets for p in b.pieces], self._filter_bits)
            self._filter_keys = held
        else:
            _set_bits(self._filter, self._filter_bits, ascending)

    def _evict(self, max_keys: int) -> None:
        """Drop the oldest buckets until at most ``max_keys`` keys are held (the open bucket
        stays, whatever its size). Their bits stay in the window's filter until it is rebuilt:
        a lookup that hits one is confirmed against the store, as any candidate is."""
        held = len(self)
        while held > max_keys and len(self._buckets) > 1:
            old = self._buckets.pop(0)
            held -= old.size
            self.evicted += old.size
            self._evicted_end = old.end


def repeated_rows(keys: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the rows whose hash occurs more than once in ``keys``."""
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    same = ks[1:] == ks[:-1]
    if not same.any():
        return np.empty(0, dtype=np.int64)
    mark = np.zeros(len(keys), dtype=bool)
    mark[1:] |= same
    mark[:-1] |= same
    return np.sort(order[mark])
