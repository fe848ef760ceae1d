"""The import layers: ``api`` → ``analytics`` → ``collector`` → the kernel; ``instrumentation``
→ the kernel only. An import that runs an arrow backwards fails here (AST, no imports run)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
#: rooms inside the collector: the base (span model, normalization, message text, the request
#: rule) imports only the base; decoding and storage import the base and themselves; the
#: pipeline and the receivers above them may import anything in the collector
COLLECTOR_BASE = {"model", "normalize", "messages", "requests"}
COLLECTOR_ROOMS = {
    **{room: COLLECTOR_BASE for room in COLLECTOR_BASE},
    "decoding": COLLECTOR_BASE,
    "storage": COLLECTOR_BASE,
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
        room = rel[0].removesuffix(".py")
        if room not in COLLECTOR_ROOMS:
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
    """``..model`` in prefixscope.collector.storage is prefixscope.collector.model."""
    mod = tmp_path / "x.py"
    mod.write_text("from ..model import SPAN_COLUMNS\nfrom ...api import app\n")
    found = [m for _, m in _imports(mod, "prefixscope.collector.storage")]
    assert found == ["prefixscope.collector.model", "prefixscope.api"]
    assert [_target(m) for m in found] == ["collector", "api"]


def test_a_package_import_names_its_layer(tmp_path: Path) -> None:
    """``from prefixscope import api`` is the API, not the kernel; ``__version__`` is."""
    mod = tmp_path / "x.py"
    mod.write_text(
        "from prefixscope import api, __version__\nfrom prefixscope.collector import writer\n"
    )
    found = [m for _, m in _imports(mod, "prefixscope.collector.storage")]
    assert [_target(m) for m in found] == ["api", "kernel", "collector"]
    assert [_room(m) for m in found] == [None, None, "writer"]


def test_the_check_sees_storage_reaching_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage module importing the writer (above it) or a receiver is caught; the base
    importing decoding is caught; storage importing the span model is not."""
    fake = tmp_path / "collector"
    (fake / "storage").mkdir(parents=True)
    (fake / "storage" / "bad.py").write_text(
        "from ..writer import Writer\nfrom ..model import SPAN_COLUMNS\n"
        "from prefixscope.collector.http import app\n"
    )
    (fake / "model.py").write_text("from .decoding import spans\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _collector_violations() == [
        "collector/model.py:1 imports prefixscope.collector.decoding (collector.decoding)",
        "collector/storage/bad.py:1 imports prefixscope.collector.writer (collector.writer)",
        "collector/storage/bad.py:3 imports prefixscope.collector.http.app (collector.http)",
    ]
