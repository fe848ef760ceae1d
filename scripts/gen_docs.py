"""Regenerate the generated parts of the docs site from the code.

* ``docs/reference/configuration.md``: the settings table (between the SETTINGS markers), from
  :class:`~prefixscope.config.Settings`;
* ``docs/reference/cli.md``: every ``prefixscope`` command and its options (between the CLI
  markers), from the click commands.

``tests/meta/test_readme.py`` fails when either is stale: run
``.venv/bin/python scripts/gen_docs.py`` after changing a setting, a command or a help text.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click

from prefixscope.cli import main as cli_main
from prefixscope.cli.serve import _FLAG_NAMES
from prefixscope.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION = ROOT / "docs" / "reference" / "configuration.md"
CLI = ROOT / "docs" / "reference" / "cli.md"


def table() -> str:
    rows = ["| setting | flag | env | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else "[]"
        flag = "--" + _FLAG_NAMES.get(f.name, f.name.replace("_", "-"))
        rows.append(
            f"| `{f.name}` | `{flag}` | `PREFIXSCOPE_{f.name.upper()}` | `{default}` | "
            f"{Settings.help_for(f.name)} |"
        )
    return "\n".join(rows)


def _cell(text: str) -> str:
    """One line of a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _commands(
    group: click.Group, path: list[str], ctx: click.Context
) -> list[tuple[list[str], click.Command, click.Context]]:
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx)
        out.append(([*path, name], cmd, sub))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, [*path, name], sub)
    return out


def cli_reference() -> str:
    root = click.Context(cli_main, info_name="prefixscope")
    parts: list[str] = []
    for path, cmd, ctx in _commands(cli_main, ["prefixscope"], root):
        name = " ".join(path)
        parts.append(f"## `{name}`")
        parts.append("")
        parts.append(f"`{name} {' '.join(cmd.collect_usage_pieces(ctx))}`".replace("  ", " "))
        parts.append("")
        help_text = (cmd.help or cmd.short_help or "").split("\f")[0]
        paragraphs = [" ".join(p.split()) for p in help_text.strip().split("\n\n") if p.strip()]
        parts += [p.replace("``", "`") + "\n" for p in paragraphs]
        if name == "prefixscope serve":
            parts.append(
                "Every setting is an option of `serve`: see the "
                "[configuration reference](configuration.md).\n"
            )
            continue
        rows = []
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.hidden or p.name == "help":
                continue
            flags = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            rows.append(f"| {flags} | {_cell(p.help or '')} |")
        if rows:
            parts += ["| option | meaning |", "| --- | --- |", *rows, ""]
    return "\n".join(parts).rstrip()


def _replace(path: Path, marker: str, body: str) -> None:
    text = path.read_text()
    new = re.sub(
        rf"<!-- {marker} -->.*<!-- /{marker} -->",
        lambda _: f"<!-- {marker} -->\n{body}\n<!-- /{marker} -->",
        text,
        flags=re.S,
    )
    path.write_text(new)


def main() -> None:
    _replace(CONFIGURATION, "SETTINGS", table())
    _replace(CLI, "CLI", cli_reference())


if __name__ == "__main__":
    main()
