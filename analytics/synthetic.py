"""Seeded synthetic traffic written straight into a store (vectorised: numpy -> Arrow -> SQL).

Used by the detection simulations, the integration and engine tests and the benchmarks
(:func:`generate_lake` writes a Parquet lake instead of a store). Each
:class:`Arm` is one (prefix, version, route, cohort) population with its own latency, TTFT,
error, fallback, score and feedback distributions, so regressions can be injected exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import numpy as np
import orjson
import pyarrow as pa

_Z99 = 2.3263478740408408


@dataclass(frozen=True, slots=True)
class Arm:
    """One synthetic population of requests."""

    prefix_id: str | None = None  # None: base model
    prefix_version: str | None = None
    route: str = "default"
    cohort: dict[str, str] = field(default_factory=dict)
    n: int = 1000
    latency_median_ms: float = 400.0
    latency_sigma: float = 0.5
    #: multiply the upper tail so that p99 grows by this factor (median unchanged)
    p99_factor: float = 1.0
    ttft_median_ms: float = 80.0
    error_rate: float = 0.01
    fallback_rate: float = 0.02
    #: evaluator name -> (mean, concentration) of a Beta score distribution; concentration
    #: 0 means Bernoulli(mean) (pass/fail scores)
    scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    score_coverage: float = 1.0
    thumbs_down_rate: float = 0.05
    escalation_rate: float = 0.01
    cache_share: float = 0.3
    deployment_count: int = 0  # >0: stamp deployment.id attributes (prefix-switch view)


def _latency(rng: np.random.Generator, arm: Arm, n: int) -> np.ndarray:
    z = rng.standard_normal(n)
    sigma_up = arm.latency_sigma + np.log(arm.p99_factor) / _Z99
    sig = np.where(z > 0, sigma_up, arm.latency_sigma)
    return arm.latency_median_ms * np.exp(sig * z)


def _scores(rng: np.random.Generator, mean: float, conc: float, n: int) -> np.ndarray:
    if conc <= 0:
        return (rng.random(n) < mean).astype(np.float64)
    return rng.beta(mean * conc, (1 - mean) * conc, n)


def generate(
    con: duckdb.DuckDBPyConnection,
    arms: Sequence[Arm],
    *,
    seed: int = 0,
    start: datetime | None = None,
    duration: timedelta = timedelta(hours=1),
    id_offset: int = 0,
    base_model: str = "tiny-base",
    shape: str = "call",
    periods: int = 1,
) -> int:
    """Insert spans, scores and feedback for ``arms``; return the number of spans written.
    Each generated request is one trace; its requests are resolved (``request_rows``).

    ``periods``: the traffic of that many consecutive periods of ``duration`` from ``start``,
    each with every arm's ``n`` requests (one call: days of traffic for repeated looks).

    ``shape``: ``"call"`` — the trace is the model call alone; ``"sdk"`` — what an application
    instrumented with the SDK sends: an HTTP server span at the root (``base_model`` only,
    from the SDK's defaults), a route span opening a ``variant(...)`` scope, a DB span and the
    model call inside it (4 spans per request); scores go to the route span, as
    ``current_ids()`` inside the route gives them. Feedback is trace-level in both.

    Trace ids are ``id_offset + i`` rendered as 32 hex digits, so repeated calls with
    disjoint offsets append new traffic (growing data for repeated looks). Scores are
    created a minute after their request ends, feedback five minutes after.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    rng = np.random.default_rng(seed)
    start = start or datetime(2025, 1, 1)
    parts: dict[str, list[np.ndarray]] = {}
    strings: dict[str, list[str | None]] = {
        "prefix_id": [],
        "prefix_version": [],
        "route": [],
        "cohort": [],
    }
    score_parts: list[tuple[str, np.ndarray, np.ndarray]] = []
    fb_parts: list[tuple[str, np.ndarray]] = []
    arm_idx: list[np.ndarray] = []
    if periods < 1:
        raise ValueError(f"periods must be at least 1, got {periods}")
    total = sum(a.n for a in arms) * periods
    ids = id_offset + np.arange(total, dtype=np.int64)
    period_us = int(duration.total_seconds() * 1e6)
    pos = 0
    for ai, arm in enumerate(arms):
        n = arm.n * periods
        sl = ids[pos : pos + n]
        pos += n
        lat = _latency(rng, arm, n)
        # each period's n requests at uniform times within it
        period_start = np.repeat(np.arange(periods, dtype=np.int64), arm.n) * period_us
        cols = {
            "id": sl,
            "arm": np.full(n, ai, dtype=np.int32),
            "offset_us": period_start + rng.integers(0, period_us, n),
            "duration_ms": lat,
            "ttft_ms": np.minimum(arm.ttft_median_ms * np.exp(0.4 * rng.standard_normal(n)), lat),
            "error": rng.random(n) < arm.error_rate,
            "fallback": rng.random(n) < arm.fallback_rate,
            "input_tokens": rng.integers(50, 800, n),
            "output_tokens": rng.integers(10, 300, n),
        }
        cols["cached_tokens"] = (cols["input_tokens"] * arm.cache_share).astype(np.int64)
        cols["deployment"] = (
            rng.integers(0, arm.deployment_count, n) if arm.deployment_count else np.full(n, -1)
        )
        for k, v in cols.items():
            parts.setdefault(k, []).append(np.asarray(v))
        strings["prefix_id"].append(arm.prefix_id)
        strings["prefix_version"].append(arm.prefix_version)
        strings["route"].append(arm.route)
        strings["cohort"].append(orjson.dumps(arm.cohort).decode() if arm.cohort else None)
        for name, (mean, conc) in arm.scores.items():
            covered = rng.random(n) < arm.score_coverage
            score_parts.append((name, sl[covered], _scores(rng, mean, conc, int(covered.sum()))))
        fb_parts.append(("thumbs_down", sl[rng.random(n) < arm.thumbs_down_rate]))
        fb_parts.append(("escalation", sl[rng.random(n) < arm.escalation_rate]))
        arm_idx.append(np.full(n, ai))
    if total == 0:
        return 0
    parts_arr = {k: np.concatenate(v) for k, v in parts.items()}
    spans = pa.table(parts_arr)
    arms_tab = pa.table(
        {
            "arm": np.arange(len(arms), dtype=np.int32),
            **{k: pa.array(v) for k, v in strings.items()},
        }
    )
    con.register("_syn_spans", spans)
    con.register("_syn_arms", arms_tab)
    try:
        statements = _CALL_SQL if shape == "call" else _SDK_SQL
        for sql in statements:
            con.execute(sql, [start, start, base_model])
    finally:
        con.unregister("_syn_spans")
        con.unregister("_syn_arms")
    score_span = "printf('%016x', s.id)" if shape == "call" else "printf('%016x', s.id * 4 + 1)"
    # annotations are created after their request ends: scores a minute, feedback five
    ends_us = (parts_arr["offset_us"] + parts_arr["duration_ms"] * 1000).astype(np.int64)

    def created(ids_: np.ndarray, after_s: int) -> np.ndarray:
        return ends_us[ids_ - id_offset] + after_s * 1_000_000

    if score_parts:
        _insert_scores(con, score_parts, start, created, score_span)
    if fb_parts:
        _insert_feedback(con, fb_parts, start, created)
    from prefixscope.collector.storage.request_store import rebuild

    rebuild(
        con,
        "ingest_batch = 0 AND trace_id BETWEEN ? AND ?",
        [f"{id_offset:032x}", f"{id_offset + total - 1:032x}"],
    )
    return total * (1 if shape == "call" else 4)


SHAPES = ("call", "sdk")
_INSERT = """INSERT INTO span_rows (trace_id, span_id, parent_span_id, name, kind, service_name,
  start_time, end_time, duration_ms, status_code, base_model, request_model, prefix_id,
  prefix_version, route, input_tokens, output_tokens, cached_tokens, ttft_ms, fallback_reason,
  operation, variant_scope, cohort, attributes, resource, ingested_at, ingest_batch)"""
_T0 = "?::TIMESTAMP + to_microseconds(s.offset_us)"
_T1 = "?::TIMESTAMP + to_microseconds(s.offset_us + CAST(s.duration_ms * 1000 AS BIGINT))"
_STATUS = "CASE WHEN s.error THEN 'ERROR' ELSE 'OK' END"
_FALLBACK = "CASE WHEN s.fallback THEN 'adapter_unavailable' END"
_DEPLOYMENT = (
    "CASE WHEN s.deployment >= 0 THEN json_object('deployment.id', 'dep-' || s.deployment) "
    "ELSE '{}' END"
)
#: one span per request: the model call
_CALL_SQL = (
    f"""{_INSERT}
SELECT printf('%032x', s.id), printf('%016x', s.id), NULL, 'generate', 'CLIENT', 'synthetic',
  {_T0}, {_T1}, s.duration_ms, {_STATUS}, ?, NULL, a.prefix_id, a.prefix_version, a.route,
  s.input_tokens, s.output_tokens, s.cached_tokens, s.ttft_ms, {_FALLBACK}, NULL, NULL, a.cohort,
  {_DEPLOYMENT}, '{{}}', now()::TIMESTAMP, 0
FROM _syn_spans s JOIN _syn_arms a USING (arm)""",
)
#: four spans per request (span ids id*4 + 0..3): HTTP root > route (the variant scope) >
#: DB span, model call. The route span lasts the call plus 2-6 ms, the root 1 ms more.
_SCOPE = "printf('%08x', s.id)"
_SDK_SQL = (
    f"""{_INSERT}
SELECT printf('%032x', s.id), printf('%016x', s.id * 4 + 2), printf('%016x', s.id * 4 + 1),
  'chat', 'CLIENT', 'synthetic', {_T0}, {_T1}, s.duration_ms, {_STATUS}, ?, NULL,
  a.prefix_id, a.prefix_version, a.route, s.input_tokens, s.output_tokens, s.cached_tokens,
  s.ttft_ms, {_FALLBACK}, 'chat', {_SCOPE}, a.cohort, {_DEPLOYMENT}, '{{}}', now()::TIMESTAMP, 0
FROM _syn_spans s JOIN _syn_arms a USING (arm)""",
    f"""{_INSERT}
SELECT printf('%032x', s.id), printf('%016x', s.id * 4 + 1), printf('%016x', s.id * 4),
  'route', 'INTERNAL', 'synthetic', {_T0} - INTERVAL 2 MILLISECOND,
  {_T1} + to_microseconds(CAST(s.id % 4000 AS BIGINT)), s.duration_ms + 2 + (s.id % 4000) / 1000,
  'UNSET', ?, NULL, a.prefix_id, a.prefix_version, a.route, NULL, NULL, NULL, NULL, NULL, NULL,
  {_SCOPE}, a.cohort, '{{}}', '{{}}', now()::TIMESTAMP, 0
FROM _syn_spans s JOIN _syn_arms a USING (arm)""",
    f"""{_INSERT}
SELECT printf('%032x', s.id), printf('%016x', s.id * 4), NULL, 'POST /answer', 'SERVER',
  'synthetic', {_T0} - INTERVAL 3 MILLISECOND,
  {_T1} + to_microseconds(CAST(s.id % 4000 AS BIGINT) + 1000),
  s.duration_ms + 4 + (s.id % 4000) / 1000, 'UNSET', ?, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, '{{}}', '{{}}', now()::TIMESTAMP, 0
FROM _syn_spans s JOIN _syn_arms a USING (arm)""",
    f"""{_INSERT}
SELECT printf('%032x', s.id), printf('%016x', s.id * 4 + 3), printf('%016x', s.id * 4 + 1),
  'SELECT notes', 'CLIENT', 'synthetic', {_T0} - INTERVAL 1 MILLISECOND, {_T0}, 1.0, 'UNSET', ?,
  NULL, a.prefix_id, a.prefix_version, a.route, NULL, NULL, NULL, NULL, NULL, NULL, {_SCOPE},
  a.cohort, '{{}}', '{{}}', now()::TIMESTAMP, 0
FROM _syn_spans s JOIN _syn_arms a USING (arm)""",
)


def _insert_scores(
    con: duckdb.DuckDBPyConnection,
    parts: list[tuple[str, np.ndarray, np.ndarray]],
    start: datetime,
    created: Callable[[np.ndarray, int], np.ndarray],
    span: str = "printf('%016x', s.id)",
) -> None:
    names = sorted({p[0] for p in parts})
    code = {n: i for i, n in enumerate(names)}
    tab = pa.table(
        {
            "id": np.concatenate([p[1] for p in parts]),
            "code": np.concatenate([np.full(len(p[1]), code[p[0]], np.int32) for p in parts]),
            "value": np.concatenate([p[2] for p in parts]),
            "created_us": np.concatenate([created(p[1], 60) for p in parts]),
        }
    )
    con.register("_syn_scores", tab)
    con.register(
        "_syn_names", pa.table({"code": np.arange(len(names), dtype=np.int32), "name": names})
    )
    try:
        con.execute(
            f"""INSERT INTO score_rows (id, trace_id, span_id, name, value, source, created_at)
SELECT printf('%032x', s.id) || '-' || n.name, printf('%032x', s.id), {span},
  n.name, s.value, 'synthetic', ?::TIMESTAMP + to_microseconds(s.created_us)
FROM _syn_scores s JOIN _syn_names n USING (code)""",
            [start],
        )
    finally:
        con.unregister("_syn_scores")
        con.unregister("_syn_names")


def _insert_feedback(
    con: duckdb.DuckDBPyConnection,
    parts: list[tuple[str, np.ndarray]],
    start: datetime,
    created: Callable[[np.ndarray, int], np.ndarray],
) -> None:
    kinds = [p[0] for p in parts]
    tab = pa.table(
        {
            "id": np.concatenate([p[1] for p in parts]),
            "kind": pa.array(np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)])),
            "created_us": np.concatenate([created(p[1], 300) for p in parts]),
        }
    )
    kt = pa.table({"kind": np.arange(len(kinds)), "kind_name": kinds})
    con.register("_syn_fb", tab)
    con.register("_syn_kinds", kt)
    try:
        # trace-level feedback (span_id NULL), as end users give it
        con.execute(
            """INSERT INTO feedback_rows (id, trace_id, span_id, kind, value, created_at)
SELECT printf('%032x', f.id) || '-' || k.kind_name, printf('%032x', f.id), NULL, k.kind_name,
  1.0, ?::TIMESTAMP + to_microseconds(f.created_us)
FROM _syn_fb f JOIN _syn_kinds k USING (kind)""",
            [start],
        )
    finally:
        con.unregister("_syn_fb")
        con.unregister("_syn_kinds")


def scratch_store() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the embedded store's tables (for :func:`generate`)."""
    from prefixscope.collector.storage.schema import migrate
    from prefixscope.collector.storage.views import refresh_view

    con = duckdb.connect()
    migrate(con)
    refresh_view(con)
    return con


def generate_lake(
    lake_url: str,
    arms: Sequence[Arm],
    *,
    seed: int = 0,
    start: datetime | None = None,
    duration: timedelta = timedelta(hours=1),
    id_offset: int = 0,
    shape: str = "call",
) -> int:
    """:func:`generate` into a scratch DuckDB, then publish its spans, scores and feedback to
    the Parquet lake at ``lake_url`` as new segments (as collectors and evaluator jobs would).
    Returns the number of spans."""
    from prefixscope.collector.storage.export import export_duckdb_tables

    con = scratch_store()
    try:
        n = generate(
            con, arms, seed=seed, start=start, duration=duration, id_offset=id_offset, shape=shape
        )
        export_duckdb_tables(con, lake_url)
    finally:
        con.close()
    return n
