"""Copy a store's tables (a DuckDB database with the store's schema) into a lake as new
segments: how tests, benchmarks and ``analytics synthetic`` build a lake from an embedded
store. Above both ``tables`` (the lake's tables) and ``tiers`` (the store's two tiers)."""

from __future__ import annotations

from typing import Any

from .tables import lake_table, write_lake_table
from .tiers import rows_source


def export_duckdb_tables(
    con: Any,
    lake_url: str,
    tables: tuple[str, ...] = ("spans", "scores", "feedback", "prefixes", "served_models"),
    *,
    where: dict[str, str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Copy tables of a DuckDB database with the store's schema into the lake as new segments
    (``where``: an optional SQL condition per table); return rows written per table.

    Spans go as stored (both tiers, without the attribution the ``spans`` view applies: lake
    readers apply it from the exported registry); a registration gets an ``id`` derived from
    its variant and time."""
    sources = {
        "spans": f"{rows_source(con)} r",
        "prefixes": "(SELECT *, md5(prefix_id || '/' || CAST(updated_at AS VARCHAR)) AS id "
        "FROM prefixes)",
    }
    written = {}
    for name in tables:
        cols = ", ".join(lake_table(name).schema.names)
        cond = (where or {}).get(name, "TRUE")
        data = con.sql(
            f"SELECT {cols} FROM {sources.get(name, name)} WHERE {cond}"
        ).to_arrow_table()
        if data.num_rows:
            write_lake_table(lake_url, name, data, storage_options=storage_options)
        written[name] = data.num_rows
    return written
