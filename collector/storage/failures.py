"""What a background pass does when the store fails under it: a store fault (a full or
read-only disk, a database DuckDB invalidated and not yet reopened) is the operator's to fix
and is said in one line; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno
import logging

import duckdb

#: OS errors of a full, read-only or unwritable disk: the operator's fault to fix, not a bug
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EIO})


def store_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the store being unavailable (a full or read-only disk, a database
    DuckDB invalidated and not yet reopened) rather than a bug: a background pass that meets
    one says so in one line and retries, with no traceback."""
    if isinstance(exc, duckdb.ConnectionException | duckdb.IOException | duckdb.FatalException):
        return True
    return isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS


def log_pass_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log a failed background pass (``what``): one line for a store fault, else the
    traceback."""
    if store_fault(exc):
        logger.warning("%s (the store is unavailable): %s", what, str(exc).splitlines()[0])
    else:
        logger.error("%s", what, exc_info=exc)
