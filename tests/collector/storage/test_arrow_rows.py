"""One-statement inserts through Arrow: replace semantics, and a failed insert's own error."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from prefixscope.collector.storage.arrow_rows import insert_rows


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (id VARCHAR PRIMARY KEY, v DOUBLE NOT NULL)")
    return con


def test_rows_insert_and_replace_by_key() -> None:
    con = _con()
    insert_rows(con, "t", pa.table({"id": [f"k{i}" for i in range(1000)], "v": [1.0] * 1000}))
    insert_rows(
        con, "t", pa.table({"v": [2.0, 3.0], "id": ["k1", "new"]}), on_conflict="replace"
    )  # columns by name, not position
    got = dict(con.execute("SELECT id, v FROM t").fetchall())
    assert len(got) == 1001 and got["k1"] == 2.0 and got["new"] == 3.0 and got["k2"] == 1.0
    insert_rows(
        con, "t", pa.table({"id": pa.array([], pa.string()), "v": pa.array([], pa.float64())})
    )
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(1001,)]


def test_a_failed_insert_in_a_transaction_raises_its_own_error_and_writes_nothing() -> None:
    con = _con()
    insert_rows(con, "t", pa.table({"id": ["a"], "v": [1.0]}))
    con.execute("BEGIN TRANSACTION")
    with pytest.raises(duckdb.ConstraintException):
        insert_rows(con, "t", pa.table({"id": ["b", "a"], "v": [2.0, 2.0]}))
    con.execute("ROLLBACK")
    assert con.execute("SELECT id, v FROM t").fetchall() == [("a", 1.0)]
    insert_rows(con, "t", pa.table({"id": ["b"], "v": [2.0]}))  # the connection works on
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
