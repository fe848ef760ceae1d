"""The variant registry of a Parquet lake: registrations and the served-name mapping.

A lake collector (``serve --store lake``) and ``prefixscope lake register`` keep the registry
in the lake's ``prefixes`` and ``served_models`` tables (``storage/tables.py``), as history:
rows are only ever added. A change is computed exactly as the embedded store computes it
(``registrations.register``, ``attribution.declare_served``), on an in-memory DuckDB copy of
the lake's registry, and the rows it adds are published as new segments before the call
returns, like span segments. The lake engines then apply the mapping with the embedded views'
rule (``storage/views.mapped_select``).

Collectors do not coordinate: two registrations of one variant racing on two collectors both
land, and the later ``updated_at`` (``valid_from`` for a name) wins, as it would on one server.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from prefixscope.config import ServedModel

from ..spans.model import PREFIXES_SCHEMA, SERVED_MODELS_SCHEMA
from . import attribution, registrations
from .tables import read_lake_table, sql_type, write_lake_table

_KEYS = {"prefixes": "PRIMARY KEY (prefix_id)", "served_models": "PRIMARY KEY (name, valid_from)"}


@dataclass(slots=True)
class Registration:
    """A variant's current registration (``registrations.REGISTRY_COLUMNS``) and served names."""

    values: dict[str, Any]
    served_model_names: list[str] = field(default_factory=list)


def snapshot(
    lake_url: str, *, storage_options: dict[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding the lake's registry as the embedded store holds it:
    ``prefixes`` with each variant's latest registration, ``served_models`` with the whole
    mapping history."""
    con = duckdb.connect()
    for name, schema in (("prefixes", PREFIXES_SCHEMA), ("served_models", SERVED_MODELS_SCHEMA)):
        cols = [f for f in schema if f.name != "id"]
        ddl = ", ".join(f"{f.name} {sql_type(f.type)}" for f in cols)
        con.execute(f"CREATE TABLE {name} ({ddl}, {_KEYS[name]})").fetchall()
        rows = read_lake_table(lake_url, name, storage_options=storage_options)
        if not rows.num_rows:
            continue
        names = ", ".join(f.name for f in cols)
        latest = (
            "QUALIFY row_number() OVER "
            "(PARTITION BY prefix_id ORDER BY updated_at DESC, id DESC) = 1"
            if name == "prefixes"
            else ""
        )
        con.register("_lake_rows", rows)
        try:
            con.execute(f"INSERT INTO {name} SELECT {names} FROM _lake_rows {latest}").fetchall()
        finally:
            con.unregister("_lake_rows")
    return con


class LakeRegistry:
    """Reads and changes the registry of one lake (one change at a time per process)."""

    def __init__(self, lake_url: str, *, storage_options: dict[str, Any] | None = None) -> None:
        self.lake_url = lake_url
        self.storage_options = storage_options
        self._lock = threading.Lock()

    def _snapshot(self) -> duckdb.DuckDBPyConnection:
        return snapshot(self.lake_url, storage_options=self.storage_options)

    def register(self, prefix_id: str, values: Mapping[str, Any]) -> tuple[bool, Registration]:
        """Register (or replace) ``prefix_id`` (``registrations.register``'s ``values``); the
        new rows are published when this returns. Returns ``(created, registration)``."""
        now = _now()
        with self._lock:
            con = self._snapshot()
            try:
                created, changed = registrations.register(con, prefix_id, values, now=now)
                cols = ", ".join(registrations.REGISTRY_COLUMNS)
                row = con.sql(
                    f"SELECT {cols}, ? AS id FROM prefixes WHERE prefix_id = ?",
                    params=[uuid.uuid4().hex, prefix_id],
                ).to_arrow_table()
                mapping = _latest_rows(con, changed)
                self._publish(row, mapping)
                return created, _registration(con, prefix_id)
            finally:
                con.close()

    def declare_served(self, served: Sequence[ServedModel]) -> list[str]:
        """Apply ``--served-model NAME=PREFIX[@VERSION]`` declarations as ``serve`` does on the
        embedded store; returns the names whose mapping changed (published on return)."""
        if not served:
            return []
        with self._lock:
            con = self._snapshot()
            try:
                changed = attribution.declare_served(con, served, refresh=False, now=_now())
                self._publish(None, _latest_rows(con, changed))
                return changed
            finally:
                con.close()

    def get(self, prefix_id: str) -> Registration | None:
        con = self._snapshot()
        try:
            found = con.execute(
                "SELECT count(*) FROM prefixes WHERE prefix_id = ?", [prefix_id]
            ).fetchall()
            return _registration(con, prefix_id) if found[0][0] else None
        finally:
            con.close()

    def _publish(self, prefixes: pa.Table | None, served: pa.Table) -> None:
        # the registration first: a mapping never points at a variant the lake does not know
        if prefixes is not None and prefixes.num_rows:
            write_lake_table(
                self.lake_url, "prefixes", prefixes, storage_options=self.storage_options
            )
        if served.num_rows:
            write_lake_table(
                self.lake_url, "served_models", served, storage_options=self.storage_options
            )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _latest_rows(con: duckdb.DuckDBPyConnection, names: Sequence[str]) -> pa.Table:
    """The mapping rows a change added: each changed name's latest row."""
    cols = ", ".join(SERVED_MODELS_SCHEMA.names)
    return con.sql(
        f"SELECT {cols} FROM served_models WHERE list_contains(?, name) "
        "QUALIFY row_number() OVER (PARTITION BY name ORDER BY valid_from DESC) = 1",
        params=[list(names)],
    ).to_arrow_table()


def _registration(con: duckdb.DuckDBPyConnection, prefix_id: str) -> Registration:
    cols = registrations.REGISTRY_COLUMNS
    rows = con.execute(
        f"SELECT {', '.join(cols)} FROM prefixes WHERE prefix_id = ?", [prefix_id]
    ).fetchall()
    names = attribution.served_names(con).get(prefix_id, [])
    return Registration(dict(zip(cols, rows[0], strict=True)), names)
