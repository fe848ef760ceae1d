"""What every background pass (the lake roll, the tier moves, compaction, the request
resolver) shares: a lower CPU priority than the ingest path, and what it does when the store
fails under it: a store fault (a full or read-only disk, a database DuckDB invalidated and not
yet reopened) is the operator's to fix and is said in one line; anything else is a bug and
keeps its traceback."""

from __future__ import annotations

import errno
import logging
import os
import threading

import duckdb

log = logging.getLogger(__name__)

#: nice value of the background passes' thread, so that the ingest path's threads win a core
#: when both want it (a roll's CPU is mostly Parquet encoding and zstd in this thread). The
#: 20M soak showed no change in what a roll costs the ingest rate with or without it.
LAKE_THREAD_NICE = 10


def lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads one by one)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LAKE_THREAD_NICE)
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted
        log.debug("could not lower the background thread's priority: %s", exc)


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
