"""Cohort slices: where a variant got worse, on any cohort key or pair of keys.

Requests carry several cohort keys (``cohort.specialty``, ``cohort.language``,
``cohort.plan``...). A regression that lives on one key (a prefix that breaks German notes in
every specialty and plan) is spread thin over the full combinations of keys, so detection
tests **slices**: for every (prefix, version, base model, route), the whole route (cohort
``{}``), every single-key slice (``{"language": "de"}``) and every two-key slice
(``{"language": "de", "plan": "free"}``), up to :attr:`SliceConfig.depth` keys, each against
the same slice of its baseline. Slices are roll-ups of the detection cube's full combinations
(:meth:`~.cube.Cube.expand`: a request counts in every slice it belongs to), so they cost no
extra pass over the data.

**Error control across the hierarchy** (:func:`decide`). Slices overlap and nest: plain BH over
all of them is not the family. Each (cell, metric, baseline) is a *family* whose members are
its slices. Following Benjamini & Bogomolov (2014, "Selective inference on multiple families of
hypotheses"), stage 1 tests each family with the Simes combination of its members' p-values
and selects families by BH at level alpha over all M families (R selected); stage 2 runs BH
inside each selected family at level alpha * R / M. This controls, at alpha, the FDR over
families (which (cell, metric, baseline) regressed somewhere) and the expected *average* FDR
over the selected families (within them, which slices). Simes is valid for the positively
dependent statistics of nested slices (a slice and the slices inside it share requests).
The guarantee across families assumes their p-values independent or positively dependent;
the metrics of the same requests are dependent without a proof of positivity, so there the
level is what the A/A simulations measure (docs/guides/detection.md).

**One alert per cause** (:func:`causes`). Slice X *explains* slice S when the requests of S
outside X (variant and baseline alike) show no worsening of the metric's minimum effect, on at
least the minimum n (S wholly inside X: explained). Taking a family's rejected slices
strongest first, one explained by a cause already found is that cause's evidence; else its
cause is found by descending while one sub-slice of one more key explains it. A key-level
effect is therefore named by the key, not by its pairs (each pair leaves the rest of the key
worse), a pair is named only when the effect is confined to it, and a slice that overlaps the
cause (``plan=free`` when German notes regressed on every plan) is evidence, not an alert.
The evidence is in the alert's ``details.slices``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from . import stats
from .cube import Cube


@dataclass(frozen=True, slots=True)
class SliceConfig:
    #: most cohort keys in a slice (0: only the whole route; 2: keys and pairs)
    depth: int = 2
    #: most two-key (and deeper) slices per (prefix, version, base model, route): the
    #: largest by requests are kept
    max_slices: int = 200
    #: also test every full combination of keys (deeper than ``depth``)
    full: bool = False


def canonical(items: Iterable[tuple[str, object]]) -> str | None:
    """A slice's key: its (key, value) pairs as sorted JSON (None: the whole route)."""
    pairs = sorted((str(k), v) for k, v in items)
    return orjson.dumps(dict(pairs), option=orjson.OPT_SORT_KEYS).decode() if pairs else None


def parse(slice_key: str | None) -> dict[str, object]:
    return orjson.loads(slice_key) if slice_key else {}


def slices_of(cohort: dict[str, object], config: SliceConfig) -> list[str | None]:
    """Every slice a request of this cohort belongs to."""
    items = sorted(cohort.items())
    out: list[str | None] = []
    for size in range(min(config.depth, len(items)) + 1):
        out += [canonical(c) for c in itertools.combinations(items, size)]
    if config.full and len(items) > config.depth:
        out.append(canonical(items))
    return out


def slice_cube(cube: Cube, config: SliceConfig) -> Cube:
    """The detection cube (cells with full cohort combinations) rolled up into slices: the
    same dims, the cohort position holding the slice."""
    ci = cube.dims.index("cohort")
    parsed: dict[str | None, list[str | None]] = {}
    index: dict[tuple[str | None, ...], int] = {}
    old: list[int] = []
    new: list[int] = []
    for i, key in enumerate(cube.keys):
        raw = key[ci]
        if raw not in parsed:
            parsed[raw] = slices_of(parse(raw), config)
        for sk in parsed[raw]:
            nk = (*key[:ci], sk, *key[ci + 1 :])
            j = index.setdefault(nk, len(index))
            old.append(i)
            new.append(j)
    keys = list(index)
    out = cube.expand(cube.dims, np.asarray(old, np.int64), np.asarray(new, np.int64), keys)
    return _cap(_drop_repeated(out, ci), ci, config.max_slices)


def _drop_repeated(cube: Cube, ci: int) -> Cube:
    """Drop a slice that holds the same requests as one of its sub-slices, on every side
    (every request of the route has ``specialty=cardiology``, base and variants alike): it
    would repeat their comparisons. The more specific slice stays, so an alert names the key
    that holds the traffic. Rows are grouped by everything but the variant and the slice
    (base model, route); a slice equals a sub-slice when each variant's n does."""
    n = cube.sums["n"]
    variant = {i for i, d in enumerate(cube.dims) if d in ("prefix_id", "prefix_version")}
    rest = [d for d in range(len(cube.dims)) if d != ci and d not in variant]
    Group = tuple[tuple[object, ...], str | None]
    counts: dict[Group, dict[tuple[object, ...], int]] = {}
    rows: dict[Group, list[int]] = {}
    for i, key in enumerate(cube.keys):
        group: Group = (tuple(key[d] for d in rest), key[ci])
        counts.setdefault(group, {})[tuple(key[d] for d in sorted(variant))] = int(n[i])
        rows.setdefault(group, []).append(i)
    drop: set[Group] = set()
    for (where, sk), seen in counts.items():
        items = parse(sk)
        for k in items:
            parent = (where, canonical((a, b) for a, b in items.items() if a != k))
            if counts.get(parent) == seen:
                drop.add(parent)
    if not drop:
        return cube
    gone = sorted(i for g in drop for i in rows[g])
    keep = np.setdiff1d(np.arange(len(cube.keys)), np.asarray(gone, np.int64))
    keys = [cube.keys[i] for i in keep]
    return cube.expand(cube.dims, keep, np.arange(len(keep)), keys)


def _cap(cube: Cube, ci: int, max_slices: int) -> Cube:
    """Keep at most ``max_slices`` slices of two keys or more per (prefix, version, base
    model, route), the largest first; the route and single keys always stay."""
    n = cube.sums["n"]
    groups: dict[tuple[str | None, ...], list[int]] = {}
    for i, key in enumerate(cube.keys):
        if len(parse(key[ci])) >= 2:
            groups.setdefault(key[:ci], []).append(i)
    drop = [
        i
        for members in groups.values()
        if len(members) > max_slices
        for i in sorted(members, key=lambda i: (-n[i], str(cube.keys[i])))[max_slices:]
    ]
    if not drop:
        return cube
    keep = np.setdiff1d(np.arange(len(cube.keys)), np.asarray(drop, np.int64))
    keys = [cube.keys[i] for i in keep]
    return cube.expand(cube.dims, keep, np.arange(len(keep)), keys)


def simes(p: np.ndarray) -> float:
    """The Simes combination of a family's p-values."""
    if len(p) == 0:
        return 1.0
    s = np.sort(p)
    return float(min(1.0, np.min(len(s) * s / np.arange(1, len(s) + 1))))


def decide(families: Sequence[int], p: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-stage procedure (module doc) over comparisons labelled by family: per
    comparison, a q-value (rejected at level alpha exactly when q <= alpha) and the family's
    own Simes-BH q-value."""
    fam = np.asarray(families, np.int64)
    if len(fam) == 0:
        return np.zeros(0), np.zeros(0)
    m = int(fam.max()) + 1
    fam_p = np.ones(m)
    members = [np.nonzero(fam == f)[0] for f in range(m)]
    for f, idx in enumerate(members):
        fam_p[f] = simes(p[idx])
    fam_q = stats.bh_q_values(fam_p)
    selected = int(np.sum(fam_q <= alpha))
    q = np.ones(len(p))
    for f, idx in enumerate(members):
        within = stats.bh_q_values(p[idx])
        # stage 2 at alpha * R / M: rejected when within * M / R <= alpha
        scale = m / selected if selected else np.inf
        q[idx] = np.maximum(fam_q[f], np.minimum(1.0, within * scale))
    return q, fam_q[fam]


@dataclass(slots=True)
class Node:
    """One tested slice of a family, for causes and the slice tree."""

    index: int  # the comparison's position in the run
    slice: dict[str, object]
    rejected: bool
    q_value: float = 1.0


class Explains:
    """``explains(x, s)``: whether the worsening of slice ``s`` is explained by slice ``x``
    (the requests of ``s`` outside ``x`` show no worsening). Implemented by detection, which
    holds the statistics."""

    def __call__(self, x: int, s: int) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


def _items(sl: dict[str, object]) -> frozenset[tuple[str, str]]:
    return frozenset((k, str(v)) for k, v in sl.items())


def causes(nodes: Sequence[Node], explains: Explains) -> dict[int, list[int]]:
    """The causes among a family's rejected slices, each with its evidence:
    ``{cause index: [evidence indexes]}``.

    Rejected slices are taken strongest first (q, then fewer keys). One already explained by
    a cause found before (its requests outside the cause do not worsen: a slice containing
    the cause, inside it, or overlapping it) is that cause's evidence. Else the cause is found
    by descending from it while the worsening is confined to one sub-slice of one more key
    (the rest of the slice does not worsen): a key-level effect stops at the key (its pairs
    share it), a pair-level one goes on to the pair."""
    by_items = {_items(n.slice): n for n in nodes}
    rejected = sorted(
        (n for n in nodes if n.rejected),
        key=lambda n: (n.q_value, len(n.slice), str(sorted(n.slice.items()))),
    )
    found: dict[int, list[int]] = {}
    for node in rejected:
        owner = next((c for c in found if c != node.index and explains(c, node.index)), None)
        if owner is not None:
            found[owner].append(node.index)
            continue
        cause = node
        while True:
            child = _confined_child(cause, by_items, explains)
            if child is None:
                break
            cause = child
        if cause.index in found:
            if cause.index != node.index:
                found[cause.index].append(node.index)
            continue
        found[cause.index] = [] if cause.index == node.index else [node.index]
    return {
        c: [i for i in dict.fromkeys(evidence) if i != c and i not in found]
        for c, evidence in found.items()
    }


def _confined_child(
    node: Node, by_items: dict[frozenset[tuple[str, str]], Node], explains: Explains
) -> Node | None:
    mine = _items(node.slice)
    children = [
        n
        for items, n in by_items.items()
        if n.rejected and mine < items and len(items) == len(mine) + 1
    ]
    for child in sorted(children, key=lambda n: (n.q_value, str(sorted(n.slice.items())))):
        if explains(child.index, node.index):
            return child
    return None


__all__ = [
    "Explains",
    "Node",
    "SliceConfig",
    "canonical",
    "causes",
    "decide",
    "parse",
    "simes",
    "slice_cube",
    "slices_of",
]
