"""Scores written by evaluation runs: one columnar upsert, keyed by the score's id."""

from __future__ import annotations

from prefixscope.analytics.runner import ScoreRow, write_scores
from prefixscope.analytics.synthetic import scratch_store


def _row(trace: int, value: float, name: str = "TaskCompletion") -> ScoreRow:
    return ScoreRow(f"{trace:032x}", f"{trace:016x}", name, value, None, None, "online")


def test_scores_are_upserted_by_id_and_a_repeated_id_keeps_its_last_row() -> None:
    con = scratch_store()
    try:
        first = [_row(t, 0.5) for t in range(300)]
        assert write_scores(con, first) == 300
        # again, with new values for the first 100 and the last of two rows for trace 7
        again = [_row(t, 1.0) for t in range(100)] + [_row(7, 0.25)]
        assert write_scores(con, again) == 101
        rows = dict(con.execute("SELECT trace_id, value FROM score_rows").fetchall())
        assert len(rows) == 300
        want = {f"{t:032x}": 1.0 if t < 100 else 0.5 for t in range(300)}
        want[f"{7:032x}"] = 0.25
        assert rows == want
        ids = {r[0] for r in con.execute("SELECT id FROM score_rows").fetchall()}
        assert ids == {r.id for r in first}
        assert write_scores(con, []) == 0
    finally:
        con.close()


def test_a_dataset_version_round_trips_and_a_repeated_item_id_is_refused() -> None:
    import pytest

    from prefixscope.analytics.datasets import (
        DatasetError,
        DatasetItem,
        list_datasets,
        load_dataset,
        save_dataset,
    )

    items = [
        DatasetItem(
            f"i{k}",
            f"note {k}",
            expected=None if k % 3 else f"code {k}",
            context=[f"c{k}"] * (k % 2),
            cohort={"specialty": "radiology"} if k % 2 else {},
            metadata={"k": k},
        )
        for k in range(500)
    ]
    con = scratch_store()
    try:
        by_id = sorted(items, key=lambda it: it.item_id)  # load_dataset's order
        save_dataset(con, "golden", items, version="2")
        assert load_dataset(con, "golden", "2").items == by_id
        save_dataset(con, "golden", items[:10], version="2")  # a version is replaced whole
        assert load_dataset(con, "golden", "2").items == sorted(
            items[:10], key=lambda it: it.item_id
        )
        with pytest.raises(DatasetError, match="repeated item ids"):
            save_dataset(con, "golden", [items[0], items[0]], version="3")
        assert not [d for d in list_datasets(con) if d["version"] == "3"]  # nothing written
    finally:
        con.close()
