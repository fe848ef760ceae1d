"""The file system under the lake, and the one way a file is published into it.

Readers of the lake list ``*.parquet`` files and skip names that start with ``.`` or ``_``, so a
writer that wants readers to see a whole file or nothing writes it under a hidden temporary
name next to its final one and then publishes it: fsync the file, rename it over the final
name, fsync the directory (so the rename survives a power cut too). Every writer of the lake —
the lake sink, the embedded server's roll and tier moves, both compactions, the schema files —
goes through :func:`publish` (local disk) or :func:`publish_parquet` (local or object storage).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def open_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """An fsspec filesystem and the root path inside it, for a local path or ``s3://…``."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def s3_options_from_env() -> dict[str, Any]:
    """S3 settings from the environment (``PREFIXSCOPE_S3_ENDPOINT_URL`` for S3-compatible
    servers; credentials from the usual AWS variables)."""
    endpoint = os.environ.get("PREFIXSCOPE_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def fsync(path: str | Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(final: str | Path) -> Path:
    """The hidden name a file is written under before :func:`publish` renames it to ``final``
    (in the same directory: a rename within one file system is atomic)."""
    final = Path(final)
    return final.with_name(f".{final.name}.tmp")


def publish(tmp: str | Path, final: str | Path) -> None:
    """Make the finished file ``tmp`` visible as ``final``, whole, durably: fsync it, rename it
    over ``final``, fsync the directory."""
    fsync(tmp)
    os.replace(tmp, final)
    fsync(Path(final).parent)


def publish_parquet(fs: Any, table: pa.Table, path: str, row_group_rows: int) -> None:
    """Write ``table`` as zstd Parquet at ``path`` so that readers see the whole file or nothing.

    Local: :func:`temporary_name`, then :func:`publish`. Object storage: a single PUT (or a
    completed multipart upload) makes the object visible only when it is whole.
    """
    if is_local(fs):
        os.makedirs(Path(path).parent, exist_ok=True)
        tmp = temporary_name(path)
        try:
            pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_rows)
            publish(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    with fs.open(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd", row_group_size=row_group_rows)
