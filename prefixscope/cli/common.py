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

from prefixscope.analytics.detection_config import DetectionConfig, DetectionConfigError
from prefixscope.analytics.slices import SliceConfig

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


def detection_config(
    alpha: float,
    min_n: int,
    min_effect: Sequence[str],
    score_min_effect: float,
    sequential: str,
    window: str = "1d",
    window_delay: str = "0s",
    slices: SliceConfig | None = None,
) -> DetectionConfig:
    """The flags as a detection config (:meth:`DetectionConfig.from_options`, as the API)."""
    s = slices or SliceConfig()
    try:
        return DetectionConfig.from_options(
            alpha=alpha,
            min_n=min_n,
            min_effect=min_effect,
            score_min_effect=score_min_effect,
            sequential=sequential,
            window=window,
            window_delay=window_delay,
            slice_depth=s.depth,
            max_slices=s.max_slices,
            full_slices=s.full,
        )
    except DetectionConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def options_config() -> DetectionConfig:
    """The running command's :func:`detection_options` as a detection config."""
    p = click.get_current_context().params
    return detection_config(
        p["alpha"],
        p["min_n"],
        p["min_effect"],
        p["score_min_effect"],
        p["sequential"],
        p["window"],
        p["window_delay"],
        SliceConfig(p["slice_depth"], p["max_slices"], p["full_slices"]),
    )


def detection_options(fn: Any) -> Any:
    for opt in reversed(
        [
            click.option(
                "--alpha",
                type=float,
                default=0.05,
                show_default=True,
                help="False-discovery rate across all comparisons of the run.",
            ),
            click.option(
                "--min-n",
                type=int,
                default=100,
                show_default=True,
                help="Minimum requests (or scored requests) on each side of a comparison.",
            ),
            click.option(
                "--min-effect",
                multiple=True,
                metavar="METRIC=VALUE",
                help="Minimum worsening for a metric (absolute for rates/scores, relative "
                "for latency quantiles), e.g. --min-effect latency_p99=0.2. Repeatable.",
            ),
            click.option(
                "--score-min-effect",
                type=float,
                default=0.05,
                show_default=True,
                help="Minimum worsening of evaluator scores without their own --min-effect.",
            ),
            click.option(
                "--sequential",
                type=click.Choice(["msprt", "fixed", "windows"]),
                default="msprt",
                show_default=True,
                help="How repeated runs stay safe. msprt: always-valid p-values on growing "
                "data; windows: fixed-horizon tests of the latest completed --window (re-runs "
                "re-test the same window); fixed: one fixed-horizon look at [since, until).",
            ),
            click.option(
                "--window",
                default="1d",
                show_default=True,
                help="With --sequential windows: window length (30m, 6h, 1d, 1w); windows "
                "are [k W, (k+1) W) of span start time, aligned to the Unix epoch in UTC. "
                "--until is the run's clock (default now); --since must not cut the window.",
            ),
            click.option(
                "--window-delay",
                default="0s",
                show_default=True,
                help="With --sequential windows: test a window only once it has been closed "
                "this long (time for late spans, scores and feedback).",
            ),
            click.option(
                "--slice-depth",
                type=click.IntRange(0, 4),
                default=SliceConfig().depth,
                show_default=True,
                help="Cohort keys per tested slice: 1 tests the route and each key, 2 also "
                "each pair of keys (0: only the full cohort combinations, one BH family).",
            ),
            click.option(
                "--max-slices",
                type=click.IntRange(1),
                default=SliceConfig().max_slices,
                show_default=True,
                help="Most slices of two keys or more per variant and route (largest first).",
            ),
            click.option(
                "--full-slices",
                is_flag=True,
                help="Also test every full combination of cohort keys deeper than --slice-depth.",
            ),
        ]
    ):
        fn = opt(fn)
    return fn
