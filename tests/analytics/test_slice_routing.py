"""Routing advice uses detection's slices (analytics/gate.py ``routing_advice``): a slice where
a prefix's regression against base is flagged goes to base (or the best other variant), while
the prefix keeps the slices its regression does not reach.

The worlds are the slice worlds of ``tests/support/slices.py`` (specialty a/b/c, language
de/en/fr/es, plan free/pro/team; the base model and prefix ``p`` in every combination). In
each, ``p`` is *better* than base on TaskCompletion, the metric routing ranks by, wherever its
regression is not injected, so a ranking by means alone would keep ``p`` where it regressed:
only detection's slices can route the regressed slice apart. Expected values are the
generator's: which slices the rule injects.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from prefixscope.analytics.gate import gate, routing_advice
from prefixscope.analytics.synthetic import generate, scratch_store
from prefixscope.collector.storage.store import Store
from tests.support.serverproc import ServerProcess
from tests.support.slices import LANGUAGES, slice_arms, tc_drop

SINCE = "2024-12-31T00:00:00"  # the generator's traffic starts on 2025-01-01


def _german_errors(sp: str, lang: str, plan: str) -> dict[str, Any]:
    """``p`` scores 0.9 against base's 0.8 everywhere; on German notes, in every specialty
    and plan, one request in ten fails (base: one in a hundred)."""
    return {**tc_drop(-0.1), **({"error_rate": 0.10} if lang == "de" else {})}


def test_routing_sends_a_regressed_key_to_base_and_keeps_the_prefix_elsewhere(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """Through the API (a real server): ``language=de`` goes to base, with ``p`` excluded by
    its flagged error-rate regression; every other language keeps ``p`` (its TaskCompletion
    beats base there and nothing regressed)."""
    data = tmp_path / "data"
    with Store(data) as store:
        con = store.cursor()
        generate(con, slice_arms(_german_errors, 60), seed=1)
        con.close()
    srv = start_server(data_dir=data)
    resp = httpx.get(
        f"{srv.base_url}/api/v1/routing",
        params={"metric": "TaskCompletion", "since": SINCE},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    by_language = {
        a["cohort"]["language"]: a for a in resp.json()["advice"] if "language" in a["cohort"]
    }
    assert set(by_language) == set(LANGUAGES)
    german = by_language["de"]
    assert german["variant"] == "base"
    assert set(german["excluded"]) == {"p"} and "error_rate" in german["excluded"]["p"]
    assert "p excluded" in german["reason"]
    # p's TaskCompletion on German notes still beats base's: only the regression moved it
    cand = german["candidates"]
    assert cand["p"]["ci_low"] > cand["base"]["mean"]
    for lang in set(LANGUAGES) - {"de"}:
        assert by_language[lang]["variant"] == "p", by_language[lang]
        assert by_language[lang]["excluded"] == {}
    # the route as a whole and the slices that only overlap German notes keep p: the
    # language=de entry routes German notes
    others = [a for a in resp.json()["advice"] if "language" not in a["cohort"]]
    assert others and {a["variant"] for a in others} == {"p"}
    # the German pairs lie inside the cause: the language=de entry routes them, they get no
    # entry of their own
    assert all(len(a["cohort"]) <= 1 for a in resp.json()["advice"])


def test_routing_gives_a_regressed_pair_its_own_entry() -> None:
    """German notes on the free plan regress on TaskCompletion itself (0.95 -> 0.6); German
    notes as a whole still score above base, so ``language=de`` keeps ``p``, and the pair
    gets an entry of its own that sends it to base."""

    def rule(sp: str, lang: str, plan: str) -> dict[str, Any]:
        return tc_drop(0.2) if (lang, plan) == ("de", "free") else tc_drop(-0.15)

    con = scratch_store()
    try:
        generate(con, slice_arms(rule, 100), seed=1)
        advice = routing_advice(con, "TaskCompletion")
    finally:
        con.close()
    by_cohort = {str(sorted(a.cohort.items())): a for a in advice}
    pair = by_cohort[str(sorted({"language": "de", "plan": "free"}.items()))]
    assert pair.variant == "base" and set(pair.excluded) == {"p"}
    assert "TaskCompletion" in pair.excluded["p"]
    assert by_cohort[str([("language", "de")])].variant == "p"
    assert by_cohort[str([("plan", "free")])].variant == "p"
    # no other pair is regressed, so no other pair has an entry
    assert [a.cohort for a in advice if len(a.cohort) > 1] == [{"language": "de", "plan": "free"}]


def test_a_regression_of_the_whole_route_moves_no_slice() -> None:
    """``p`` fails one request in ten in every cohort (base: one in a hundred) and scores
    better than base everywhere: the cause is the whole route, a property of the prefix that
    the gate judges, not a cohort to route apart; the advice on TaskCompletion stands."""

    def rule(sp: str, lang: str, plan: str) -> dict[str, Any]:
        return {**tc_drop(-0.1), "error_rate": 0.10}

    con = scratch_store()
    try:
        generate(con, slice_arms(rule, 60), seed=1)
        advice = routing_advice(con, "TaskCompletion")
        flagged = gate(con, "p")
    finally:
        con.close()
    assert flagged.status == "fail"  # the regression is there, and the gate fails it
    assert advice and {a.variant for a in advice} == {"p"}
    assert all(a.excluded == {} for a in advice)
