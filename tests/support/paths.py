"""The repository's folders, for tests that read files beside them."""

from __future__ import annotations

from pathlib import Path

#: the repository's root
ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
#: golden OTLP fixtures (tests/fixtures/otlp/...)
FIXTURES = TESTS / "fixtures"
#: screenshots and other files tests leave for a human to look at
ARTIFACTS = ROOT / "artifacts"
