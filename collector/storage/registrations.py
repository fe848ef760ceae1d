"""A variant's registration, applied to the registry tables (``prefixes``, ``served_models``).

The one place that decides what a registration changes: the embedded store runs it in its own
transaction (``api/registry.py``), a lake collector on an in-memory copy of the lake's registry
whose new rows it then publishes (``storage/lake_registry.py``). Both therefore keep the same
history: ``registered_at`` of the first registration, and a served-name mapping that changes
only where the registration changes it (``attribution.declare``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..spans.model import PREFIXES_SCHEMA
from . import attribution

if TYPE_CHECKING:
    import duckdb

#: the embedded ``prefixes`` table's columns (the lake's add ``id``, one per history row)
REGISTRY_COLUMNS: tuple[str, ...] = tuple(n for n in PREFIXES_SCHEMA.names if n != "id")
#: what a registration sets (``PrefixRegistration`` in the API)
FIELDS: tuple[str, ...] = (
    "base_model",
    "prefix_type",
    "version",
    "owner",
    "specialty",
    "training_corpus",
    "adapter_hash",
    "status",
)


def register(
    cur: duckdb.DuckDBPyConnection,
    prefix_id: str,
    values: Mapping[str, Any],
    *,
    now: dt.datetime,
) -> tuple[bool, list[str]]:
    """Insert or replace ``prefix_id``'s registration inside the caller's transaction.

    ``values`` holds :data:`FIELDS`, ``metadata`` (a dict) and ``served_model_names`` (a list,
    or None to keep the current names): listed names stand for the registration's version,
    base model and type from ``now`` on, the variant's other names stop matching.
    Returns ``(created, served names whose mapping changed)``."""
    row = cur.execute(
        "SELECT registered_at FROM prefixes WHERE prefix_id = ?", [prefix_id]
    ).fetchone()
    registered_at = row[0] if row else now
    cur.execute(
        f"INSERT OR REPLACE INTO prefixes ({', '.join(REGISTRY_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in REGISTRY_COLUMNS)})",
        [
            prefix_id,
            *(values.get(f) for f in FIELDS),
            json.dumps(values.get("metadata") or {}),
            registered_at,
            now,
        ],
    )
    names = values.get("served_model_names")
    mapped = attribution.current(cur, prefix_id)
    wanted = {
        name: values.get("version") or mapped.get(name)
        for name in (mapped if names is None else names)
    }
    changed = attribution.declare(
        cur,
        prefix_id,
        wanted,
        base_model=values.get("base_model"),
        prefix_type=values.get("prefix_type"),
        source="api",
        now=now,
    )
    return row is None, changed
