"""Turn DuckDB result values into JSON-safe Python values.

Timestamps and dates become ISO 8601 strings, decimals become numbers, blobs become base64,
intervals become seconds, non-finite floats become the strings ``"NaN"``, ``"Infinity"``,
``"-Infinity"`` (JSON has no such numbers), and nested lists/structs/maps are converted
recursively (map keys become strings).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any


def json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return json_safe(float(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


def json_safe_row(row: tuple[Any, ...]) -> list[Any]:
    return [json_safe(v) for v in row]
