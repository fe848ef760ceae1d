"""Keep the README and the docs site true: the settings, metrics, commands, make targets,
benchmark flags and repository paths they name must exist, and back; the generated reference
pages must be current.

The README holds the pitch, the two commands, the instrumentation example and the layout;
everything else lives in ``docs/`` (``mkdocs.yml``). ``scripts/check`` builds that site with
``mkdocs build --strict`` (broken links and pages left out of the nav fail there)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from functools import cache

import pytest

from prefixscope.config import Settings
from prefixscope.metrics import Metrics
from tests.support.paths import ROOT as REPO_ROOT
from tests.support.serverproc import ServerProcess

ROOT = REPO_ROOT
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PAGES = {p.relative_to(ROOT).as_posix(): p.read_text() for p in sorted(DOCS.rglob("*.md"))}
#: every text a reader is told to follow: the README and every page of the site
TEXTS = {"README.md": README, **PAGES}
ALL = "\n".join(TEXTS.values())
CLI = [sys.executable, "-m", "prefixscope.cli"]
CONFIGURATION = PAGES["docs/reference/configuration.md"]
METRICS = PAGES["docs/reference/metrics.md"]


def _gen_docs():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(text: str, marker: str) -> str:
    m = re.search(rf"<!-- {marker} -->\n(.*)\n<!-- /{marker} -->", text, re.S)
    assert m, f"no {marker} markers"
    return m.group(1)


def test_every_setting_is_documented() -> None:
    missing = [f.name for f in dataclasses.fields(Settings) if f"`{f.name}`" not in CONFIGURATION]
    assert not missing, f"settings missing from docs/reference/configuration.md: {missing}"


def test_generated_reference_pages_are_current() -> None:
    gen = _gen_docs()
    hint = "stale: run .venv/bin/python scripts/gen_docs.py"
    assert _block(CONFIGURATION, "SETTINGS") == gen.table(), f"settings table {hint}"
    cli = PAGES["docs/reference/cli.md"]
    assert _block(cli, "CLI") == gen.cli_reference(), f"CLI reference {hint}"


def _metric_names() -> set[str]:
    """Every family the server exports: the server's own, the per-variant series and the
    memory gauges read at scrape time."""
    from prefixscope.collector.metrics.memory import DedupeCollector, MemoryCollector
    from prefixscope.collector.metrics.variants import VariantMetrics

    return (
        {m.name for m in Metrics().registry.collect()}
        | {m.name for m in VariantMetrics().collect()}
        | {m.name for m in MemoryCollector(None, list).describe()}
        | {m.name for m in DedupeCollector.families()}
    )


def test_every_metric_is_documented() -> None:
    names = _metric_names()
    missing = sorted(n for n in names if n not in METRICS)
    assert not missing, f"metrics missing from docs/reference/metrics.md: {missing}"


def test_docs_name_no_unknown_metric() -> None:
    names = _metric_names()
    for page, text in TEXTS.items():
        mentioned = set(re.findall(r"`(prefixscope_[a-z_]+?)(?:_total)?(?:\{[^}]*\})?`", text))
        unknown = sorted(n for n in mentioned if n not in names)
        assert not unknown, f"{page} mentions metrics that do not exist: {unknown}"


def _commands() -> set[tuple[str, str]]:
    return set(re.findall(r"prefixscope ([a-z][a-z-]+)(?: ([a-z][a-z-]+))?", ALL))


def test_docs_prefixscope_subcommands_exist() -> None:
    """Every ``prefixscope <command> [<sub>]`` the pages give is a command whose help renders
    (in-process through the click tree; the entry point itself runs once as a process)."""
    from click.testing import CliRunner

    from prefixscope.cli import main

    proc = subprocess.run(
        [sys.executable, "-m", "prefixscope.cli", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    commands = _commands()
    assert commands
    runner = CliRunner()
    for cmd, sub in sorted(commands):
        args = [cmd, sub] if sub and sub not in {"demo", "serve"} else [cmd]
        result = runner.invoke(main, [*args, "--help"])
        if result.exit_code != 0 and len(args) == 2:  # "prefixscope serve data" etc.
            result = runner.invoke(main, [cmd, "--help"])
        assert result.exit_code == 0, f"`prefixscope {' '.join(args)}` in the docs: {result.output}"


def test_docs_sql_queries_run(server: ServerProcess) -> None:
    """Every `prefixscope sql "..."` a page gives (the README's first query among them) runs
    on a real server: the tables and columns it names exist."""
    queries = sorted(set(re.findall(r'prefixscope sql "((?:SELECT|WITH)[^"]+)"', ALL)))
    assert any("FROM requests" in q for q in queries)
    for sql in queries:
        proc = subprocess.run(
            [*CLI, "sql", "--server", server.base_url, "--format", "csv", sql],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"prefixscope sql {sql!r}: {proc.stderr}"


def test_docs_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^make ([a-z-]+)", ALL, re.M))
    targets |= set(re.findall(r"`make ([a-z-]+)", ALL))
    assert {"demo", "test", "docs"} <= targets
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), f"make {target} is not a target"


@cache
def _bench_help(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, f"{script} --help: {proc.stderr[-2000:]}"
    return proc.stdout


#: a benchmark command as the pages give it: `.venv/bin/python bench/x.py --flag ...`
BENCH = re.compile(r"\.venv/bin/python (bench/[\w/]+\.py)((?: +(?:--?[\w-]+|[\w.,:/-]+))*)")


def _bench_commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for page, text in TEXTS.items():
        for script, rest in BENCH.findall(text.replace("\\\n", " ")):
            out.append((page, script, re.findall(r"(?<!\S)(--[\w-]+)", rest)))
    return out


@pytest.mark.parametrize("script", sorted({s for _, s, _ in _bench_commands()}))
def test_benchmark_commands_take_their_flags(script: str) -> None:
    """Every `.venv/bin/python bench/...` command a page gives exists and accepts the flags it
    is given there (its --help lists them)."""
    assert (ROOT / script).is_file(), f"{script} does not exist"
    help_text = _bench_help(script)
    for page, s, flags in _bench_commands():
        if s != script:
            continue
        unknown = [f for f in flags if f not in help_text]
        assert not unknown, f"{page}: {script} has no option {unknown}"


#: a repository path in backticks: `tests/test_x.py`, `collector/storage/dedupe.py`, ...
PATH = re.compile(
    r"`((?:tests|bench|scripts|collector|analytics|api|instrumentation|prefixscope|demo|deploy"
    r"|docs)/[\w./-]*\w)(?:::[\w\[\]-]+)?`"
)


def test_repository_paths_named_in_the_docs_exist() -> None:
    missing = []
    for page, text in TEXTS.items():
        for path in PATH.findall(text):
            if not (ROOT / path).exists():
                missing.append(f"{page}: {path}")
    assert not missing, "the docs name files that do not exist:\n" + "\n".join(missing)


def test_readme_links_resolve() -> None:
    """The README is read on its own (outside the site's strict build): its relative links
    must name files that exist."""
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_every_docs_page_is_in_the_nav() -> None:
    """mkdocs --strict fails on a page left out of the nav; this says which, without a build."""
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p for p in PAGES if p.removeprefix("docs/") not in nav]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert 'mkdocs" build --strict' in (ROOT / "scripts" / "check").read_text()


#: the README is a landing page (issue 32): the pitch, two commands, one example, the layout
README_MAX_LINES = 200


def test_the_readme_stays_short() -> None:
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail to docs/"
    )


def test_the_demo_leaves_the_checkout_clean() -> None:
    """``make demo`` runs ``prefixscope demo`` in the checkout: the store it creates by default
    and the model cache it fills are paths git ignores, so ``git status`` stays clean."""
    import datetime as dt
    import shutil

    from prefixscope.cli.demo import demo_command
    from prefixscope.demo.app import default_data_dir

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    store = default_data_dir(dt.datetime(2026, 1, 15, 12, 0, 0))
    assert store.name == "demo-20260115-120000" and not store.is_absolute()
    [cache_dir] = [p.default for p in demo_command.params if p.name == "cache_dir"]
    for path in (store, store / "prefixscope.duckdb", cache_dir):
        ignored = subprocess.run(
            ["git", "check-ignore", "--quiet", str(path)], cwd=ROOT, capture_output=True
        )
        assert ignored.returncode == 0, f"{path} is not ignored by git: {ignored.stderr!r}"
