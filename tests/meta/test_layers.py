"""The import layers: ``api`` → ``analytics`` → ``collector`` → the kernel; ``instrumentation``
→ the kernel only. An import that runs an arrow backwards fails here (AST, no imports run)."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.paths import ROOT as REPO_ROOT

ROOT = REPO_ROOT
#: prefixscope.<module> that form the kernel: everyone may import them.
KERNEL = {"semconv", "errors", "config", "metrics", "auth", "durations"}
#: folder → the layers it may import (besides itself and the kernel).
ALLOWED = {
    "instrumentation": set(),
    "collector": set(),
    # replay drives models through the instrumentation (a client library, kernel-only itself)
    "analytics": {"collector", "instrumentation"},
    "api": {"analytics", "collector"},
}
FOLDER_OF = {"instrumentation": "instrumentation", "collector": "collector",
             "analytics": "analytics", "api": "api"}  # fmt: skip
#: rooms inside the collector, bottom up: ``spans`` (the span model, normalization, message
#: text, the request rule) imports no other room; ``decoding`` and ``storage`` import the span
#: base; ``pipeline`` (admission, decode, the writer) sits on decoding and storage; ``metrics``
#: reads storage; ``receivers`` (the transports) hand bodies to the pipeline. A module at the
#: collector's top level is in no room and fails.
COLLECTOR_ROOMS: dict[str, set[str]] = {
    "spans": set(),
    "decoding": {"spans"},
    "storage": {"spans"},
    "pipeline": {"decoding", "storage", "spans"},
    "metrics": {"storage", "spans"},
    "receivers": {"pipeline", "decoding", "spans"},
}


def _target(module: str) -> str | None:
    """The layer a ``prefixscope.*`` import belongs to (None: not ours)."""
    parts = module.split(".")
    if parts[0] != "prefixscope":
        return None
    if len(parts) == 1:
        return "kernel"  # the package itself (__version__)
    if parts[1] in FOLDER_OF:
        return parts[1]
    if parts[1] in KERNEL:
        return "kernel"
    own = ROOT / "prefixscope"
    if (own / f"{parts[1]}.py").exists() or (own / parts[1]).is_dir():
        return f"wiring:{parts[1]}"
    return "kernel"  # a name the package itself defines (``from prefixscope import __version__``)


def _room(module: str) -> str | None:
    """The collector room of a ``prefixscope.collector.*`` module (None: not the collector's)."""
    parts = module.split(".")
    if parts[:2] != ["prefixscope", "collector"] or len(parts) < 3:
        return None
    return parts[2]


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
                names = [f"{mod}.{a.name}" for a in node.names] if not node.module else [mod]
                out += [(node.lineno, n) for n in names]
            elif node.module:  # each name: ``from prefixscope import api`` is the API
                out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def violations() -> list[str]:
    found = []
    for folder, allowed in ALLOWED.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            # the package a relative import resolves against: the file's folder, subfolders
            # included (collector/storage/x.py is in prefixscope.collector.storage)
            package = ".".join(["prefixscope", *path.parent.relative_to(ROOT).parts])
            for line, module in _imports(path, package):
                layer = _target(module)
                if layer in (None, "kernel", folder) or layer in allowed:
                    continue
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({layer})")
    found += _collector_violations()
    for path in sorted((ROOT / "prefixscope").glob("*.py")):
        if path.stem not in KERNEL:
            continue
        for line, module in _imports(path, "prefixscope"):
            layer = _target(module)
            if layer not in (None, "kernel"):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({layer})")
    return found


def _collector_violations() -> list[str]:
    found = []
    for path in sorted((ROOT / "collector").rglob("*.py")):
        rel = path.relative_to(ROOT / "collector").parts
        if rel == ("__init__.py",):
            continue
        room = rel[0]
        if room not in COLLECTOR_ROOMS:
            found.append(f"{path.relative_to(ROOT)} is in no room of the collector")
            continue
        package = ".".join(["prefixscope", *path.parent.relative_to(ROOT).parts])
        for line, module in _imports(path, package):
            target = _room(module)
            if target is None or target == room or target in COLLECTOR_ROOMS[room]:
                continue
            found.append(f"{path.relative_to(ROOT)}:{line} imports {module} (collector.{target})")
    return found


def test_imports_follow_the_layers() -> None:
    assert violations() == []


def test_the_check_sees_a_backwards_arrow(tmp_path: Path) -> None:
    """The contract can fail: a collector module importing the API is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from prefixscope.api import app\nfrom ..analytics import cube\n")
    found = [m for _, m in _imports(bad, "prefixscope.collector")]
    assert [_target(m) for m in found] == ["api", "analytics"]


def test_relative_imports_resolve_from_subpackages(tmp_path: Path) -> None:
    """``..spans.model`` in prefixscope.collector.storage is prefixscope.collector.spans.model."""
    mod = tmp_path / "x.py"
    mod.write_text("from ..spans.model import SPAN_COLUMNS\nfrom ...api import app\n")
    found = [m for _, m in _imports(mod, "prefixscope.collector.storage")]
    assert found == ["prefixscope.collector.spans.model", "prefixscope.api"]
    assert [_target(m) for m in found] == ["collector", "api"]


def test_a_package_import_names_its_layer(tmp_path: Path) -> None:
    """``from prefixscope import api`` is the API, not the kernel; ``__version__`` is."""
    mod = tmp_path / "x.py"
    mod.write_text(
        "from prefixscope import api, __version__\n"
        "from prefixscope.collector.pipeline import writer\n"
    )
    found = [m for _, m in _imports(mod, "prefixscope.collector.storage")]
    assert [_target(m) for m in found] == ["api", "kernel", "collector"]
    assert [_room(m) for m in found] == [None, None, "pipeline"]


def test_the_check_sees_storage_reaching_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage module importing the writer (above it) or a receiver is caught; the span base
    importing decoding is caught; a module outside every room is caught; storage importing the
    span model is not."""
    fake = tmp_path / "collector"
    (fake / "storage").mkdir(parents=True)
    (fake / "spans").mkdir()
    (fake / "storage" / "bad.py").write_text(
        "from ..pipeline.writer import Writer\nfrom ..spans.model import SPAN_COLUMNS\n"
        "from prefixscope.collector.receivers.http import app\n"
    )
    (fake / "spans" / "model.py").write_text("from ..decoding import spans\n")
    (fake / "stray.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _collector_violations() == [
        "collector/spans/model.py:1 imports prefixscope.collector.decoding (collector.decoding)",
        "collector/storage/bad.py:1 imports prefixscope.collector.pipeline.writer"
        " (collector.pipeline)",
        "collector/storage/bad.py:3 imports prefixscope.collector.receivers.http.app"
        " (collector.receivers)",
        "collector/stray.py is in no room of the collector",
    ]


def _installed_modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Every module of the package as installed (pyproject's package-dir mapping): dotted name
    -> (file, is a package)."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    mods: dict[str, tuple[Path, bool]] = {}
    tops = {Path(folder).parts[0] for folder in mapping.values()}
    for dotted, folder in mapping.items():
        for path in (root / folder).rglob("*.py"):
            rel = path.relative_to(root / folder).with_suffix("").parts
            if rel and rel[0] in tops and rel[0] != Path(folder).parts[0]:
                continue  # another mapped package's folder nested under this one
            is_pkg = path.name == "__init__.py"
            mods[".".join([dotted, *(rel[:-1] if is_pkg else rel)])] = (path, is_pkg)
    return mods


def import_cycles(root: Path) -> list[list[str]]:
    """The import circles among the installed modules (every import, also inside functions and
    under ``TYPE_CHECKING``: a hidden loop is still a loop), as strongly connected components of
    the AST import graph."""
    mods = _installed_modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        edges = set()
        for _, module in _imports(path, package):
            # ``from a import b``: the submodule a.b if there is one, else a
            while module and module not in mods:
                module = module.rpartition(".")[0]
            if module and module != name:
                edges.add(module)
        graph[name] = edges
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circle_anywhere() -> None:
    assert len(_installed_modules(ROOT)) > 100  # the walk saw the package
    assert import_cycles(ROOT) == []


def test_the_cycle_check_sees_a_hidden_loop(tmp_path: Path) -> None:
    """A loop closed by a function-level import, across two mapped folders, is found."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\n"pkg" = "pkg"\n"pkg.sub" = "sub"\n'
    )
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.sub import b\n")
    (tmp_path / "pkg" / "c.py").write_text("import os\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    assert import_cycles(tmp_path) == [["pkg.a", "pkg.sub.b"]]


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in ``tests/support``: a test module imported by another runs its
    tests' module-level code twice and hides the helper in a test file."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if "fixtures" in path.relative_to(ROOT / "tests").parts:
            continue
        package = ".".join(path.parent.relative_to(ROOT).parts)
        for line, module in _imports(path, package):
            if any(part.startswith("test_") for part in module.split(".")):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert found == []
