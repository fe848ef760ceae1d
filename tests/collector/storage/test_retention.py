"""Retention: whole lake partitions and the store's rows older than ``--retention`` go; what is
inside the window stays; ``prefixscope lake retention`` does the same offline; ``/metrics``
reports it."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from prefixscope.collector.storage.lake import LakeRoller
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store
from prefixscope.collector.storage.tables import lake_table, write_lake_table
from prefixscope.metrics import Metrics
from tests.support.api_fixtures import otlp_request, otlp_span
from tests.support.serverproc import ServerProcess

NOW = dt.datetime(2026, 6, 30, 12, 0, 0)


def _spans_on(days_ago: list[float]) -> dict:
    spans = [
        otlp_span(
            f"{i + 1:032x}",
            f"{i + 1:016x}",
            "chat",
            start=NOW - dt.timedelta(days=d),
            attrs={"base_model": "m"},
        )
        for i, d in enumerate(days_ago)
    ]
    return otlp_request(spans)


def _days(lake: Path, table: str) -> list[str]:
    """Partition folders, except one holding only hidden files (an embedded lake's schema
    file in ``date=unknown``)."""
    base = lake / table
    out = []
    for p in base.glob("date=*"):
        names = [f.name for f in p.iterdir()]
        if not names or any(not n.startswith(".") for n in names):
            out.append(p.name.removeprefix("date="))
    return sorted(out)


def test_retention_drops_old_partitions_and_rows_keeps_the_window(tmp_path: Path) -> None:
    import orjson

    from prefixscope.collector.decoding import JSON, decode_body

    ages = [40, 31, 30.4, 29, 1, 0]  # days before NOW
    with Store(tmp_path) as store:
        sink = DuckDBSink(store)
        sink.open()
        decoded = decode_body(orjson.dumps(_spans_on(ages)), JSON, None, 1 << 30, 32768)
        sink.write(decoded.table, 1)
        cur = store.cursor()
        for i, age in enumerate(ages):
            t = NOW - dt.timedelta(days=age)
            cur.execute(
                "INSERT INTO score_rows VALUES (?, ?, NULL, 'G', 0.5, NULL, NULL, 'x', ?)",
                [f"s{i}", f"{i + 1:032x}", t],
            )
            cur.execute(
                "INSERT INTO feedback_rows VALUES (?, ?, NULL, 'thumbs_down', 1, NULL, ?)",
                [f"f{i}", f"{i + 1:032x}", t],
            )
        metrics = Metrics()
        roller = LakeRoller(
            store, metrics, interval_s=0, row_group_rows=1000, retention=dt.timedelta(days=30)
        )
        assert roller.roll() == len(ages)
        for name in ("scores", "feedback"):  # as a scale-out evaluator job would publish them
            rows = cur.execute(f"SELECT * FROM {name}").to_arrow_table()
            write_lake_table(str(store.lake_dir), name, rows.select(lake_table(name).schema.names))
        lake = store.lake_dir
        before = _days(lake, "spans")
        assert before == ["2026-05-21", "2026-05-30", "2026-05-31", "2026-06-01", "2026-06-29",
                          "2026-06-30"]  # fmt: skip
        report = roller.enforce_retention(now=NOW)
        assert report is not None
        # cutoff 2026-05-31 12:00: whole days before it go; 05-31 is partly inside: kept
        assert report.partitions["spans"] == ["2026-05-21", "2026-05-30"]
        assert _days(lake, "spans") == before[2:]
        assert _days(lake, "scores") == _days(lake, "spans") == _days(lake, "feedback")
        # the store keeps exactly the rows inside the window (row-exact, not by day)
        left = cur.execute("SELECT count(*) FROM spans").fetchall()[0][0]
        assert left == sum(a < 30 for a in ages) == 3
        assert report.rows == {"span_rows": 3, "score_rows": 3, "feedback_rows": 3}
        assert cur.execute("SELECT count(*) FROM scores").fetchall()[0][0] == 3
        # a second pass has nothing left to do
        again = roller.enforce_retention(now=NOW)
        assert again is not None and not again.partitions and not again.rows
        text = metrics.render().decode()
        assert 'prefixscope_retention_partitions_dropped_total{table="spans"} 2.0' in text
        assert 'prefixscope_retention_rows_deleted_total{table="span_rows"} 3.0' in text
        sink.close()


def test_lake_retention_command_offline(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    for day in ("2020-01-01", "2020-01-02", "unknown"):
        folder = lake / "spans" / f"date={day}"
        folder.mkdir(parents=True)
        (folder / "part-1.parquet").write_bytes(b"PAR1")
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    (lake / "spans" / f"date={today}").mkdir()
    cmd = [sys.executable, "-m", "prefixscope.cli", "lake", "retention", "--lake-path", str(lake)]
    dry = subprocess.run([*cmd, "--retention", "30d", "--dry-run"], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "spans: would drop 2 partitions (2020-01-01 .. 2020-01-02)" in dry.stdout
    assert len(_days(lake, "spans")) == 4
    done = subprocess.run([*cmd, "--retention", "30d"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "spans: dropped 2 partitions" in done.stdout
    assert _days(lake, "spans") == sorted([today, "unknown"])  # undated data is never dropped
    bad = subprocess.run([*cmd, "--retention", "soon"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "retention" in bad.stderr


def test_serve_applies_retention_after_each_roll(
    start_server: Callable[..., ServerProcess],
) -> None:
    srv = start_server("--retention", "7d", "--lake-roll-interval-s", "1")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    spans = [
        otlp_span(f"{i + 1:032x}", f"{i + 1:016x}", "chat", start=now - dt.timedelta(days=d),
                  attrs={"base_model": "m"})
        for i, d in enumerate([20, 10, 1, 0])
    ]  # fmt: skip
    assert httpx.post(f"{srv.base_url}/v1/traces", json=otlp_request(spans)).status_code == 200
    deadline = time.monotonic() + 30
    count = None
    while time.monotonic() < deadline:
        rows = httpx.post(
            f"{srv.base_url}/api/v1/sql", json={"sql": "SELECT count(*) FROM spans"}
        ).json()["rows"]
        count = rows[0][0]
        if count == 2:
            break
        time.sleep(0.5)
    assert count == 2
    metrics = httpx.get(f"{srv.base_url}/metrics").text
    # the old spans are still hot (they arrived within the dedupe window) and in the lake:
    # retention deletes the rows and drops the partitions
    assert 'prefixscope_retention_rows_deleted_total{table="span_rows"} 2.0' in metrics
    assert 'prefixscope_retention_partitions_dropped_total{table="spans"} 2.0' in metrics
    assert "prefixscope_retention_cutoff_timestamp_seconds 0.0" not in metrics
    lake = srv.data_dir / "lake" / "spans"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(list(lake.glob("date=2*"))) > 2:
        time.sleep(0.5)
    assert len(list(lake.glob("date=2*"))) <= 2  # today and yesterday at most


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("retention", "99999999999999d", "retention '99999999999999d' is out of range"),
        ("hot_retention", "2 days", "hot_retention must be like 30s, 5m"),
        ("dedupe_window", "1e9w", "dedupe_window must be like"),
    ],
)
def test_bad_durations_are_refused_at_start(
    tmp_path: Path, setting: str, value: str, message: str
) -> None:
    """One duration parser for settings, CLI and queries: a malformed or too long duration is
    a ConfigError naming the setting, never an OverflowError's traceback."""
    from prefixscope.config import ConfigError, Settings

    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings(data_dir=tmp_path, **{setting: value}).validate()


def test_msprt_sequences_start_where_retention_keeps_whole_days(
    start_server: Callable[..., ServerProcess],
) -> None:
    """Under --retention, "all the data" shrinks at its start, which no mSPRT sequence may
    see: a run's growing window starts at the first whole UTC day the retention keeps (a
    new sequence once retention reaches it), also when the caller asks for an earlier start.
    Windows and fixed runs keep the window they are given."""
    from prefixscope.api.detect import retained_since

    now = dt.datetime(2026, 5, 30, 15, 30)
    assert retained_since(dt.timedelta(days=7), now) == dt.datetime(2026, 5, 24)
    assert retained_since(dt.timedelta(hours=1), now) == dt.datetime(2026, 5, 31)

    srv = start_server("--retention", "7d")
    run = httpx.post(f"{srv.base_url}/api/v1/regressions/run", json={}, timeout=60).json()
    expected = retained_since(dt.timedelta(days=7))
    assert run["sequential"] == "msprt"
    assert dt.datetime.fromisoformat(run["since"].replace("Z", "")) == expected
    early = httpx.post(
        f"{srv.base_url}/api/v1/regressions/run", json={"since": "2020-01-01T00:00:00"}, timeout=60
    ).json()
    assert dt.datetime.fromisoformat(early["since"].replace("Z", "")) == expected
    fixed = httpx.post(
        f"{srv.base_url}/api/v1/regressions/run",
        json={"sequential": "fixed", "since": "2020-01-01T00:00:00"},
        timeout=60,
    ).json()
    assert fixed["since"].startswith("2020-01-01")
