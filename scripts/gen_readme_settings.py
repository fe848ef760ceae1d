"""Regenerate the settings table in README.md (between the SETTINGS markers) from Settings."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from prefixscope.cli import _FLAG_NAMES
from prefixscope.config import Settings

ROOT = Path(__file__).resolve().parents[1]


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


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = re.sub(
        r"<!-- SETTINGS -->.*<!-- /SETTINGS -->",
        lambda _: f"<!-- SETTINGS -->\n{table()}\n<!-- /SETTINGS -->",
        text,
        flags=re.S,
    )
    readme.write_text(new)


if __name__ == "__main__":
    main()
