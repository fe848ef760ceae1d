"""Shared CLI options and helpers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import duckdb
import orjson
from rich.console import Console

DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("prefixscope-data"),
    show_default=True,
    help="PrefixScope data directory (holds prefixscope.duckdb). Stop `prefixscope serve` "
    "first, or use the HTTP API, since only one process may open the store.",
)
SINCE = click.option("--since", default=None, help="Window start: ISO-8601 time or age (24h, 7d).")
UNTIL = click.option("--until", default=None, help="Window end (exclusive): ISO-8601 or age.")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
console = Console()


@contextmanager
def open_store(data_dir: Path, served: Sequence[str] = ()) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on the store; with ``served`` (``--served-model`` declarations) its views apply
    that mapping for this cursor only (nothing stored changes)."""
    from prefixscope.collector.storage.store import Store
    from prefixscope.collector.storage.views import refresh_view

    declared = parse_served(served)
    try:
        store = Store(data_dir)
    except duckdb.IOException as exc:
        raise click.ClickException(f"cannot open the store in {data_dir}: {exc}") from None
    try:
        cur = store.cursor()
        if declared:
            refresh_view(cur, [(d.name, d.prefix_id, d.version) for d in declared])
        yield cur
    finally:
        store.close()


def parse_served(items: Sequence[str]) -> list[Any]:
    """``--served-model`` values as ``ServedModel`` declarations (a usage error otherwise)."""
    from prefixscope.config import ServedModel

    out = []
    for item in items:
        try:
            out.append(ServedModel.parse(item))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--served-model") from None
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_json(obj: Any) -> None:
    click.echo(orjson.dumps(obj, default=str, option=orjson.OPT_INDENT_2).decode())


ENGINE_OPTIONS = (
    click.option(
        "--engine",
        type=click.Choice(["duckdb", "spark"]),
        default="duckdb",
        show_default=True,
        help="Where the SQL runs. spark needs --lake-path (and the [spark] extra).",
    ),
    click.option(
        "--lake-path",
        default=None,
        help="Read spans/scores/feedback from this Parquet lake (a directory or "
        "s3://bucket/prefix) instead of the store in --data-dir.",
    ),
    click.option(
        "--master",
        default="local[2]",
        show_default=True,
        help="Spark master URL (local[N], spark://…, yarn, k8s://…).",
    ),
    click.option(
        "--spark-conf",
        multiple=True,
        metavar="KEY=VALUE",
        help="Extra Spark setting, e.g. spark.driver.memory=4g. Repeatable.",
    ),
    click.option(
        "--served-model",
        "served_models",
        multiple=True,
        metavar="NAME=PREFIX[@VERSION]",
        help="For this run only: spans without prefix.id whose request (else response) model "
        "is NAME are read as that variant over all time, in place of the name's registered "
        "history (base model and type from the registration). Repeatable; stores nothing "
        "(register with PUT /api/v1/prefixes or `prefixscope lake register`).",
    ),
)


def engine_options(fn: Any) -> Any:
    for opt in reversed(ENGINE_OPTIONS):
        fn = opt(fn)
    return fn


def open_engine(
    engine: str,
    lake_path: str | None,
    master: str,
    spark_conf: Sequence[str],
    served: Sequence[str] = (),
) -> Any:
    """The analytics engine over the lake at ``lake_path`` (DuckDB or Spark), with the lake's
    served-name mapping (and ``served``, this run's declarations) applied."""
    from prefixscope.analytics.engines import DuckDBEngine, SparkEngine, spark_session
    from prefixscope.collector.storage.fs import s3_options_from_env

    if lake_path is None:
        raise click.UsageError("--lake-path is required with --engine spark")
    declared = parse_served(served)
    if engine == "duckdb":
        return DuckDBEngine.over_lake(
            lake_path, storage_options=s3_options_from_env(), served=declared
        )
    conf = {}
    for item in spark_conf:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--spark-conf")
        conf[key] = value
    try:
        spark = spark_session(master, conf=conf)
    except ImportError:
        raise click.ClickException(
            "--engine spark needs PySpark: pip install 'prefixscope[spark]'"
        ) from None
    return SparkEngine.over_lake(
        spark, lake_path, storage_options=s3_options_from_env(), served=declared
    )
