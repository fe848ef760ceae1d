"""The order make test starts the test modules in."""

from __future__ import annotations

#: the modules that take longest, longest first (minutes each in make test's parallel pass):
#: collected first, and run with --no-loadscope-reorder, so that each starts early on its
#: worker and the two workers finish together (longest processing time first): xdist orders
#: modules by their number of tests, which is not their time
LONGEST_FIRST = (
    "tests/e2e/test_demo.py",
    "tests/analytics/test_detection.py",
    "tests/collector/test_decoder_native.py",
    "tests/collector/storage/test_tiers.py",
    "tests/collector/test_decoder_native_build.py",
    "tests/collector/test_genai_content.py",
    "tests/analytics/test_lake_parity.py",
    "tests/meta/test_readme.py",
    "tests/api/test_fuzz.py",
    "tests/api/test_pages.py",
    "tests/analytics/test_spark.py",
)
