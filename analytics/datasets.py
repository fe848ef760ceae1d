"""Golden datasets: load from JSONL/CSV/Parquet (polars, in Python) and keep them in the store.

Files are read here, not through the store's DuckDB (which cannot read files outside its lake
by design). An item has ``id``, ``input``, optional ``expected``, ``context`` (a string or a
list of documents) and cohort fields (e.g. ``specialty``) plus any other metadata.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
import pyarrow as pa

from prefixscope.collector.storage.arrow_rows import insert_rows


class DatasetError(ValueError):
    """A dataset file or name that cannot be used."""


@dataclass(slots=True)
class DatasetItem:
    item_id: str
    input: str
    expected: str | None = None
    context: list[str] = field(default_factory=list)
    cohort: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Dataset:
    name: str
    version: str
    items: list[DatasetItem]
    description: str | None = None
    cohort_fields: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def read_items(
    path: str | Path,
    *,
    cohort_fields: Sequence[str] = (),
    id_field: str = "id",
    input_field: str = "input",
    expected_field: str = "expected",
    context_field: str = "context",
) -> list[DatasetItem]:
    """Items of a ``.jsonl``/``.ndjson``, ``.csv`` or ``.parquet`` file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        df = pl.read_ndjson(p)
    elif suffix == ".csv":
        df = pl.read_csv(p, infer_schema_length=0)  # everything as text
    elif suffix == ".parquet":
        df = pl.read_parquet(p)
    else:
        raise DatasetError(f"unsupported dataset file type {suffix!r} (jsonl, csv, parquet)")
    if input_field not in df.columns:
        raise DatasetError(f"{p.name}: no {input_field!r} column (have {df.columns})")
    known = {id_field, input_field, expected_field, context_field, *cohort_fields}
    items = []
    for i, row in enumerate(df.iter_rows(named=True)):
        ctx = row.get(context_field)
        if isinstance(ctx, str):
            ctx = orjson.loads(ctx) if ctx.startswith("[") else [ctx]
        exp = row.get(expected_field)
        items.append(
            DatasetItem(
                item_id=str(row.get(id_field) if row.get(id_field) is not None else i),
                input=str(row[input_field]),
                expected=None
                if exp is None
                else (exp if isinstance(exp, str) else orjson.dumps(exp).decode()),
                context=[str(c) for c in (ctx or [])],
                cohort={k: row[k] for k in cohort_fields if row.get(k) is not None},
                metadata={k: v for k, v in row.items() if k not in known and v is not None},
            )
        )
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{p.name}: duplicate item ids")
    return items


def save_dataset(
    con: duckdb.DuckDBPyConnection,
    name: str,
    items: Iterable[DatasetItem],
    *,
    version: str = "1",
    description: str | None = None,
    cohort_fields: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
) -> Dataset:
    """Store (or replace) one version of a dataset."""
    items = list(items)
    if not name:
        raise DatasetError("dataset name is empty")
    counts = Counter(it.item_id for it in items)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        raise DatasetError(f"repeated item ids in dataset {name!r}: {repeated[:5]}")
    now = datetime.now(UTC).replace(tzinfo=None)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM dataset_items WHERE dataset = ? AND version = ?", [name, version])
        con.execute("DELETE FROM datasets WHERE name = ? AND version = ?", [name, version])
        con.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?)",
            [
                name,
                version,
                description,
                orjson.dumps(list(cohort_fields)).decode(),
                orjson.dumps(metadata or {}).decode(),
                now,
            ],
        )
        _insert_items(con, name, version, items)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return Dataset(name, version, items, description, list(cohort_fields), metadata or {})


def _insert_items(
    con: duckdb.DuckDBPyConnection, name: str, version: str, items: Sequence[DatasetItem]
) -> None:
    """A version's items, in one statement."""
    if not items:
        return

    def text(values: Iterable[str | None]) -> pa.Array:
        return pa.array(list(values), pa.string())

    def json(values: Iterable[Any]) -> pa.Array:
        return text(orjson.dumps(v).decode() for v in values)

    table = pa.table(
        {
            "dataset": text([name] * len(items)),
            "version": text([version] * len(items)),
            "item_id": text(it.item_id for it in items),
            "input": text(it.input for it in items),
            "expected": text(it.expected for it in items),
            "context": json(it.context for it in items),
            "cohort": json(it.cohort for it in items),
            "metadata": json(it.metadata for it in items),
        }
    )
    insert_rows(con, "dataset_items", table)


def load_dataset(con: duckdb.DuckDBPyConnection, name: str, version: str | None = None) -> Dataset:
    """A stored dataset (latest version by creation time unless ``version``)."""
    row = con.execute(
        "SELECT version, description, cohort_fields, metadata FROM datasets WHERE name = ? "
        "AND (? IS NULL OR version = ?) ORDER BY created_at DESC LIMIT 1",
        [name, version, version],
    ).fetchone()
    if row is None:
        raise DatasetError(f"no dataset {name!r}" + (f" version {version!r}" if version else ""))
    ver = str(row[0])
    items = [
        DatasetItem(
            r[0],
            r[1],
            r[2],
            orjson.loads(r[3] or "[]"),
            orjson.loads(r[4] or "{}"),
            orjson.loads(r[5] or "{}"),
        )
        for r in con.execute(
            "SELECT item_id, input, expected, context, cohort, metadata FROM dataset_items "
            "WHERE dataset = ? AND version = ? ORDER BY item_id",
            [name, ver],
        ).fetchall()
    ]
    return Dataset(
        name, ver, items, row[1], orjson.loads(row[2] or "[]"), orjson.loads(row[3] or "{}")
    )


def list_datasets(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT d.name, d.version, d.description, d.created_at, count(i.item_id) FROM datasets d "
        "LEFT JOIN dataset_items i ON i.dataset = d.name AND i.version = d.version "
        "GROUP BY ALL ORDER BY d.name, d.created_at"
    ).fetchall()
    return [
        {
            "name": r[0],
            "version": r[1],
            "description": r[2],
            "created_at": r[3].isoformat() if r[3] else None,
            "items": int(r[4]),
        }
        for r in rows
    ]
