"""The prefix registry: variants seen in traffic merged with registered metadata.

What a request is and which variant served it is defined once (``collector/spans/requests.py``,
the ``requests_base`` view: ``analytics.query.REQUESTS``, ``PREFIX_SQL``). A variant may be
registered (``PUT /api/v1/prefixes/{id}``) before any traffic reaches it; then it is listed
with ``n = 0``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

import duckdb

from prefixscope.analytics.query import PREFIX_SQL, REQUESTS
from prefixscope.collector.storage import attribution, registrations
from prefixscope.collector.storage.store import Store
from prefixscope.errors import Unavailable
from prefixscope.semconv import BASE_PREFIX_ID

from .models import PrefixInfo, PrefixRegistration

_SEEN_SQL = f"""
SELECT {PREFIX_SQL} AS pid,
  list_sort(coalesce(list(DISTINCT s.base_model) FILTER (s.base_model IS NOT NULL), [])),
  list_sort(coalesce(list(DISTINCT s.prefix_type) FILTER (s.prefix_type IS NOT NULL), [])),
  list_sort(coalesce(list(DISTINCT s.prefix_version) FILTER (s.prefix_version IS NOT NULL), [])),
  min(s.start_time), max(s.start_time), count(*)
FROM {REQUESTS} s
GROUP BY 1
"""
_REGISTRY_COLUMNS = registrations.REGISTRY_COLUMNS


def list_prefixes(store: Store) -> list[PrefixInfo]:
    cur = store.read_cursor()
    try:
        seen = {row[0]: row for row in cur.execute(_SEEN_SQL).fetchall()}
        reg_rows = cur.execute(f"SELECT {', '.join(_REGISTRY_COLUMNS)} FROM prefixes").fetchall()
        served = attribution.served_names(cur)
    finally:
        cur.close()
    registered = {row[0]: dict(zip(_REGISTRY_COLUMNS, row, strict=True)) for row in reg_rows}
    out = []
    for pid in sorted(set(seen) | set(registered), key=lambda p: (p != BASE_PREFIX_ID, p)):
        info = _merge(pid, seen.get(pid), registered.get(pid))
        info.served_model_names = served.get(pid, [])
        out.append(info)
    return out


def get_prefix(store: Store, prefix_id: str) -> PrefixInfo | None:
    return next((p for p in list_prefixes(store) if p.prefix_id == prefix_id), None)


def _merge(pid: str, seen: tuple[Any, ...] | None, reg: dict[str, Any] | None) -> PrefixInfo:
    info: dict[str, Any] = {
        "prefix_id": pid,
        "registered": reg is not None,
        "base_models": list(seen[1]) if seen else [],
        "prefix_types": list(seen[2]) if seen else [],
        "versions": list(seen[3]) if seen else [],
        "first_seen": seen[4] if seen else None,
        "last_seen": seen[5] if seen else None,
        "n": int(seen[6]) if seen else 0,
    }
    if reg is not None:
        meta = reg.pop("metadata")
        reg.pop("prefix_id")
        info.update(reg)
        info["metadata"] = json.loads(meta) if isinstance(meta, str) else (meta or {})
        if reg.get("version") and reg["version"] not in info["versions"]:
            info["versions"] = sorted([*info["versions"], reg["version"]])
    return PrefixInfo(**info)


def register_prefix(store: Store, prefix_id: str, body: PrefixRegistration) -> tuple[bool, str]:
    """Insert or replace a variant's registration; returns (created, prefix_id)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    cur = store.read_cursor()
    try:
        cur.execute("BEGIN TRANSACTION")
        created, changed = registrations.register(cur, prefix_id, body.model_dump(), now=now)
        if changed:
            attribution.refresh_view(cur)
        cur.execute("COMMIT")
    except duckdb.Error as exc:
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        raise Unavailable(f"could not store the registration: {exc}", retry_after_s=1) from None
    finally:
        cur.close()
    return created, prefix_id
