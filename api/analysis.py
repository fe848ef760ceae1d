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

from prefixscope.analytics.catalog import CATALOG
from prefixscope.collector.storage.store import Store
from prefixscope.errors import BadRequest, NotFound

T = TypeVar("T")

#: Built-in metric names and their direction, from the one catalog (DESIGN.md "Metrics"); any
#: other metric is an evaluator score.
BUILTIN_METRICS = frozenset(CATALOG)


@dataclass(frozen=True, slots=True)
class Stat:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    base_value: float | None = None
    delta: float | None = None
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None


@dataclass(frozen=True, slots=True)
class Group:
    key: dict[str, str | None]
    n: int
    metrics: dict[str, Stat]


def is_evaluator(metric: str) -> bool:
    return metric not in BUILTIN_METRICS


@contextmanager
def analytics_errors() -> Iterator[None]:
    try:
        yield
    except BadRequest:
        raise
    except (ValueError, duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        raise BadRequest(str(exc)) from None
    except OverflowError as exc:  # e.g. a relative time bound of a million years
        raise BadRequest(f"value out of range: {exc}") from None


def with_cursor(store: Store, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    cur = store.read_cursor()
    try:
        with analytics_errors():
            return fn(cur)
    finally:
        cur.close()


def scorecard(
    store: Store,
    group_by: Sequence[str],
    since: str | None,
    until: str | None,
    metrics: Sequence[str] | None = None,
    dataset: str | None = None,
) -> Any:
    """:func:`prefixscope.analytics.scorecard.scorecard` on a fresh cursor."""
    from prefixscope.analytics.scorecard import scorecard as analytics_scorecard

    return with_cursor(
        store,
        lambda con: analytics_scorecard(
            con, list(group_by), since, until, list(metrics) if metrics else None, dataset=dataset
        ),
    )


def gate(
    store: Store,
    prefix_id: str,
    *,
    prefix_version: str | None,
    since: str | None,
    until: str | None,
    alpha: float | None = None,
    min_n: int | None = None,
    strict: bool = False,
    cohort: dict[str, str] | None = None,
) -> Any:
    """:func:`prefixscope.analytics.gate.gate` (the release gate) on a fresh cursor."""
    from prefixscope.analytics.detection_config import DetectionConfig
    from prefixscope.analytics.gate import gate as analytics_gate

    with analytics_errors():
        config = DetectionConfig.from_options(alpha=alpha, min_n=min_n)
    return with_cursor(
        store,
        lambda con: analytics_gate(
            con,
            prefix_id,
            prefix_version=prefix_version,
            since=since,
            until=until,
            config=config,
            strict=strict,
            cohort=cohort,
        ),
    )


def routing(
    store: Store,
    metric: str,
    *,
    threshold: float,
    min_n: int,
    use_lower_bound: bool,
    since: str | None,
    until: str | None,
) -> list[Any]:
    """:func:`prefixscope.analytics.gate.routing_advice` on a fresh cursor."""
    from prefixscope.analytics.gate import routing_advice

    return with_cursor(
        store,
        lambda con: routing_advice(
            con,
            metric,
            threshold=threshold,
            min_n=min_n,
            use_lower_bound=use_lower_bound,
            since=since,
            until=until,
        ),
    )


def group_stats(
    store: Store, keys: Sequence[str], since: str | None, until: str | None
) -> list[Group]:
    """Scorecard rows as plain :class:`Group` values (value, CI, delta vs base + CI)."""
    card = scorecard(store, keys, since, until)
    out = []
    for row in card.rows:
        metrics = {
            name: Stat(
                mv.value,
                mv.ci_low,
                mv.ci_high,
                mv.n,
                mv.base_value,
                mv.delta,
                mv.delta_ci_low,
                mv.delta_ci_high,
            )
            for name, mv in row.metrics.items()
        }
        out.append(Group(dict(row.group), row.n, metrics))
    return out


def cohort_keys(store: Store, since: str | None, until: str | None, limit: int = 20) -> list[str]:
    """Cohort dimensions present on requests in the window (``cohort.<key>``)."""

    from prefixscope.analytics.query import REQUESTS, Window

    def run(con: duckdb.DuckDBPyConnection) -> list[str]:
        where, params = Window.of(since, until).where("s")
        rows = con.execute(
            f"SELECT DISTINCT unnest(json_keys(s.cohort)) AS k FROM {REQUESTS} s "
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


def timeseries(
    store: Store,
    prefix_id: str,
    since: str | None,
    until: str | None,
    route: str | None,
    cohort: dict[str, str] | None,
    with_base: bool = True,
) -> dict[str, Any]:
    from prefixscope.analytics import timeseries as ts

    def run(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        if not ts.exists(con, prefix_id):
            raise NotFound(f"no variant {prefix_id!r} (no traffic, not registered)")
        q = ts.SeriesQuery(prefix_id, since, until, route, cohort or None, with_base)
        return ts.timeseries(con, q)

    return with_cursor(store, run)


def alert_evidence(store: Store, alert: Any, public_url: str) -> Any:
    from datetime import timedelta

    from prefixscope.analytics import evidence as ev
    from prefixscope.analytics import timeseries as ts
    from prefixscope.analytics.query import parse_time

    from .models import AlertEvidence, TimeSeries
    from .webhooks import alert_url

    rec = alert.model_dump()

    def run(con: duckdb.DuckDBPyConnection) -> AlertEvidence:
        data = ev.evidence(con, rec)
        series = None
        if rec.get("prefix_id"):
            created = rec["created_at"].replace(tzinfo=None)
            since = parse_time(data["window"]["since"]) or created - timedelta(days=7)
            q = ts.SeriesQuery(
                rec["prefix_id"],
                since - (created - since) * 0.25,
                created + timedelta(hours=1),
                rec.get("route"),
                {k: str(v) for k, v in (rec.get("cohort") or {}).items()} or None,
            )
            series = TimeSeries.model_validate(ts.timeseries(con, q))
        return AlertEvidence(
            alert=alert,
            evidence=data,
            timeseries=series,
            page_url=alert_url(rec["id"], public_url),
        )

    return with_cursor(store, run)
