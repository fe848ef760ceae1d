"""CLI: ``prefixscope datasets load|list`` and ``prefixscope replay`` (re-exported by
:mod:`.cli`)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from prefixscope.cli.common import DATA_DIR, console, fmt, open_store


@click.group("datasets")
def datasets_group() -> None:
    """Golden datasets kept in the store."""


@datasets_group.command("load")
@DATA_DIR
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Dataset name.")
@click.option("--version", default="1", show_default=True, help="Dataset version.")
@click.option("--cohort-fields", default="", help="Comma-separated item fields that are cohorts.")
@click.option("--description", default=None, help="Free-text description.")
@click.option("--guardrail", is_flag=True, help="Mark as a guardrail suite (compliance report).")
def datasets_load(
    data_dir: Path,
    path: Path,
    name: str,
    version: str,
    cohort_fields: str,
    description: str | None,
    guardrail: bool,
) -> None:
    """Load a JSONL/CSV/Parquet file as a golden dataset."""
    from prefixscope.analytics.datasets import read_items, save_dataset

    fields = [f for f in cohort_fields.split(",") if f]
    items = read_items(path, cohort_fields=fields)
    with open_store(data_dir) as con:
        save_dataset(
            con,
            name,
            items,
            version=version,
            description=description,
            cohort_fields=fields,
            metadata={"kind": "guardrail"} if guardrail else {},
        )
    console.print(f"loaded {len(items)} items into {name}@{version}")


@datasets_group.command("list")
@DATA_DIR
def datasets_list(data_dir: Path) -> None:
    """List stored datasets."""
    from prefixscope.analytics.datasets import list_datasets

    with open_store(data_dir) as con:
        rows = list_datasets(con)
    t = Table(title="datasets")
    for col in ("name", "version", "items", "created", "description"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["name"], r["version"], str(r["items"]), fmt(r["created_at"]), fmt(r["description"])
        )
    console.print(t)


def _load_callable(spec: str) -> Any:
    mod, _, attr = spec.partition(":")
    if not attr:
        raise click.BadParameter(f"expected module:function, got {spec!r}")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {spec!r}: {exc}") from None


def _evaluators(names: str) -> list[Any]:
    from prefixscope.analytics.online import resolve_evaluators

    try:
        return list(resolve_evaluators(names.split(",")))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--evaluators") from None


@click.command("replay")
@DATA_DIR
@click.option(
    "--dataset",
    required=True,
    help="Name of a stored dataset (or the name to load --from FILE under).",
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Load the dataset from this JSONL/CSV/Parquet file first.",
)
@click.option("--variants", required=True, help="Comma-separated variants, e.g. base,cardiology.")
@click.option(
    "--generator",
    required=True,
    metavar="MODULE:FUNCTION",
    help="Generation callable fn(prompt, variant) -> str.",
)
@click.option(
    "--evaluators",
    default="TaskCompletion",
    show_default=True,
    help="Comma-separated evaluators (built-in names or module:Class).",
)
@click.option("--run-id", default=None, help="Resume this replay run (default: a new run).")
@click.option("--route", default="replay", show_default=True, help="Route recorded on spans.")
@click.option("--base-model", default=None, help="Base model name recorded on spans.")
def replay_command(
    data_dir: Path,
    dataset: str,
    from_file: Path | None,
    variants: str,
    generator: str,
    evaluators: str,
    run_id: str | None,
    route: str,
    base_model: str | None,
) -> None:
    """Replay a golden dataset on the base model and each variant, traced and scored."""
    from prefixscope.analytics.datasets import read_items, save_dataset
    from prefixscope.analytics.replay import replay

    fn = _load_callable(generator)
    evs = _evaluators(evaluators)
    with open_store(data_dir) as con:
        if from_file is not None:
            save_dataset(con, dataset, read_items(from_file))
        rep = replay(
            con,
            dataset,
            [v.strip() for v in variants.split(",") if v.strip()],
            fn,
            evaluators=evs,
            run_id=run_id,
            route=route,
            base_model=base_model,
        )
    console.print(
        f"replay {rep.run_id}: {rep.done} done, {rep.skipped} skipped (resumed), "
        f"{rep.failed} failed"
    )
    for e in rep.errors[:10]:
        console.print(f"  [red]{e}[/red]")
