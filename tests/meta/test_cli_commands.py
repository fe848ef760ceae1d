"""The CLI's optional command groups (``_register_optional`` in ``prefixscope/cli/``): a
missing extra leaves the command listed with the ``pip install`` to run; a broken import
fails loudly instead of silently removing the command."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from prefixscope import cli


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path for throwaway command modules."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("ps_cmdtest_")]:
            del sys.modules[name]


def _module(where: Path, name: str, body: str) -> str:
    (where / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def test_every_shipped_command_is_registered() -> None:
    names = set(cli.main.commands)
    want = {"serve", "lake", "analytics", "replay", "datasets", "evaluate", "demo", "sql", "alerts"}
    assert want <= names
    lake = cli.main.commands["lake"]
    assert isinstance(lake, click.Group)
    assert {"compact", "retention", "load", "register"} <= set(lake.commands)


def test_a_missing_extra_leaves_the_command_listed_with_the_install_to_run(
    modules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(cli.EXTRA_OF, "ps_cmdtest_absent_pkg", "hf")
    name = _module(
        modules,
        "ps_cmdtest_needs_extra",
        """
        import click
        import ps_cmdtest_absent_pkg

        @click.command("tryme")
        def tryme_command() -> None:
            pass
        """,
    )
    group = click.Group("g")
    cli._register_optional(group, name, {"tryme_command": "tryme"})
    assert "not installed" in (group.commands["tryme"].help or "")
    result = CliRunner().invoke(group, ["tryme", "--any", "arg"])
    assert result.exit_code == 1
    assert "pip install 'prefixscope[hf]'" in result.output
    assert "ps_cmdtest_absent_pkg is not installed" in result.output


def test_a_package_no_extra_provides_fails_loudly(modules: Path) -> None:
    name = _module(modules, "ps_cmdtest_unknown_dep", "import ps_cmdtest_nobody_ships_this\n")
    with pytest.raises(ModuleNotFoundError, match="ps_cmdtest_nobody_ships_this"):
        cli._register_optional(click.Group("g"), name, {"x": "x"})


def test_our_own_broken_import_fails_loudly(modules: Path) -> None:
    name = _module(modules, "ps_cmdtest_broken", "from prefixscope.config import NoSuchName\n")
    with pytest.raises(ImportError, match="NoSuchName"):
        cli._register_optional(click.Group("g"), name, {"x": "x"})
    with pytest.raises(ModuleNotFoundError):
        cli._register_optional(click.Group("g"), "prefixscope.no_such_module", {"x": "x"})


def test_a_renamed_command_fails_loudly(modules: Path) -> None:
    name = _module(
        modules,
        "ps_cmdtest_renamed",
        """
        import click

        @click.command("new-name")
        def cmd() -> None:
            pass
        """,
    )
    with pytest.raises(TypeError, match="old-name"):
        cli._register_optional(click.Group("g"), name, {"cmd": "old-name"})
    with pytest.raises(AttributeError):
        cli._register_optional(click.Group("g"), name, {"missing": "missing"})
