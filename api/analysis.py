"""The API's one seam to :mod:`prefixscope.analytics` (statistics live there, not here).

Analytics raises ``ValueError`` subclasses for unusable group keys, metrics or time bounds;
they become :class:`BadRequest` here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
from prefixscope.analytics import aggregate
from prefixscope.analytics.query import Window
from prefixscope.collector.store import Store

from prefixscope.errors import BadRequest

T = TypeVar("T")

#: Metrics where a larger value is worse (used to colour the variants table).
LOWER_IS_BETTER = frozenset(
    {*aggregate.QUANTILE_METRICS, *aggregate.RATE_METRICS, "input_tokens", "output_tokens"}
)


@dataclass(frozen=True, slots=True)
class Stat:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True, slots=True)
class Group:
    key: dict[str, str | None]
    n: int
    metrics: dict[str, Stat]


def is_evaluator(metric: str) -> bool:
    return metric not in aggregate.BUILTIN_METRIC_NAMES


@contextmanager
def analytics_errors() -> Iterator[None]:
    try:
        yield
    except BadRequest:
        raise
    except (ValueError, duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        raise BadRequest(str(exc)) from None


def with_cursor(store: Store, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    cur = store.cursor()
    try:
        with analytics_errors():
            return fn(cur)
    finally:
        cur.close()


def group_stats(
    store: Store, keys: Sequence[str], since: str | None, until: str | None
) -> list[Group]:
    """Per-group estimates with intervals, from :func:`analytics.aggregate.compute_cells`."""

    def run(con: duckdb.DuckDBPyConnection) -> list[Group]:
        cells = aggregate.compute_cells(con, list(keys), Window.of(since, until))
        out = []
        for key, cell in cells.items():
            metrics = {
                name: Stat(est.value, est.ci_low, est.ci_high, est.n)
                for name, est in cell.metrics.items()
            }
            out.append(Group(dict(zip(keys, key, strict=True)), cell.n, metrics))
        return out

    return with_cursor(store, run)


def cohort_keys(store: Store, since: str | None, until: str | None, limit: int = 20) -> list[str]:
    """Cohort dimensions present on request spans in the window (``cohort.<key>``)."""

    def run(con: duckdb.DuckDBPyConnection) -> list[str]:
        where, params = Window.of(since, until).where("s")
        rows = con.execute(
            f"SELECT DISTINCT unnest(json_keys(s.cohort)) AS k FROM spans s "
            f"WHERE s.cohort IS NOT NULL AND {where} ORDER BY k LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [f"cohort.{r[0]}" for r in rows]

    return with_cursor(store, run)


def as_jsonable(obj: Any) -> Any:
    """Analytics results (dataclasses with ``to_dict``, dicts, lists) as plain data."""
    if hasattr(obj, "to_dict"):
        return as_jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): as_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_jsonable(v) for v in obj]
    return obj
