"""The import layers: ``api`` → ``analytics`` → ``collector`` → the kernel; ``instrumentation``
→ the kernel only. An import that runs an arrow backwards fails here (AST, no imports run)."""

from __future__ import annotations

import ast
from pathlib import Path

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


def _target(module: str) -> str | None:
    """The layer a ``prefixscope.*`` import belongs to (None: not ours)."""
    parts = module.split(".")
    if parts[0] != "prefixscope":
        return None
    if len(parts) == 1:
        return "kernel"  # the package itself (__version__)
    if parts[1] in FOLDER_OF:
        return parts[1]
    return "kernel" if parts[1] in KERNEL else f"wiring:{parts[1]}"


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
            elif node.module:
                out.append((node.lineno, node.module))
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
    for path in sorted((ROOT / "prefixscope").glob("*.py")):
        if path.stem not in KERNEL:
            continue
        for line, module in _imports(path, "prefixscope"):
            layer = _target(module)
            if layer not in (None, "kernel"):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({layer})")
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
