"""Query and path parameters more than one group of routes takes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from .models import TIME_BOUND_PATTERN

AlertIdPath = Annotated[str, Path(min_length=1, max_length=200)]
CohortFilter = Annotated[
    list[str] | None,
    Query(
        max_length=20,
        description="Only this cohort: key=value, repeatable (e.g. specialty=cardiology)",
        examples=[["specialty=cardiology"]],
    ),
]
Filter = Annotated[str | None, Query(min_length=1, max_length=200)]
TimeBound = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=TIME_BOUND_PATTERN,
        description="ISO-8601 time or a relative age (24h, 7d)",
        examples=["7d"],
    ),
]
