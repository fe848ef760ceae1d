"""Variant attribution by served model name, applied when spans are read.

vLLM serves each adapter under a model name of its own (``--lora-modules cardiology=…``), and
third-party instrumentors record that name as the request or response model, never as
``prefix.id``. A registration's ``served_model_names`` (or ``serve --served-model``) maps such
names to a variant: a span with no ``prefix.id`` whose ``request_model`` (else
``response_model``) is a served name is read as that variant, with the registered
``base_model``, ``prefix_version`` and ``prefix_type``.

The mechanism is a query-time mapping: rows are stored as they arrived (``span_rows``) and
``spans`` is a view that joins them to the mapping's history (``served_models``). So

* a registration applies to spans that arrived before it, in every store tier, without
  rewriting a row (the lake keeps what the clients sent);
* the mapping has a history: a name re-pointed to ``cardiology@4`` attributes later spans to
  version 4 and keeps earlier ones on version 3. The first mapping of a name also covers the
  spans before it (the backfill); a name dropped from a registration stops matching from then
  on;
* with no mapping declared, ``spans`` is a plain projection of ``span_rows`` (no join cost).

The raw names stay visible in the ``request_model``/``response_model`` columns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from prefixscope.config import ServedModel

from .views import refresh_view

if TYPE_CHECKING:
    import duckdb

VIEW = "spans"
#: each name's current mapping (a NULL prefix_id: the name was dropped)
_LATEST = (
    "(SELECT * FROM served_models "
    "QUALIFY row_number() OVER (PARTITION BY name ORDER BY valid_from DESC) = 1)"
)


def declare(
    con: duckdb.DuckDBPyConnection,
    prefix_id: str,
    names: Mapping[str, str | None],
    *,
    base_model: str | None,
    prefix_type: str | None,
    source: str,
    exclusive: bool = True,
    now: dt.datetime | None = None,
) -> list[str]:
    """Map each ``{name: version}`` to ``prefix_id`` from ``now`` on (inside the caller's
    transaction). With ``exclusive``, names of the variant that are not listed stop matching.
    A name of another variant moves to this one. Returns the names whose mapping changed."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    latest = {
        row[0]: row[1:]
        for row in con.execute(
            f"SELECT name, prefix_id, version, base_model, prefix_type, valid_from FROM {_LATEST}"
        ).fetchall()
    }
    changes: list[tuple[str, tuple[str | None, ...]]] = []
    for name, version in names.items():
        want = (prefix_id, version, base_model, prefix_type)
        if name not in latest or tuple(latest[name][:4]) != want:
            changes.append((name, want))
    if exclusive:
        for name, row in latest.items():
            if row[0] == prefix_id and name not in names:
                changes.append((name, (None, None, None, None)))
    for name, row in changes:
        valid_from = now
        if name in latest and latest[name][4] >= valid_from:  # clocks: keep the order
            valid_from = latest[name][4] + dt.timedelta(microseconds=1)
        con.execute(
            "INSERT INTO served_models VALUES (?, ?, ?, ?, ?, ?, ?)",
            [name, *row, valid_from, source],
        )
    return [name for name, _ in changes]


def served_names(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every variant's current served names, ``{prefix_id: [name, ...]}``."""
    out: dict[str, list[str]] = {}
    for name, pid in con.execute(
        f"SELECT name, prefix_id FROM {_LATEST} WHERE prefix_id IS NOT NULL ORDER BY name"
    ).fetchall():
        out.setdefault(pid, []).append(name)
    return out


def name_map(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str | None]]:
    """Every served name mapped now: ``{name: (prefix_id, version)}``."""
    rows = con.execute(
        f"SELECT name, prefix_id, version FROM {_LATEST} WHERE prefix_id IS NOT NULL"
    ).fetchall()
    return {name: (pid, version) for name, pid, version in rows}


def current(con: duckdb.DuckDBPyConnection, prefix_id: str) -> dict[str, str | None]:
    """The names mapped to ``prefix_id`` now, with the version each stands for."""
    rows = con.execute(f"SELECT name, prefix_id, version FROM {_LATEST} ORDER BY name").fetchall()
    return {name: version for name, pid, version in rows if pid == prefix_id}


def declare_served(
    con: duckdb.DuckDBPyConnection,
    served: Sequence[ServedModel],
    *,
    refresh: bool = True,
    now: dt.datetime | None = None,
) -> list[str]:
    """Apply ``serve --served-model`` declarations (one transaction). Base model and type come
    from the variant's registration; the version from the flag, else the registration. Names
    the API gave the variant stay mapped. ``refresh``: redefine the store's views after a
    change (not on a registry without spans: the lake's, ``lake_registry.py``)."""
    if not served:
        return []
    changed: list[str] = []
    con.execute("BEGIN TRANSACTION")
    try:
        for sm in served:
            reg = con.execute(
                "SELECT version, base_model, prefix_type FROM prefixes WHERE prefix_id = ?",
                [sm.prefix_id],
            ).fetchall()
            version, base_model, prefix_type = reg[0] if reg else (None, None, None)
            changed += declare(
                con,
                sm.prefix_id,
                {sm.name: sm.version or version},
                base_model=base_model,
                prefix_type=prefix_type,
                source="cli",
                exclusive=False,
                now=now,
            )
        if changed and refresh:
            refresh_view(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return changed
