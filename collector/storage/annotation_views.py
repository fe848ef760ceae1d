"""The ``scores`` and ``feedback`` views over both tiers: hot rows, and moved rows not in hot
(:func:`annotation_source`); every stored version of the rows, for readers that only look for
changes (:func:`annotation_versions`); and the view's rows of some traces without
de-duplicating every moved row (:func:`annotations_of_traces`). The rows move by
:func:`.tiers.move_annotations`."""

from __future__ import annotations

import duckdb

from .tiers import ANNOTATIONS, Annotations, below, lit, state


def _moved(con: duckdb.DuckDBPyConnection, spec: Annotations) -> tuple[str, str] | None:
    """The moved rows of ``spec``: (a ``read_parquet`` FROM item with ``filename``, the
    condition that keeps the committed moves' files), or None while nothing has moved."""
    st = state(con, spec.view)
    if st is None or st.moved_batch <= 0:
        return None
    glob = lit(f"{st.lake_dir}/{spec.view}/*/*.parquet")
    return (
        f"read_parquet({glob}, union_by_name = true, hive_partitioning = false, filename = true)",
        f"parse_filename(filename) < {lit(below(st.moved_batch + 1))}",
    )


def _spec(view: str) -> Annotations:
    return next(s for s in ANNOTATIONS if s.view == view)


def annotation_source(con: duckdb.DuckDBPyConnection, spec: Annotations) -> str:
    """The body of the ``scores``/``feedback`` view: hot rows, and moved rows not in hot."""
    moved = _moved(con, spec)
    if moved is None:
        return f"SELECT * FROM {spec.rows}"
    cold, committed = moved
    return (
        f"SELECT * FROM {spec.rows} UNION ALL SELECT {spec.columns} FROM {cold} "
        f"WHERE {committed} AND id NOT IN (SELECT id FROM {spec.rows}) "
        # an id re-sent after its first copy went cold moves again later: the newest move wins
        f"QUALIFY row_number() OVER (PARTITION BY id ORDER BY parse_filename(filename) DESC) = 1"
    )


def annotation_versions(con: duckdb.DuckDBPyConnection, view: str, columns: str) -> str:
    """A FROM item with ``columns`` of every stored version of the ``scores``/``feedback``
    rows (``view``): hot rows and every moved row, a version that a newer one shadows
    included. Readers that only need to see changes, or a superset of the rows, read this
    instead of the view and skip its de-duplication (three times cheaper): any change of the
    view is a change of these rows."""
    spec = _spec(view)
    moved = _moved(con, spec)
    hot = f"SELECT {columns} FROM {spec.rows}"
    if moved is None:
        return f"({hot})"
    cold, committed = moved
    return f"({hot} UNION ALL SELECT {columns} FROM {cold} WHERE {committed})"


def annotations_of_traces(con: duckdb.DuckDBPyConnection, view: str, traces: str) -> str:
    """A FROM item with the rows of the ``scores``/``feedback`` view (``view``) whose trace
    is in ``traces`` (a query of one ``trace_id`` column), read without de-duplicating every
    moved row as the view does: the ids of the stored versions on those traces first, then
    every version of those ids, the view's rule (a hot row wins, else the newest move) applied
    to them alone, then the traces again. Exact: every row of the view on those traces is a
    version of one of those ids (even were an id re-sent on another trace)."""
    spec = _spec(view)
    found = _moved(con, spec)
    if found is None:
        return f"(SELECT * FROM {spec.rows} WHERE trace_id IN ({traces}))"
    cold, moved = found
    ids = (
        f"SELECT id FROM {spec.rows} WHERE trace_id IN ({traces}) UNION "
        f"SELECT id FROM {cold} WHERE {moved} AND trace_id IN ({traces})"
    )
    return f"""(SELECT {spec.columns} FROM (
  SELECT {spec.columns} FROM (
    SELECT {spec.columns}, 0 AS tier_, '' AS file_ FROM {spec.rows} WHERE id IN ({ids})
    UNION ALL
    SELECT {spec.columns}, 1, parse_filename(filename) FROM {cold} WHERE {moved} AND id IN ({ids})
  ) versions_ QUALIFY row_number() OVER (PARTITION BY id ORDER BY tier_, file_ DESC) = 1
) latest_ WHERE trace_id IN ({traces}))"""


def refresh_annotation_views(con: duckdb.DuckDBPyConnection) -> None:
    for spec in ANNOTATIONS:
        con.execute(
            f"CREATE OR REPLACE VIEW {spec.view} AS {annotation_source(con, spec)}"
        ).fetchall()
