"""SQL building blocks shared by scorecards, views and detection.

**Requests are the unit.** Every count, rate, quantile and test reads :data:`REQUESTS`, one
row per request (``collector/spans/requests.py`` defines what a request is: one model call made for
a variant or the base model, with its variant scope), with the served-model mapping applied.
On the embedded store it is the ``requests_base`` view; the lake engines define a relation of
the same name and columns. A NULL, empty or ``"base"`` ``prefix_id`` means the base model
served the request (:data:`PREFIX_SQL` maps it to ``"base"``).

**Attributing scores and feedback.** A ``scores``/``feedback`` row belongs to the request
whose ``span_ids`` hold its ``span_id`` (the request's own span, the spans inside it, its
scope's spans, and the trace's other spans for its last request); a row with a NULL
``span_id`` is about the whole trace and belongs to the trace's last request
(``last_in_trace``). Either way one judgement counts once (:func:`judged_sql`).

**Time window.** ``since <= start_time < until`` (UTC); either end may be open.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefixscope import durations, semconv
from prefixscope.collector.storage.dialect import DUCKDB, Dialect

#: the relation of requests every analysis reads (alias ``s`` in the building blocks)
REQUESTS = "requests_base"
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
    "error": "CAST(s.error AS VARCHAR)",
    "session_id": "s.session_id",
    "cohort": "s.cohort",
    "day": "CAST(date_trunc('day', s.start_time) AS VARCHAR)",
    "hour": "CAST(date_trunc('hour', s.start_time) AS VARCHAR)",
}
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-:/]{1,128}$")


class InvalidArgument(ValueError):
    """A group key, metric or time bound that cannot be used."""


def json_path(key: str) -> str:
    """A DuckDB JSON path selecting one (possibly dotted) top-level key."""
    return '$."' + json_key(key) + '"'


def json_key(key: str) -> str:
    """``key`` itself, once checked to be safe inside a JSON path of any dialect."""
    if not _KEY_RE.match(key):
        raise InvalidArgument(f"invalid key {key!r}")
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
        # the request span's attribute (requests keep no attribute maps: read the span's)
        value = dialect.json_string("x.attributes", json_key(key[5:]))
        return (
            f"(SELECT {value} FROM spans x "
            "WHERE x.trace_id = s.trace_id AND x.span_id = s.span_id LIMIT 1)"
        )
    raise InvalidArgument(
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
                raise InvalidArgument(f"time {value[:100]!r} is out of range") from exc
        else:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as exc:
                raise InvalidArgument(f"bad time {value!r}: use ISO-8601 or e.g. 24h, 7d") from exc
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
            raise InvalidArgument(f"cohort must be key=value, got {item[:200]!r}")
        wanted[key] = value
    return wanted


def parse_duration(value: timedelta | str) -> timedelta:
    """A length of time: a timedelta or ``<number><s|m|h|d|w>`` (``90m``, ``1d``, ``1.5h``)."""
    if isinstance(value, timedelta):
        return value
    try:
        return durations.parse(value)
    except durations.DurationError as exc:
        raise InvalidArgument(f"duration {exc}") from exc


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


def judged_sql(dialect: Dialect = DUCKDB, alias: str = "r") -> str:
    """The condition attributing a ``scores``/``feedback`` row ``t`` to the request ``alias``
    of the same trace (see the module doc)."""
    return (
        f"((t.span_id IS NULL AND {alias}.last_in_trace) OR "
        f"{dialect.list_contains(f'{alias}.span_ids', 't.span_id')})"
    )
