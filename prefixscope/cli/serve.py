"""``prefixscope serve``: every :class:`~prefixscope.config.Settings` field as a flag (the
configuration reference is generated from them), and the server started with them."""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

import click

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


@click.command("serve")
@settings_options
def serve_command(config_file: str | None, **flags: Any) -> None:
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
