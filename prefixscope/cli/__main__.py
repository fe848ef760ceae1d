"""``python -m prefixscope.cli``."""

from prefixscope.cli import main

main()
