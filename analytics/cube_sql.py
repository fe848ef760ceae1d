"""The cube's statements: one request relation (``req``) and four scans of it (cells,
histograms, score moments, feedback counts), portable between DuckDB and Spark SQL through
the engine's :class:`~prefixscope.collector.storage.dialect.Dialect`."""

from __future__ import annotations

import pyarrow as pa

from prefixscope.collector.storage.dialect import Dialect

from . import stats
from .engines import Engine, Shared
from .query import judged_sql

#: the feedback kinds the cube counts (per request, each kind once)
FEEDBACK_KINDS = ("thumbs_down", "escalation")
#: histogram metric codes
LATENCY, TTFT, ROUTE_LATENCY = 0, 1, 2


#: request columns the cube's statements read (besides the cell hash and keys)
REQ_COLUMNS = (
    "s.trace_id, s.span_id, s.start_time, s.end_time, s.latency_ms, s.route_latency_ms, "
    "s.ttft_ms, s.error, s.fallback_reason, s.input_tokens, s.output_tokens, s.cached_tokens, "
    "s.last_in_trace, s.span_ids"
)


HIST_SQL = f"""SELECT g, {LATENCY} AS m, {stats.bin_sql("latency_ms")} AS b, count(*) AS c
FROM req WHERE latency_ms IS NOT NULL GROUP BY ALL
UNION ALL
SELECT g, {TTFT} AS m, {stats.bin_sql("ttft_ms")} AS b, count(*) AS c
FROM req WHERE ttft_ms IS NOT NULL GROUP BY ALL
UNION ALL
SELECT g, {ROUTE_LATENCY} AS m, {stats.bin_sql("route_latency_ms")} AS b, count(*) AS c
FROM req WHERE route_latency_ms IS NOT NULL GROUP BY ALL"""


def cells_sql(nd: int) -> str:
    keys = "".join(f"s.k{i}, " for i in range(nd))
    return f"""SELECT {keys}s.g, count(*) AS n,
  count(*) FILTER (WHERE s.error) AS errors,
  count(*) FILTER (WHERE coalesce(s.fallback_reason, '') <> '') AS fallbacks,
  CAST(coalesce(sum(s.input_tokens), 0) AS DOUBLE) AS input_tokens,
  CAST(coalesce(sum(s.output_tokens), 0) AS DOUBLE) AS output_tokens,
  CAST(coalesce(sum(s.cached_tokens), 0) AS DOUBLE) AS cached,
  CAST(coalesce(sum(s.input_tokens) FILTER (WHERE s.cached_tokens IS NOT NULL), 0) AS DOUBLE)
    AS cache_base,
  min(s.start_time) AS first_seen, max(s.start_time) AS last_seen
FROM req s GROUP BY ALL"""


def feedback_sql(d: Dialect, annotations_where: str = "TRUE") -> str:
    """Flagged requests per (cell, kind): a request with one or more feedback rows of a kind
    (on any of its spans, or on its trace when it is the trace's last request) counts once."""
    kinds = ", ".join(f"'{k}'" for k in FEEDBACK_KINDS)
    tk = d.id_key("t.trace_id", 128)
    rk = d.id_key("r.trace_id", 128)
    return f"""SELECT g, kind, count(*) AS c FROM (
  SELECT r.g, {rk} AS tk, r.span_id, t.kind
  FROM feedback t JOIN req r ON {rk} = {tk}
  WHERE t.kind IN ({kinds}) AND {judged_sql(d)} AND ({annotations_where})
  GROUP BY r.g, {rk}, r.span_id, t.kind
) x GROUP BY ALL"""


def score_rows(engine: Engine, req: Shared, annotations_where: str = "TRUE") -> pa.Table:
    """Score moments per (cell, evaluator), counting ONE value per (request, evaluator): the
    latest (``created_at``, then ``id``) of the scores attributed to the request
    (:func:`~.query.judged_sql`). A request scored online and offline, a score posted twice,
    or a score on its call and one on its route span, is one scored request, not two: counting
    rows would inflate n and shrink the variance. Only requests with several scores of one
    name pay for :meth:`Dialect.max_by`'s tuple order. Ids join as :meth:`Dialect.id_key`s."""
    d = engine.dialect
    tk = d.id_key("t.trace_id", 128)
    rk = d.id_key("r.trace_id", 128)
    sk = d.id_key("r.span_id", 64)
    latest = d.max_by("value", ["created_at", "id"])
    return engine.arrow(
        req.sql(
            f"""SELECT g, name, count(*) AS n, sum(v) AS s, sum(v * v) AS ss FROM (
  SELECT g, name, CASE WHEN c = 1 THEN any_v ELSE latest END AS v FROM (
    SELECT g, rtk, rsk, name, count(*) AS c, {d.any_value("value")} AS any_v,
      {latest} AS latest
    FROM (
      SELECT r.g, {rk} AS rtk, {sk} AS rsk, t.name, t.value, t.created_at, t.id
      FROM scores t JOIN req r ON {rk} = {tk}
      WHERE {judged_sql(d)} AND ({annotations_where})
    ) j GROUP BY g, rtk, rsk, name
  ) k
) x GROUP BY ALL"""
        ),
        req.params,
    )
