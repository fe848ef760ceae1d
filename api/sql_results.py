"""Reading a query's answer within its caps: JSON-safe Python rows (:func:`fetch_rows`) or
DuckDB's Arrow record batches, read one vector at a time with no Python row built
(:func:`fetch_arrow`); both stop at the row cap and at the byte cap, counted while rows
stream."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from .jsonsafe import json_safe_row


@dataclass(slots=True)
class SqlResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float


@dataclass(slots=True)
class ArrowResult:
    """A query's answer as Arrow record batches, straight from DuckDB (no Python rows)."""

    schema: pa.Schema
    batches: list[pa.RecordBatch]
    #: DuckDB's type of each column (``TIMESTAMP WITH TIME ZONE``, ``JSON``, ...)
    types: list[str]
    truncated: bool
    #: which cap cut the answer: ``"rows"`` or ``"bytes"`` (None when complete)
    truncated_by: str | None
    num_rows: int
    nbytes: int
    elapsed_ms: float


#: rows per record batch read from DuckDB: one vector, so the byte cap is checked at least
#: every 2,048 rows (one vector's values are bounded: see MAX_AMPLIFIED_BYTES)
ARROW_BATCH_ROWS = 2_048
#: ... and coalesced into batches of up to this many rows / bytes for the writers
COALESCE_ROWS = 65_536
COALESCE_BYTES = 16 * 2**20


def fetch_rows(
    cur: duckdb.DuckDBPyConnection, sql: str, max_rows: int, max_bytes: int
) -> SqlResult:
    """The answer as JSON-safe rows, at most ``max_rows`` rows and ``max_bytes`` (approximate
    JSON bytes), counted while they stream."""
    started = time.perf_counter()
    cur.execute(sql)
    description = cur.description or []
    rows: list[list[Any]] = []
    size = 0
    truncated = False
    while not truncated:
        chunk = cur.fetchmany(min(1024, max_rows + 1 - len(rows)))
        if not chunk:
            break
        for raw in chunk:
            if len(rows) >= max_rows:
                truncated = True
                break
            row = json_safe_row(raw)
            size += _approx_bytes(row)
            if size > max_bytes:
                truncated = True
                break
            rows.append(row)
    return SqlResult(
        columns=[d[0] for d in description],
        types=[str(d[1]) for d in description],
        rows=rows,
        truncated=truncated,
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
    )


def fetch_arrow(
    cur: duckdb.DuckDBPyConnection, sql: str, max_rows: int, max_bytes: int, batch_rows: int
) -> ArrowResult:
    """Record batches from DuckDB's Arrow stream until ``max_rows`` rows or ``max_bytes``
    Arrow bytes (the batch that crosses the byte cap is cut to the rows that fit)."""
    started = time.perf_counter()
    rel = cur.sql(sql)
    types = [str(t) for t in rel.types]
    reader = rel.to_arrow_reader(batch_rows)
    out = _Coalescer(reader.schema)
    rows = size = 0
    truncated_by: str | None = None
    for batch in reader:
        if batch.num_rows == 0:
            continue
        if rows >= max_rows:
            truncated_by = "rows"
            break
        part = batch.slice(0, max_rows - rows) if rows + batch.num_rows > max_rows else batch
        if size + part.nbytes > max_bytes:
            part = part.slice(0, _rows_within(part, max_bytes - size))
            truncated_by = "bytes"
        if part.num_rows:
            out.add(part)
            rows += part.num_rows
            size += part.nbytes
        if truncated_by is None and part.num_rows < batch.num_rows:
            truncated_by = "rows"
        if truncated_by is not None:
            break
    return ArrowResult(
        schema=reader.schema,
        batches=out.finish(),
        types=types,
        truncated=truncated_by is not None,
        truncated_by=truncated_by,
        num_rows=rows,
        nbytes=size,
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
    )


class _Coalescer:
    """Joins DuckDB's small batches into batches of up to COALESCE_ROWS / COALESCE_BYTES
    (fewer, larger batches make the writers' per-batch work negligible)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.done: list[pa.RecordBatch] = []
        self.pending: list[pa.RecordBatch] = []
        self.rows = self.bytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self.rows >= COALESCE_ROWS or self.bytes >= COALESCE_BYTES:
            self._flush()

    def _flush(self) -> None:
        if len(self.pending) == 1:
            self.done.append(self.pending[0])
        elif self.pending:
            table = pa.Table.from_batches(self.pending, self.schema).combine_chunks()
            self.done.extend(table.to_batches())
        self.pending, self.rows, self.bytes = [], 0, 0

    def finish(self) -> list[pa.RecordBatch]:
        self._flush()
        return self.done


def _rows_within(batch: pa.RecordBatch, budget: int) -> int:
    """The most leading rows of ``batch`` whose Arrow bytes fit in ``budget``."""
    lo, hi = 0, batch.num_rows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if batch.slice(0, mid).nbytes <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _approx_bytes(value: Any) -> int:
    if isinstance(value, str | bytes):
        return len(value) + 8
    if isinstance(value, list | tuple):
        return 8 + sum(_approx_bytes(v) for v in value)
    if isinstance(value, dict):
        return 8 + sum(_approx_bytes(k) + _approx_bytes(v) for k, v in value.items())
    return 8
