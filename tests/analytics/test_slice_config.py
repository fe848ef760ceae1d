"""Which slices detection tests (analytics/slices.py ``slice_cube``): the cap on slices of two
keys or more (``max_slices``), full combinations on request (``full``), and a slice dropped
when it repeats one of its sub-slices on every side. Each world states its cohorts and their
sizes; the expected slices are derived from them, not from the code under test."""

from __future__ import annotations

import itertools

from prefixscope.analytics.cube import Cube
from prefixscope.analytics.detection import detection_cube
from prefixscope.analytics.query import BASE, Window
from prefixscope.analytics.slices import SliceConfig, parse, slice_cube
from prefixscope.analytics.synthetic import Arm, generate, scratch_store
from tests.support.slices import LANGUAGES, PLANS, SPECIALTIES

Slice = frozenset[tuple[str, object]]


def _cube(cohorts: dict[tuple[str | None, tuple[tuple[str, str], ...]], int]) -> Cube:
    """The detection cube of a world: ``{(prefix or None for base, cohort items): n}``."""
    arms = [Arm(p, "1" if p else None, "r", dict(items), n=n) for (p, items), n in cohorts.items()]
    con = scratch_store()
    try:
        generate(con, arms, seed=1)
        return detection_cube(con, Window())
    finally:
        con.close()


def _slices(cube: Cube, prefix: str | None = "p") -> dict[Slice, int]:
    """The slices of one side (``None``: the base model) of the sliced cube, with their
    request counts."""
    side = BASE if prefix is None else prefix
    ci = cube.dims.index("cohort")
    n = cube.sums["n"]
    return {
        frozenset(parse(k[ci]).items()): int(n[i]) for i, k in enumerate(cube.keys) if k[0] == side
    }


def _s(**kv: str) -> Slice:
    return frozenset(kv.items())


def test_max_slices_keeps_the_largest_pairs_and_every_key() -> None:
    """Two keys, 3 x 2 = 6 pairs whose sizes differ (the base model and ``p`` alike); a cap
    of 2 keeps the two largest pairs per side, and the route and all 5 single keys stay."""
    sizes = {("a", "de"): 90, ("a", "en"): 20, ("b", "de"): 30, ("b", "en"): 70, ("c", "de"): 40}
    sizes[("c", "en")] = 50
    world = {
        (p, (("specialty", sp), ("language", lang))): n
        for p in (None, "p")
        for (sp, lang), n in sizes.items()
    }
    cube = _cube(world)
    largest = sorted(sizes, key=sizes.__getitem__, reverse=True)[:2]  # (a, de), (b, en)
    for side in (None, "p"):
        capped = _slices(slice_cube(cube, SliceConfig(depth=2, max_slices=2)), side)
        pairs = {s for s in capped if len(s) == 2}
        assert pairs == {_s(specialty=sp, language=lang) for sp, lang in largest}
        singles = {s for s in capped if len(s) == 1}
        assert singles == {_s(specialty=sp) for sp in "abc"} | {
            _s(language=x) for x in LANGUAGES[:2]
        }
        assert capped[frozenset()] == sum(sizes.values())
        # uncapped: every pair, with its generated size
        whole = _slices(slice_cube(cube, SliceConfig(depth=2)), side)
        assert {s: n for s, n in whole.items() if len(s) == 2} == {
            _s(specialty=sp, language=lang): n for (sp, lang), n in sizes.items()
        }


def test_full_combinations_only_on_request() -> None:
    """Three keys (36 full combinations): depth 2 tests no triple unless ``full`` is set; with
    ``full`` every generated combination is tested, also beside depth 1 (no pairs then)."""
    combos = list(itertools.product(SPECIALTIES, LANGUAGES, PLANS))
    world = {
        (p, (("specialty", sp), ("language", lang), ("plan", plan))): 10
        for p in (None, "p")
        for sp, lang, plan in combos
    }
    cube = _cube(world)
    triples = {_s(specialty=sp, language=lang, plan=plan) for sp, lang, plan in combos}

    def by_size(config: SliceConfig) -> dict[int, set[Slice]]:
        out: dict[int, set[Slice]] = {}
        for s in _slices(slice_cube(cube, config)):
            out.setdefault(len(s), set()).add(s)
        return out

    plain = by_size(SliceConfig(depth=2))
    assert 3 not in plain and len(plain[2]) == 3 * 4 + 3 * 3 + 4 * 3
    full = by_size(SliceConfig(depth=2, full=True))
    assert full[3] == triples and full[2] == plain[2]
    shallow = by_size(SliceConfig(depth=1, full=True))
    assert shallow[3] == triples and 2 not in shallow
    assert len(shallow[1]) == 3 + 4 + 3 and shallow[0] == {frozenset()}


def test_a_slice_that_repeats_its_sub_slice_is_dropped() -> None:
    """Every request of the route (base and ``p``) has ``specialty=a``: the route repeats
    ``specialty=a`` and ``language=de`` repeats ``specialty=a, language=de``, so only the
    more specific slices stay. When the base model also serves German notes of
    ``specialty=b``, the route and ``language=de`` differ from their sub-slices on the base
    side and stay; ``language=en`` still repeats ``specialty=a, language=en``."""
    same = {
        (p, (("specialty", "a"), ("language", lang))): 50
        for p in (None, "p")
        for lang in ("de", "en")
    }
    kept = set(_slices(slice_cube(_cube(same), SliceConfig(depth=2))))
    assert kept == {
        _s(specialty="a"),
        _s(specialty="a", language="de"),
        _s(specialty="a", language="en"),
    }
    wider = {**same, (None, (("specialty", "b"), ("language", "de"))): 50}
    sliced = slice_cube(_cube(wider), SliceConfig(depth=2))
    assert set(_slices(sliced)) == kept | {frozenset(), _s(language="de")}
    assert _slices(sliced, None)[frozenset()] == 150
