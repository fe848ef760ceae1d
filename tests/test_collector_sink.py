"""The DuckDB sink: a duplicate anywhere in a group never fails the group or doubles a span."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from prefixscope.collector.decoding import PROTOBUF, decode_body
from prefixscope.collector.sinks import DuckDBSink
from prefixscope.collector.store import Store, scalar

from .test_collector_durability import make_body


def _table(req_no: int, n: int) -> pa.Table:
    body, _ = make_body(req_no, n)
    t = decode_body(body, PROTOBUF, None, 1 << 24, 1024).table
    assert t is not None
    return t


def test_new_duplicate_and_mixed_groups(tmp_path: Path) -> None:
    with Store(tmp_path, checkpoint_wal_mb=64) as store:
        sink = DuckDBSink(store)
        sink.open()
        a, b = _table(1, 10), _table(2, 10)
        assert sink.write(a, 1) == 10  # all new: the fast path
        assert sink.write(a, 2) == 0  # all duplicates
        assert sink.write(pa.concat_tables([b, a.slice(0, 3)]), 3) == 10  # mixed
        assert sink.write(pa.concat_tables([_table(3, 5)] * 2), 4) == 5  # twice in one group
        con = store.cursor()
        assert scalar(con, "SELECT count(*) FROM spans") == 25
        assert scalar(con, "SELECT count(DISTINCT (trace_id, span_id)) FROM spans") == 25
        # the first write of each span is kept (its batch number)
        assert (
            scalar(
                con,
                "SELECT max(ingest_batch) FROM spans WHERE trace_id = ?",
                [a.column("trace_id")[0].as_py()],
            )
            == 1
        )
        sink.close()
