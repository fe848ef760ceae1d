"""Reliability and security benchmarks (issue 7): faults, overload, hostile input, sandbox, auth.

Each module is a runnable script (``python bench/reliability/<name>.py --help``) exposing
``run(...) -> Report``; ``run_all.py`` runs every one with its defaults and prints one markdown
table. The test suite (``tests/test_reliability_*.py``) runs short versions of the same code.
"""
