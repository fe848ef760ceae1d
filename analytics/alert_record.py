"""The alert object: one typed record from the detector to the API, the CLI and webhooks.

:class:`AlertRecord` is what :mod:`.alerts` writes, reads and diffs; the API validates its
pydantic ``Alert`` from it (``from_attributes``), the CLI and the demo print it, and
:meth:`AlertRecord.to_dict` is its JSON form (the DESIGN.md alert object plus extensions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

#: The DESIGN.md alert object's fields, in its order.
ALERT_FIELDS = (
    "id", "prefix_id", "prefix_version", "route", "cohort", "metric", "baseline",
    "baseline_value", "value", "delta", "ci_low", "ci_high", "p_value", "q_value", "n",
    "n_baseline", "direction", "severity", "status", "example_trace_ids", "created_at",
)  # fmt: skip
#: Our extensions: the lifecycle's timestamps, the dedupe key, the test and its evidence.
EXTRA_FIELDS = ("updated_at", "resolved_at", "fingerprint", "method", "details")
COLUMNS = (*ALERT_FIELDS, *EXTRA_FIELDS)
_TIMES = ("created_at", "updated_at", "resolved_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRecord:
    """One alert: a regression of ``metric`` for a variant (prefix, version, route, cohort
    slice) against ``baseline``, with its evidence. Timestamps are naive UTC."""

    id: str
    prefix_id: str | None
    prefix_version: str | None
    route: str | None
    cohort: dict[str, Any]
    metric: str
    baseline: str | None
    baseline_value: float | None
    value: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    q_value: float | None
    n: int | None
    n_baseline: int | None
    direction: str | None
    severity: str | None
    status: str
    example_trace_ids: list[str]
    created_at: datetime
    updated_at: datetime | None = None
    resolved_at: datetime | None = None
    fingerprint: str | None = None
    method: str | None = None
    details: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> AlertRecord:
        """A row of ``SELECT <COLUMNS> FROM alerts``. JSON columns that other writers filled
        with something unreadable become empty (cohort, examples) or ``None`` (details)."""
        d = dict(zip(COLUMNS, row, strict=True))
        cohort = _json(d["cohort"], {})
        d["cohort"] = cohort if isinstance(cohort, dict) else {}
        examples = _json(d["example_trace_ids"], [])
        d["example_trace_ids"] = [str(t) for t in examples] if isinstance(examples, list) else []
        details = _json(d["details"], None)
        d["details"] = details if isinstance(details, dict) else None
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field, timestamps as ISO-8601 strings."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in _TIMES:
            if d[k] is not None:
                d[k] = d[k].isoformat()
        return d


def _json(value: Any, default: Any) -> Any:
    """A JSON column's value; unreadable JSON (rows written by other tools) -> ``default``."""
    if value is None:
        return default
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return default
    return value


__all__ = ["ALERT_FIELDS", "COLUMNS", "EXTRA_FIELDS", "AlertRecord"]
