"""``prefixscope lake compact``: merge small Parquet segments, drop duplicate rows.

Per ``<table>/date=…`` partition: read every published segment, keep one row per key
(``(trace_id, span_id)`` for spans, ``id`` for scores and feedback), publish one compacted
file atomically, then delete the inputs. In a table whose copies of a key can land in
different partitions (scores and feedback: ``tables.LakeTable.stable_partition``) the keys of
every partition are read first, and a key's copies other than its first copy
(``tables.FIRST_COPY``, the one readers keep) are dropped wherever they are: a partition that
holds one is rewritten even below ``min_files`` (and deleted when nothing is left in it).

Readers never see a half-written file; between the publish and the deletes a reader may see a
row twice, so readers that need exact counts dedupe on the key (the analytics lake views do).
Safe to run while collectors write: it only touches files that existed when it listed the
partitions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .fs import open_fs, publish_parquet
from .tables import COMPACTED_PREFIX, conform, lake_table
from .tiers import SCHEMA_FILE


class EmbeddedLakeError(ValueError):
    """The lake is an embedded server's cold tier, which compaction would corrupt."""


#: a hidden temporary file older than this was left by a writer that died before publishing
#: it (kill -9, power loss): compaction deletes it (a live writer publishes within seconds)
STALE_TEMP_S = 3600.0


@dataclass(slots=True)
class CompactionReport:
    """What a compaction did: the lake's (``compact``) or the cold tier's (``tier_compact``;
    it leaves no temporary files, so ``stale_temp_files`` stays 0 there)."""

    partitions: int = 0
    files_in: int = 0
    files_out: int = 0
    rows_in: int = 0
    rows_out: int = 0
    stale_temp_files: int = 0

    @property
    def duplicates_removed(self) -> int:
        return self.rows_in - self.rows_out


def _segments(fs: Any, partition: str) -> list[str]:
    names = fs.ls(partition, detail=False)
    return sorted(
        n
        for n in names
        if n.endswith(".parquet") and not n.rsplit("/", 1)[-1].startswith((".", "_"))
    )


def _drop_stale_temps(fs: Any, partition: str, older_than_s: float) -> int:
    """Delete the partition's hidden ``.*.tmp`` files not modified for ``older_than_s``."""
    dropped = 0
    now = time.time()
    for info in fs.ls(partition, detail=True):
        name = str(info["name"]).rsplit("/", 1)[-1]
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        mtime = info.get("mtime") or info.get("LastModified")
        stamp = mtime.timestamp() if hasattr(mtime, "timestamp") else mtime
        if stamp is not None and now - float(stamp) > older_than_s:
            fs.rm(info["name"])
            dropped += 1
    return dropped


def _later_copies(fs: Any, key: tuple[str, ...], files: list[str]) -> dict[str, np.ndarray]:
    """Per file, the positions of its rows that are not their key's first copy among
    ``files`` (``tables.FIRST_COPY``: by file name, then path, then row)."""
    frames = []
    for i, f in enumerate(files):
        with fs.open(f, "rb") as fh:
            keys = pq.read_table(fh, columns=list(key))
        frames.append(
            pl.DataFrame(pl.from_arrow(keys)).with_columns(
                _name=pl.lit(f.rpartition("/")[2]),
                _path=pl.lit(f),
                _file=pl.lit(i, dtype=pl.Int32),
                _row=pl.int_range(pl.len(), dtype=pl.Int64),
            )
        )
    if not frames:
        return {}
    ranked = pl.concat(frames).sort("_name", "_path", "_row")
    later = ranked.filter(~pl.struct(list(key)).is_first_distinct())
    return {
        files[int(i)]: np.asarray(rows, dtype=np.int64)
        for i, rows in later.group_by("_file").agg(pl.col("_row")).iter_rows()
    }


def _read(fs: Any, path: str, schema: pa.Schema, drop: np.ndarray | None) -> pa.Table:
    with fs.open(path, "rb") as fh:
        table = conform(pq.read_table(fh), schema)
    if drop is None or not len(drop):
        return table
    keep = np.ones(table.num_rows, dtype=bool)
    keep[drop] = False
    return table.filter(pa.array(keep))


def compact(
    lake_url: str,
    *,
    table: str = "spans",
    min_files: int = 2,
    row_group_rows: int = 1_000_000,
    storage_options: dict[str, Any] | None = None,
    stale_temp_s: float = STALE_TEMP_S,
) -> CompactionReport:
    spec = lake_table(table)
    fs, root = open_fs(lake_url, storage_options)
    report = CompactionReport()
    base = f"{root}/{table}"
    if not fs.exists(base):
        return report
    if fs.exists(f"{base}/{SCHEMA_FILE}"):
        raise EmbeddedLakeError(
            f"{lake_url} is the cold tier of an embedded PrefixScope store (it has "
            f"{table}/{SCHEMA_FILE}): the server compacts its own cold tier, and files merged "
            "here would cross the hot/cold boundary. This command is for lakes written by "
            "--store lake."
        )
    listing: dict[str, list[str]] = {}
    for partition in sorted(p for p in fs.ls(base, detail=False) if "date=" in p):
        report.stale_temp_files += _drop_stale_temps(fs, partition, stale_temp_s)
        listing[partition] = _segments(fs, partition)
    later: dict[str, np.ndarray] = {}
    if not spec.stable_partition:
        later = _later_copies(fs, spec.key, [f for files in listing.values() for f in files])
    for partition, files in listing.items():
        if len(files) < min_files and not any(f in later for f in files):
            continue
        tables = [_read(fs, f, spec.schema, later.get(f)) for f in files]
        rows_in = sum(t.num_rows for t in tables) + sum(len(later.get(f, ())) for f in files)
        frames = [pl.DataFrame(pl.from_arrow(t)) for t in tables]
        df = pl.concat(frames, how="vertical_relaxed")
        df = df.unique(subset=list(spec.key), keep="first", maintain_order=True)
        df = df.sort(spec.time_column)
        if df.height:
            out = f"{partition}/{COMPACTED_PREFIX}{uuid.uuid4().hex}.parquet"
            publish_parquet(fs, df.to_arrow(), out, row_group_rows)
            report.files_out += 1
        for f in files:
            fs.rm(f)
        report.partitions += 1
        report.files_in += len(files)
        report.rows_in += rows_in
        report.rows_out += df.height
    return report
