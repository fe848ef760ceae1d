"""SQL building blocks shared by scorecards, views and detection.

**Which spans are requests.** A span counts as one model request when it carries any of the
variant columns the collector normalises: ``base_model``, ``prefix_id`` or ``input_tokens``
is not NULL (:data:`REQUEST_PREDICATE`). Wrapper spans (HTTP handlers, tools without a model
call) therefore do not dilute rates or latency. A NULL, empty or ``"base"`` ``prefix_id``
means the base model served the request (:data:`PREFIX_SQL` maps it to ``"base"``).

**Attributing scores and feedback.** A ``scores``/``feedback`` row with a ``span_id`` belongs
to that span. A row with a NULL ``span_id`` is about the whole trace and is attributed to the
trace's *primary request*: its request span that ended last (the final answer of an agent).

**Time window.** ``since <= start_time < until`` (UTC); either end may be open.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefixscope import durations, semconv

from .dialect import DUCKDB, Dialect

REQUEST_PREDICATE = (
    "(s.base_model IS NOT NULL OR s.prefix_id IS NOT NULL OR s.input_tokens IS NOT NULL)"
)
BASE = semconv.BASE_PREFIX_ID
PREFIX_SQL = f"coalesce(nullif(s.prefix_id, ''), '{BASE}')"
VERSION_SQL = (
    f"CASE WHEN coalesce(nullif(s.prefix_id, ''), '{BASE}') = '{BASE}' THEN '' "
    "ELSE coalesce(s.prefix_version, '') END"
)

#: Group keys the scorecard accepts directly (plus ``cohort.<key>`` and ``attr.<key>``).
COLUMN_KEYS: dict[str, str] = {
    "prefix_id": PREFIX_SQL,
    "prefix_version": VERSION_SQL,
    "route": "s.route",
    "prompt_version": "s.prompt_version",
    "base_model": "s.base_model",
    "prefix_type": "s.prefix_type",
    "service_name": "s.service_name",
    "name": "s.name",
    "status_code": "s.status_code",
    "cohort": "s.cohort",
    "day": "CAST(date_trunc('day', s.start_time) AS VARCHAR)",
    "hour": "CAST(date_trunc('hour', s.start_time) AS VARCHAR)",
}
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-:/]{1,128}$")


class QueryError(ValueError):
    """A group key, metric or time bound that cannot be used."""


def json_path(key: str) -> str:
    """A DuckDB JSON path selecting one (possibly dotted) top-level key."""
    return '$."' + json_key(key) + '"'


def json_key(key: str) -> str:
    """``key`` itself, once checked to be safe inside a JSON path of any dialect."""
    if not _KEY_RE.match(key):
        raise QueryError(f"invalid key {key!r}")
    return key


def group_expr(key: str, dialect: Dialect = DUCKDB) -> str:
    """SQL expression (over alias ``s`` = spans) for one scorecard group key."""
    if key in ("day", "hour"):
        return dialect.cast_string(f"date_trunc('{key}', s.start_time)")
    if key in COLUMN_KEYS:
        return COLUMN_KEYS[key]
    if key.startswith(semconv.COHORT_PREFIX):
        return dialect.json_string("s.cohort", json_key(key[len(semconv.COHORT_PREFIX) :]))
    if key.startswith("attr."):
        return dialect.json_string("s.attributes", json_key(key[5:]))
    raise QueryError(
        f"unknown group key {key!r}: use one of {sorted(COLUMN_KEYS)}, cohort.<key> or attr.<key>"
    )


def parse_time(value: datetime | str | None, now: datetime | None = None) -> datetime | None:
    """A window bound: a datetime, an ISO-8601 string, or a relative age like ``24h``/``7d``.

    Returned as a naive UTC datetime (the store's TIMESTAMP columns are UTC).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip()
        if durations.is_duration(text):
            ref = now or datetime.now(UTC)
            try:
                dt = ref - parse_duration(text)
            except OverflowError as exc:  # before year 1
                raise QueryError(f"time {value[:100]!r} is out of range") from exc
        else:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as exc:
                raise QueryError(f"bad time {value!r}: use ISO-8601 or e.g. 24h, 7d") from exc
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


def is_relative(value: datetime | str | None) -> bool:
    """Whether a window bound is an age (``24h``, ``7d``): it moves with the clock."""
    return isinstance(value, str) and durations.is_duration(value)


def parse_cohort_filter(items: Iterable[str]) -> dict[str, str]:
    """``["specialty=cardiology", ...]`` -> ``{"specialty": "cardiology", ...}``."""
    wanted: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or len(item) > 200:
            raise QueryError(f"cohort must be key=value, got {item[:200]!r}")
        wanted[key] = value
    return wanted


def parse_duration(value: timedelta | str) -> timedelta:
    """A length of time: a timedelta or ``<number><s|m|h|d|w>`` (``90m``, ``1d``, ``1.5h``)."""
    if isinstance(value, timedelta):
        return value
    try:
        return durations.parse(value)
    except durations.DurationError as exc:
        raise QueryError(f"duration {exc}") from exc


@dataclass(frozen=True, slots=True)
class Window:
    """A ``[since, until)`` window on ``start_time``."""

    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def of(cls, since: datetime | str | None, until: datetime | str | None) -> Window:
        return cls(parse_time(since), parse_time(until))

    def where(self, alias: str = "s") -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            parts.append(f"{alias}.start_time >= ?")
            params.append(self.since)
        if self.until is not None:
            parts.append(f"{alias}.start_time < ?")
            params.append(self.until)
        return (" AND ".join(parts) or "TRUE"), params

    def to_dict(self) -> dict[str, str | None]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def requests_cte(window: Window, extra_where: str = "TRUE") -> tuple[str, list[Any]]:
    """``req`` CTE body: request spans in the window (all span columns, alias-free)."""
    where, params = window.where("s")
    sql = f"SELECT s.* FROM spans s WHERE {REQUEST_PREDICATE} AND {where} AND ({extra_where})"
    return sql, params


def attributed_sql(table: str, columns: str) -> str:
    """Rows of ``scores``/``feedback`` with the span they are attributed to (needs CTE ``req``).

    Yields ``trace_id, span_id`` plus ``columns`` of ``table``.
    """
    return f"""
SELECT t.trace_id, t.span_id, {columns} FROM {table} t WHERE t.span_id IS NOT NULL
UNION ALL
SELECT t.trace_id, p.span_id, {columns}
FROM {table} t JOIN (
  SELECT trace_id, arg_max(span_id, end_time) AS span_id FROM req
  WHERE trace_id IN (SELECT trace_id FROM {table} WHERE span_id IS NULL)
  GROUP BY trace_id
) p ON p.trace_id = t.trace_id
WHERE t.span_id IS NULL"""
