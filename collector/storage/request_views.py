"""What readers of requests read: both tiers' request rows (:func:`rows_source`), each row's
version (:func:`change_source`, what kept results compare) and the ``requests`` view's
annotation columns (:data:`ANNOTATED`). The rows are written by :mod:`.request_store`."""

from __future__ import annotations

import duckdb

from ..spans.request_columns import REQUEST_COLUMN_NAMES
from . import tiers
from .request_store import BASE_VIEW, ROWS, VIEW


def rows_source(con: duckdb.DuckDBPyConnection) -> str:
    """The FROM item reading both tiers' request rows."""
    return _both_tiers(con, ", ".join(REQUEST_COLUMN_NAMES))


def change_source(con: duckdb.DuckDBPyConnection) -> str:
    """The FROM item of every request row's ``start_time`` and ``version``: a hash of the row's
    identity, of the pass that wrote it (``resolve_batch``) and of how many spans it holds, so
    a request written again (its trace re-resolved, with a span more) has another version.
    Cold rows are never rewritten (they move in whole hours, once resolved): their identity
    is their version, and their span lists are not read. What readers that keep results
    derived from requests compare (:mod:`prefixscope.analytics.cube_cache`)."""
    ident = "trace_id, span_id, start_time, end_time, last_in_trace"
    return _both_tiers(
        con,
        f"start_time, hash({ident}, resolve_batch, len(span_ids)) AS version",
        f"start_time, hash({ident}) AS version",
    )


def _both_tiers(con: duckdb.DuckDBPyConnection, hot_cols: str, cold_cols: str | None = None) -> str:
    st = tiers.state(con, VIEW)
    hot = f"SELECT {hot_cols} FROM {ROWS}"
    if st is None or st.moved_batch <= 0:
        return f"({hot})"
    glob = tiers.lit(f"{st.lake_dir}/{VIEW}/*/*.parquet")
    return (
        f"({hot} UNION ALL SELECT {cold_cols or hot_cols} "
        f"FROM read_parquet({glob}, union_by_name = true, hive_partitioning = false, "
        f"filename = true) "
        f"WHERE parse_filename(filename) < {tiers.lit(tiers.below(st.moved_batch + 1))})"
    )


#: the ``requests`` view's annotation columns: each request's latest score per evaluator and
#: its feedback count per kind (the same attribution as analytics: ``span_ids`` and
#: ``last_in_trace``, latest by ``created_at`` then ``id``)
ANNOTATED = f"""SELECT r.*, s.scores, f.feedback FROM {BASE_VIEW} r
LEFT JOIN (
  SELECT trace_id, span_id, map(list(name), list(value)) AS scores FROM (
    SELECT r.trace_id, r.span_id, t.name,
      arg_max(t.value, (t.created_at, t.id)) AS value
    FROM scores t JOIN {BASE_VIEW} r ON r.trace_id = t.trace_id
    WHERE (t.span_id IS NULL AND r.last_in_trace) OR list_contains(r.span_ids, t.span_id)
    GROUP BY ALL)
  GROUP BY ALL
) s ON s.trace_id = r.trace_id AND s.span_id = r.span_id
LEFT JOIN (
  SELECT trace_id, span_id, map(list(kind), list(n)) AS feedback FROM (
    SELECT r.trace_id, r.span_id, t.kind, count(*) AS n
    FROM feedback t JOIN {BASE_VIEW} r ON r.trace_id = t.trace_id
    WHERE (t.span_id IS NULL AND r.last_in_trace) OR list_contains(r.span_ids, t.span_id)
    GROUP BY ALL)
  GROUP BY ALL
) f ON f.trace_id = r.trace_id AND f.span_id = r.span_id"""
