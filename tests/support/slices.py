"""Synthetic worlds with three cohort keys, for the slice tests and the pages that show them."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from prefixscope.analytics.synthetic import Arm

SPECIALTIES, LANGUAGES, PLANS = ("a", "b", "c"), ("de", "en", "fr", "es"), ("free", "pro", "team")
Rule = Callable[[str, str, str], dict[str, Any]]


def slice_arms(rule: Rule, n: int) -> list[Arm]:
    arms = []
    for prefix in (None, "p"):
        for sp, lang, plan in itertools.product(SPECIALTIES, LANGUAGES, PLANS):
            kw = {
                "scores": {"TaskCompletion": (0.8, 10.0)},
                **(rule(sp, lang, plan) if prefix else {}),
            }
            cohort = {"specialty": sp, "language": lang, "plan": plan}
            arms.append(Arm(prefix, "1" if prefix else None, "r", cohort, n=n, **kw))
    return arms


def tc_drop(drop: float) -> dict[str, Any]:
    """TaskCompletion scores ``drop`` below the base model's."""
    return {"scores": {"TaskCompletion": (0.8 - drop, 10.0)}}
