"""The state of an mSPRT sequence of looks: which looks continue one growing window, and
each comparison's running minimum p-value and maximum bound over them (``sequential_state``).

A regression run in ``msprt`` mode reads the state before it tests (:meth:`SequenceLook.prior`)
and writes it after (:meth:`SequenceLook.save`), in the run's transaction
(:func:`~.alerts.run_and_diff`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from prefixscope.collector.storage.arrow_rows import insert_rows

from .comparison import DetectionResult, Prior
from .detection_config import DetectionConfig
from .query import Window


def sequence_anchor(window: Window, config: DetectionConfig) -> str | None:
    """The identity of a growing window's sequence of looks (mSPRT only; else None): the
    fixed ``since`` and every setting that shapes the test statistic or its threshold."""
    if config.sequential != "msprt":
        return None
    parts = [
        window.since.isoformat() if window.since else None,
        config.alpha,
        config.tau_factor,
        sorted(config.min_effect.items()),
        config.score_min_effect,
    ]
    raw = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class SequenceLook:
    """One look at a growing window's sequence (mSPRT): its anchor, its end, and whether it
    continues the sequence. A look that ends before the sequence's latest look (a fixed
    ``until`` in the past) stands alone: it neither reads nor writes the state."""

    anchor: str | None
    until: datetime
    live: bool

    @classmethod
    def open(
        cls, con: duckdb.DuckDBPyConnection, window: Window, config: DetectionConfig
    ) -> SequenceLook:
        anchor = sequence_anchor(window, config)
        until = window.until or datetime.now(UTC).replace(tzinfo=None)
        if anchor is None:
            return cls(None, until, False)
        row = con.execute(
            "SELECT max(last_until) FROM sequential_state WHERE anchor = ?", [anchor]
        ).fetchall()
        return cls(anchor, until, row[0][0] is None or until >= row[0][0])

    def prior(self, con: duckdb.DuckDBPyConnection) -> dict[str, Prior]:
        """Running minimum p-value and maximum bound per comparison over the earlier looks."""
        if not self.live:
            return {}
        rows = con.execute(
            "SELECT fingerprint, min_p, worse_bound FROM sequential_state WHERE anchor = ?",
            [self.anchor],
        ).fetchall()
        return {fp: Prior(float(p), float(b)) for fp, p, b in rows}

    def save(self, con: duckdb.DuckDBPyConnection, result: DetectionResult) -> None:
        """Record this look: each comparison's running minimum p and maximum bound
        (``result`` was computed with :meth:`prior`, so its values already are the running
        ones)."""
        if not self.live:
            return
        now = datetime.now(UTC).replace(tzinfo=None)
        # one row per fingerprint (the last), as one statement may upsert a key only once
        kept = {c.fingerprint(): c for c in result.comparisons if np.isfinite(c.worse_bound)}
        if not kept:
            return
        rows = pa.table(
            {
                "anchor": pa.array([self.anchor] * len(kept), pa.string()),
                "fingerprint": pa.array(list(kept), pa.string()),
                "min_p": pa.array([c.p_value for c in kept.values()], pa.float64()),
                "worse_bound": pa.array([c.worse_bound for c in kept.values()], pa.float64()),
                "last_until": pa.array([self.until] * len(kept), pa.timestamp("us")),
                "updated_at": pa.array([now] * len(kept), pa.timestamp("us")),
            }
        )
        insert_rows(con, "sequential_state", rows, on_conflict="replace")


__all__ = ["SequenceLook", "sequence_anchor"]
