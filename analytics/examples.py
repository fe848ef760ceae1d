"""Example traces of flagged comparisons: the requests that show each regression.

An alert's evidence names a few traces a user can open: the slowest requests for a latency
quantile, failing ones for the error rate, flagged ones for feedback rates, the lowest scored
for an evaluator. All of a run's alerts are answered by one statement: the requests of their
cells are read once (one scan of :data:`~.query.REQUESTS`, a relation shared by the
statement's branches) and each alert's branch orders its own cell's requests. Ties go by
trace id, so every engine returns the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from prefixscope.collector.storage import annotation_views
from prefixscope.collector.storage.dialect import Dialect

from .catalog import CATALOG
from .comparison import Comparison
from .comparison import family as _family
from .engines import Engine, as_engine
from .query import BASE, PREFIX_SQL, REQUESTS, Window, json_key, judged_sql

LIMIT = 5


@dataclass(slots=True)
class _Branch:
    cell: str  # over alias ``s``: the comparison's requests
    cell_params: list[Any]
    select: str  # over the shared relation: (trace_id, rank) of the examples
    params: list[Any] = field(default_factory=list)


def example_trace_ids(
    con: duckdb.DuckDBPyConnection | Engine,
    comparisons: Sequence[Comparison],
    window: Window,
    limit: int = LIMIT,
) -> list[list[str]]:
    """Up to ``limit`` example trace ids for each comparison, in the order given."""
    if not comparisons:
        return []
    engine = as_engine(con)
    d = engine.dialect
    sources = {"scores": "scores", "feedback": "feedback"}
    if _embedded(con):  # the cells' annotations alone, not the views' every row
        traces = "SELECT trace_id FROM cand"
        sources = {v: annotation_views.annotations_of_traces(con, v, traces) for v in sources}
    branches = [_branch(d, c, sources) for c in comparisons]
    where, params = window.where("s")
    cells = " OR ".join(f"({b.cell})" for b in branches)
    shared_sql = f"SELECT s.* FROM {REQUESTS} s WHERE {where} AND ({cells})"
    shared_params = [*params, *(p for b in branches for p in b.cell_params)]
    union = " UNION ALL ".join(
        f"SELECT {i} AS a, trace_id, r FROM ({b.select}) x{i}" for i, b in enumerate(branches)
    )
    with engine.shared("cand", shared_sql, shared_params) as cand:
        rows = engine.arrow(
            cand.sql(f"SELECT a, trace_id FROM ({union}) u WHERE r <= {int(limit)} ORDER BY a, r"),
            [
                *cand.params,
                *(p for b in branches for p in (*b.cell_params, *b.params)),
            ],
        )
    out: list[list[str]] = [[] for _ in comparisons]
    for a, trace in zip(
        rows.column("a").to_pylist(), rows.column("trace_id").to_pylist(), strict=True
    ):
        out[int(a)].append(str(trace))
    return out


def _embedded(con: object) -> bool:
    """An embedded store's connection (its tiers' state table exists)."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return False
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'tier_state' "
            "AND database_name = current_database()"
        ).fetchall()[0][0]
    )


def _branch(d: Dialect, c: Comparison, sources: dict[str, str]) -> _Branch:
    """The comparison's cell (its variant, base model, route and cohort slice) and the
    statement ranking its example requests within it."""
    conds: list[str] = []
    params: list[Any] = []
    if c.base_model is not None:
        conds.append("s.base_model = ?")
        params.append(c.base_model)
    if c.prefix_id == BASE:
        conds.append(f"{PREFIX_SQL} = '{BASE}'")
    else:
        conds.append("s.prefix_id = ? AND coalesce(s.prefix_version, '') = ?")
        params += [c.prefix_id, c.prefix_version]
    conds.append("s.route IS NOT DISTINCT FROM ?")
    params.append(c.route)
    # the alert's slice: the requests whose cohort has its keys' values (a slice of one key
    # holds every value of the others; the route, every cohort), as the evidence shows it
    for k, v in c.cohort.items():
        conds.append(f"{d.json_string('s.cohort', json_key(k))} = ?")
        params.append(str(v))
    cell = " AND ".join(conds)
    fam = _family(c.metric)
    judged = judged_sql(d, "s")

    def ranked(order: str, extra: str = "", join: str = "", distinct: bool = False) -> str:
        if distinct:  # one row per trace, then ranked
            inner = f"SELECT DISTINCT s.trace_id FROM cand s {join} WHERE {cell}{extra}"
            return f"SELECT trace_id, row_number() OVER (ORDER BY trace_id) AS r FROM ({inner}) t0"
        return (
            f"SELECT s.trace_id, row_number() OVER (ORDER BY {order}) AS r "
            f"FROM cand s {join} WHERE {cell}{extra}"
        )

    if fam == "quantile":
        col = f"{CATALOG[c.metric].histogram or 'latency'}_ms"
        select = ranked(f"s.{col} DESC, s.trace_id", f" AND s.{col} IS NOT NULL")
        return _Branch(cell, params, select)
    if c.metric == "error_rate":
        return _Branch(cell, params, ranked("s.trace_id", " AND s.error"))
    if c.metric == "fallback_rate":
        return _Branch(
            cell, params, ranked("s.trace_id", " AND coalesce(s.fallback_reason, '') <> ''")
        )
    if fam == "rate":
        join = f"JOIN {sources['feedback']} t ON t.trace_id = s.trace_id AND {judged}"
        return _Branch(
            cell,
            params,
            ranked("", " AND t.kind = ?", join, distinct=True),
            [c.metric.removesuffix("_rate")],
        )
    join = f"JOIN {sources['scores']} t ON t.trace_id = s.trace_id AND {judged}"
    return _Branch(
        cell, params, ranked("t.value ASC, s.trace_id", " AND t.name = ?", join), [c.metric]
    )
