"""The repository's tracked files, copied as a stranger's clone would have them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .paths import ROOT


def copy_tracked(dest: Path) -> None:
    """Copy the tracked files (and new, uncommitted test and bench modules) to ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():  # deleted in the work tree
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(src.read_bytes())
    # uncommitted new files under the checked folders count too (a test run before a commit)
    for folder in ("bench", "tests"):
        for src in (ROOT / folder).rglob("*.py"):
            out = dest / src.relative_to(ROOT)
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(src.read_bytes())
