"""Scorecards: per-group metrics with intervals, and deltas vs the base model.

``scorecard(con, group_by=["prefix_id", "route", "cohort.specialty"], since="7d")`` returns one
:class:`ScorecardRow` per group. When ``prefix_id`` is a group key, every metric of a prefix
row also carries ``base_value``/``delta`` (+ CI) against the base model's row with the same
other keys (same route, same cohort, same window). With ``dataset=NAME`` only replay spans of
that golden dataset count and evaluator deltas are *paired* on dataset items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
from scipy import stats as sps

from prefixscope import semconv

from .cube import Cube, build_cube
from .detection import DIMS, detection_cube
from .engines import DuckDBEngine, Engine, as_engine
from .metrics import Cell, Estimate, metric_names, summarise
from .query import BASE, REQUESTS, InvalidArgument, Window, json_key, json_path, judged_sql

DEFAULT_GROUP_BY = ("prefix_id",)


@dataclass(slots=True)
class MetricValue:
    """A metric of one scorecard row (JSON-ready via :meth:`to_dict`)."""

    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    base_value: float | None = None
    delta: float | None = None
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None
    paired: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class ScorecardRow:
    group: dict[str, str | None]
    n: int
    metrics: dict[str, MetricValue] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": dict(self.group),
            "n": self.n,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
        }


@dataclass(slots=True)
class Scorecard:
    group_by: list[str]
    window: Window
    rows: list[ScorecardRow]
    metrics: list[str]
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_by": self.group_by,
            "window": self.window.to_dict(),
            "alpha": self.alpha,
            "metrics": self.metrics,
            "rows": [r.to_dict() for r in self.rows],
        }


def _delta(est: Estimate, base: Estimate, z: float) -> tuple[float | None, ...]:
    if est.value is None or base.value is None:
        return None, None, None
    d = est.value - base.value
    if est.var is None or base.var is None:
        return d, None, None
    half = z * float(np.sqrt(est.var + base.var))
    return d, d - half, d + half


def scorecard(
    con: duckdb.DuckDBPyConnection | Engine,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    metrics: Sequence[str] | None = None,
    *,
    alpha: float = 0.05,
    dataset: str | None = None,
    cube: Cube | None = None,
) -> Scorecard:
    """Per-group metrics over spans ⋈ scores ⋈ feedback (see module docstring).

    ``metrics`` restricts the metric columns (default: all present). ``cube`` reuses a cube
    already computed for the same window (e.g. by a detection run) when it can be rolled up.
    """
    group_by = list(group_by)
    window = Window.of(since, until)
    if cube is None and not dataset and _from_detection(con, group_by):
        # on the embedded store the detection cube is kept per day between runs
        cube = detection_cube(con, window)
    if cube is not None and cube.can_rollup(group_by) and cube.window == window and not dataset:
        c = cube.rollup(group_by)
    else:
        extra, params = "TRUE", []
        if dataset:  # the request's span carries the dataset (requests keep no attributes)
            dialect = as_engine(con).dialect
            name = dialect.json_string("x.attributes", json_key(semconv.DATASET_NAME))
            extra = (
                "EXISTS (SELECT 1 FROM spans x WHERE x.trace_id = s.trace_id "
                f"AND x.span_id = s.span_id AND {name} = ?)"
            )
            params = [dataset]
        c = build_cube(con, group_by, window, extra_where=extra, extra_params=params)
    cells = summarise(c, alpha)
    names = metric_names(cells)
    if metrics:
        names = [m for m in names if m in set(metrics) or m == "n"]
    z = float(sps.norm.ppf(1 - alpha / 2))
    rows = _rows(cells, group_by, names, z)
    if dataset and "prefix_id" in group_by:
        engine = as_engine(con)
        if not isinstance(engine, DuckDBEngine):
            raise InvalidArgument("paired dataset scorecards need the DuckDB engine")
        _paired_deltas(engine.con, rows, group_by, dataset, window, alpha)
    rows.sort(key=lambda r: tuple("" if v is None else v for v in r.group.values()))
    return Scorecard(group_by, window, rows, names, alpha)


def _from_detection(con: object, group_by: list[str]) -> bool:
    """Whether ``group_by`` is a roll-up of the detection cube read from the embedded store
    (its dims, or ``cohort.<key>``; not the whole ``cohort``, whose key the detection cube
    writes canonically)."""
    return isinstance(con, duckdb.DuckDBPyConnection) and all(
        (d in DIMS and d != "cohort") or d.startswith("cohort.") for d in group_by
    )


def _rows(cells: list[Cell], group_by: list[str], names: list[str], z: float) -> list[ScorecardRow]:
    pi = group_by.index("prefix_id") if "prefix_id" in group_by else None
    pv = group_by.index("prefix_version") if "prefix_version" in group_by else None
    by_key = {c.key: c for c in cells}
    rows: list[ScorecardRow] = []
    for cell in cells:
        base: Cell | None = None
        if pi is not None and cell.key[pi] != BASE:
            bk = list(cell.key)
            bk[pi] = BASE
            if pv is not None:
                bk[pv] = ""
            base = by_key.get(tuple(bk))
        row = ScorecardRow(dict(zip(group_by, cell.key, strict=True)), cell.n)
        for name in names:
            est = cell.metrics.get(name)
            if est is None:
                continue
            mv = MetricValue(est.value, est.n, est.ci_low, est.ci_high)
            b = base.metrics.get(name) if base is not None else None
            if b is not None:
                mv.base_value = b.value
                mv.delta, mv.delta_ci_low, mv.delta_ci_high = _delta(est, b, z)
            row.metrics[name] = mv
        rows.append(row)
    return rows


def _paired_deltas(
    con: duckdb.DuckDBPyConnection,
    rows: list[ScorecardRow],
    group_by: list[str],
    dataset: str,
    window: Window,
    alpha: float,
) -> None:
    """Replace evaluator deltas by paired (same dataset item) mean differences vs base."""
    from .query import group_expr

    others = [g for g in group_by if g not in ("prefix_id", "prefix_version")]
    oexpr = "".join(f"{group_expr(g)} AS o{i}, " for i, g in enumerate(others))
    ocols = "".join(f"o{i}, " for i in range(len(others)))
    on = "".join(f" AND v.o{i} IS NOT DISTINCT FROM b.o{i}" for i in range(len(others)))
    where, params = window.where("s")
    item = f"json_extract_string(x.attributes, '{json_path(semconv.DATASET_ITEM_ID)}')"
    dsn = f"json_extract_string(x.attributes, '{json_path(semconv.DATASET_NAME)}')"
    res = con.execute(
        f"""WITH latest AS (
  SELECT {oexpr}coalesce(nullif(s.prefix_id, ''), '{BASE}') AS p,
    {"coalesce(s.prefix_version, '')" if "prefix_version" in group_by else "''"} AS pv,
    {item} AS item, s.trace_id, s.span_id, t.name,
    arg_max(t.value, (t.created_at, t.id)) AS v
  FROM {REQUESTS} s JOIN spans x ON x.trace_id = s.trace_id AND x.span_id = s.span_id
  JOIN scores t ON t.trace_id = s.trace_id AND {judged_sql(alias="s")}
  WHERE {dsn} = ? AND {where} GROUP BY ALL),
per_item AS (SELECT * EXCLUDE (trace_id, span_id, v), avg(v) AS v FROM latest GROUP BY ALL)
SELECT {ocols.replace("o", "v.o")}v.p, v.pv, v.name, count(*), avg(v.v - b.v), var_samp(v.v - b.v)
FROM per_item v JOIN per_item b ON b.item = v.item AND b.name = v.name AND b.p = '{BASE}'{on}
WHERE v.p <> '{BASE}' GROUP BY ALL""",
        [dataset, *params],
    ).fetchall()
    index = {tuple(r.group.get(g) for g in group_by): r for r in rows}
    for rec in res:
        o = dict(zip(others, rec[: len(others)], strict=True))
        p, pv, name, n, mean, var = rec[len(others) :]
        full = {**o, "prefix_id": p, "prefix_version": pv}
        row = index.get(tuple(full.get(g) for g in group_by))
        if row is None or name not in row.metrics or n < 2:
            continue
        half = float(sps.t.ppf(1 - alpha / 2, n - 1) * np.sqrt((var or 0.0) / n))
        mv = row.metrics[name]
        mv.delta, mv.delta_ci_low, mv.delta_ci_high = mean, mean - half, mean + half
        mv.paired = True
