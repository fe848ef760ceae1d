"""Crash points for the durability tests: ``PREFIXSCOPE_CRASH_AT=<name>`` makes the process
kill itself with SIGKILL when it reaches the named step (as a power cut or the OOM killer
would), so a test can check that a restart loses and duplicates nothing. Unset (always, in
production) a crash point costs one dictionary lookup.

The named steps: ``roll.written`` (lake files written, not yet published), ``roll.published``
(files renamed into place, watermark not yet committed), ``roll.committed`` (watermark
committed, nothing moved yet), ``move.deleted`` (hot rows deleted inside the move's open
transaction) and ``move.committed`` (the move committed); ``move.written``,
``move.scores.published`` and ``move.feedback.published`` (a score/feedback move's files
written, published); ``compact.published`` (a cold-tier compaction's merged files published,
not yet committed), ``compact.committed`` (committed, the replaced files not yet deleted) and
``compact.removed`` (the replaced files deleted, their list not yet cleared).
"""

from __future__ import annotations

import os
import signal

ENV = "PREFIXSCOPE_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
