"""Lengths of time as users write them (``30s``, ``5m``, ``1.5h``, ``30d``, ``12w``): the one
parser behind settings, CLI options, query parameters and detection windows."""

from __future__ import annotations

import re
from datetime import timedelta

_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class DurationError(ValueError):
    """Not a duration, or one too long to represent (its message says which)."""


def is_duration(text: str) -> bool:
    """Whether ``text`` is written like a duration (it may still be out of range)."""
    return _PATTERN.match(text.strip()) is not None


def parse(text: str) -> timedelta:
    """``text`` as a timedelta; :class:`DurationError` with a message saying why not."""
    m = _PATTERN.match(text.strip())
    if not m:
        raise DurationError(f"must be like 30s, 5m, 12h, 30d or 12w, got {text[:100]!r}")
    try:
        return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    except OverflowError as exc:  # longer than timedelta's ~2.7 million years
        raise DurationError(f"{text[:100]!r} is out of range") from exc
