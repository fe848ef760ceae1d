"""``prefixscope lake load`` and ``prefixscope lake register``: batch writes into a lake.

They validate exactly as the API does (``ScoreIn``, ``FeedbackIn``, ``PrefixRegistration``) and
write what a lake collector writes (``annotation_store.write_lake``, ``LakeRegistry``), so a
batch job and an HTTP client leave the same rows, with the same ids.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson
from pydantic import TypeAdapter, ValidationError

from prefixscope.api.models import FeedbackIn, PrefixRegistration, ScoreIn
from prefixscope.config import ConfigError, ServedModel

LAKE_PATH = click.option(
    "--lake-path",
    required=True,
    help="Lake location: a directory or s3://bucket/prefix "
    "(S3-compatible endpoint from PREFIXSCOPE_S3_ENDPOINT_URL).",
)
#: records validated and published per segment
CHUNK = 100_000
#: validation errors shown before giving up on a file
MAX_ERRORS = 20


@click.group("lake")
def lake_group() -> None:
    """Maintain a Parquet lake written by collectors in ``--store lake`` mode."""


@lake_group.command("compact")
@click.option(
    "--lake-path",
    required=True,
    help="Lake location: a directory or s3://bucket/prefix "
    "(S3-compatible endpoint from PREFIXSCOPE_S3_ENDPOINT_URL).",
)
@click.option(
    "--min-files",
    type=int,
    default=2,
    show_default=True,
    help="Compact a date partition only when it has at least this many files (scores and "
    "feedback: also when it holds a later copy of an id first published in another one).",
)
@click.option(
    "--row-group-rows",
    type=int,
    default=1_000_000,
    show_default=True,
    help="Rows per Parquet row group in compacted files.",
)
@click.option(
    "--table",
    "tables",
    type=click.Choice(["spans", "scores", "feedback", "prefixes", "served_models"]),
    multiple=True,
    help="Lake table to compact (repeatable; default: all of them).",
)
def lake_compact(
    lake_path: str, min_files: int, row_group_rows: int, tables: tuple[str, ...]
) -> None:
    """Merge small segments per date partition and drop duplicate rows: spans by
    (trace_id, span_id), scores, feedback and registrations by id, served-name mappings by
    (name, valid_from). Scores and feedback keep one copy per id across partitions (the
    first published)."""
    from prefixscope.collector.storage.compact import EmbeddedLakeError, compact
    from prefixscope.collector.storage.fs import s3_options_from_env

    for table in tables or ("spans", "scores", "feedback", "prefixes", "served_models"):
        try:
            report = compact(
                lake_path,
                table=table,
                min_files=min_files,
                row_group_rows=row_group_rows,
                storage_options=s3_options_from_env(),
            )
        except EmbeddedLakeError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(
            f"{table}: compacted {report.partitions} partitions: {report.files_in} files -> "
            f"{report.files_out}, {report.rows_in} rows -> {report.rows_out} "
            f"({report.duplicates_removed} duplicates removed"
            + (
                f", {report.stale_temp_files} stale temporary files deleted)"
                if report.stale_temp_files
                else ")"
            )
        )


@lake_group.command("retention")
@click.option(
    "--lake-path", required=True, help="Lake location: a directory or s3://bucket/prefix."
)
@click.option(
    "--retention", required=True, help="Drop date partitions older than this, e.g. 30d or 12w."
)
@click.option("--dry-run", is_flag=True, help="List what would be dropped; drop nothing.")
def lake_retention(lake_path: str, retention: str, dry_run: bool) -> None:
    """Drop whole date partitions of spans, scores and feedback older than --retention (the
    rule ``serve --retention`` applies; a partition partly inside the window is kept)."""
    from prefixscope.collector.storage.fs import s3_options_from_env
    from prefixscope.collector.storage.retention import apply_to_lake, cutoff_for
    from prefixscope.config import duration

    try:
        cutoff = cutoff_for(duration(retention, "--retention"))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--retention") from None
    report = apply_to_lake(
        lake_path, cutoff, dry_run=dry_run, storage_options=s3_options_from_env()
    )
    verb = "would drop" if dry_run else "dropped"
    click.echo(f"cutoff {cutoff.isoformat()} UTC")
    for table in ("spans", "scores", "feedback"):
        days = report.partitions.get(table, [])
        click.echo(
            f"{table}: {verb} {len(days)} partitions"
            + (f" ({days[0]} .. {days[-1]})" if days else "")
        )


def _rows(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """``(row number, record)`` of a JSONL, CSV or Parquet file (1-based; CSV counts its
    header as row 1, as a spreadsheet does)."""
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}.get(
            suffix, ""
        )
        if not fmt:
            raise click.BadParameter(
                f"cannot tell the format of {path.name}: use --format jsonl|csv|parquet",
                param_hint="FILE",
            )
    if fmt == "parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK):
            for rec in batch.to_pylist():
                n += 1
                yield n, {k: v for k, v in rec.items() if v is not None}
        return
    with path.open("rb") as fh:
        if fmt == "jsonl":
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield n, orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield n, _Broken(f"not JSON: {exc}")
            return
        reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8", newline=""))
        for n, rec in enumerate(reader, 2):
            if None in rec:
                yield n, _Broken("more fields than the header names")
                continue
            yield n, {k: v for k, v in rec.items() if v not in ("", None)}


class _Broken:
    def __init__(self, why: str) -> None:
        self.why = why


@lake_group.command("load")
@click.argument("table", type=click.Choice(["scores", "feedback"]))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@LAKE_PATH
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv", "parquet"]),
    default="auto",
    show_default=True,
    help="File format (auto: from the extension .jsonl/.ndjson, .csv, .parquet).",
)
def load_command(table: str, file: Path, lake_path: str, fmt: str) -> None:
    """Publish scores or feedback from FILE (JSONL, CSV or Parquet) to the lake.

    Each record has the fields of POST /api/v1/scores (or /feedback) and is validated the same
    way; a file with any invalid record writes nothing (the first errors are listed, with their
    row numbers). Records without an id get the API's content-derived id, so loading a file
    twice adds nothing once readers or `prefixscope lake compact` remove the copies."""
    from prefixscope.api.annotation_store import write_lake
    from prefixscope.collector.storage.fs import s3_options_from_env

    adapter: TypeAdapter[Any] = TypeAdapter(ScoreIn if table == "scores" else FeedbackIn)
    items: list[Any] = []
    errors: list[str] = []
    for n, rec in _rows(file, fmt):
        if isinstance(rec, _Broken):
            errors.append(f"row {n}: {rec.why}")
        else:
            try:
                items.append(adapter.validate_python(rec))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "record"
                errors.append(f"row {n}: {where}: {first.get('msg')}")
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        shown = "\n  ".join(errors)
        more = " (stopped at the first 20)" if len(errors) >= MAX_ERRORS else ""
        raise click.ClickException(
            f"{file.name}: invalid records{more}, nothing written:\n  {shown}"
        )
    options = s3_options_from_env()
    written = 0
    for start in range(0, len(items), CHUNK):
        result = write_lake(lake_path, table, items[start : start + CHUNK], storage_options=options)
        written += result.inserted
    click.echo(f"{table}: {len(items)} records read, {written} published to {lake_path}")


@lake_group.command("register")
@click.argument("prefix_id", required=False)
@LAKE_PATH
@click.option("--base-model", default=None, help="The base model the variant is tuned from.")
@click.option("--version", "version", default=None, help="The variant's current version.")
@click.option("--prefix-type", default=None, help="prefix_tuning, lora, ...")
@click.option("--owner", default=None)
@click.option("--specialty", default=None)
@click.option("--training-corpus", default=None)
@click.option("--adapter-hash", default=None)
@click.option("--status", default=None, help="registered (default), active, canary, retired...")
@click.option("--metadata", default=None, help="A JSON object of your own fields.")
@click.option(
    "--served-model-name",
    "names",
    multiple=True,
    help="A model name the variant is served under (vLLM --lora-modules NAME=...): spans "
    "without prefix.id whose request (else response) model is NAME are read as this variant. "
    "Repeatable; when given, these are all its names (others stop matching); when omitted, "
    "its current names stay and follow the new version.",
)
@click.option(
    "--served-model",
    "served",
    multiple=True,
    metavar="NAME=PREFIX[@VERSION]",
    help="Map one more name without replacing the variant's others, as `serve --served-model` "
    "does (base model and type from the registration). Repeatable; may be used alone.",
)
def register_command(
    prefix_id: str | None,
    lake_path: str,
    names: tuple[str, ...],
    served: tuple[str, ...],
    metadata: str | None,
    **fields: Any,
) -> None:
    """Register (or replace) PREFIX_ID in the lake's registry, as PUT /api/v1/prefixes/{id}
    does on a lake collector; and/or map served names with --served-model."""
    from prefixscope.collector.storage.fs import s3_options_from_env
    from prefixscope.collector.storage.lake_registry import LakeRegistry

    if prefix_id is None and not served:
        raise click.UsageError("give PREFIX_ID, --served-model, or both")
    registry = LakeRegistry(lake_path, storage_options=s3_options_from_env())
    if prefix_id is not None:
        try:
            body = PrefixRegistration(
                **{k: v for k, v in fields.items() if v is not None},
                metadata=json.loads(metadata) if metadata else {},
                served_model_names=list(names) if names else None,
            )
        except (ValidationError, json.JSONDecodeError) as exc:
            raise click.BadParameter(str(exc)) from None
        created, reg = registry.register(prefix_id, body.model_dump())
        click.echo(
            f"{prefix_id}: {'registered' if created else 'updated'} "
            f"(version {reg.values.get('version') or '-'}, "
            f"served names: {', '.join(reg.served_model_names) or '-'})"
        )
    if served:
        try:
            declared = [ServedModel.parse(s) for s in served]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--served-model") from None
        changed = registry.declare_served(declared)
        click.echo(f"served names changed: {', '.join(changed) or 'none'}")
