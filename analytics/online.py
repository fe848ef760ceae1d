"""Online evaluation: score stored production traffic with evaluators.

``prefixscope evaluate``, ``POST /api/v1/evaluations/run`` and ``serve --evaluate-every`` all
call :func:`run_online`. It selects the requests of a window (``collector/spans/requests.py``;
filtered by route, variant or service, optionally a deterministic sample), reads each
request's text where it is (its model call's span, else the outermost span of its variant
scope; from whatever convention carried it, :mod:`prefixscope.collector.spans.messages`, GenAI log
events included) and writes one score per (request, evaluator) on the request's span with
``source="online"``.

* Idempotent: a (request, evaluator) pair that already has an online score is not scored
  again, and score ids are deterministic, so re-runs and overlapping windows never duplicate.
* A request without usable text is *skipped* and counted with the reason, never scored 0: no
  output text; or no input / context / expected answer for an evaluator that needs one.
* Sampling keeps or drops a request by a hash of its span id, so every run agrees on it.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from prefixscope.collector.spans import messages

from .engines import Engine, as_engine
from .evaluators import EvaluatorProtocol, JSONValidation, Refusal, TaskCompletion
from .query import PREFIX_SQL, REQUESTS, Window
from .runner import ScoreRow, event_pairs, score_row, write_scores

SOURCE = "online"
_SAMPLE_BUCKETS = 10_000


def builtin_evaluators() -> dict[str, Any]:
    from .semantic import AnswerRelevancy, Groundedness

    return {
        "JSONValidation": JSONValidation,
        "Refusal": Refusal,
        "TaskCompletion": TaskCompletion,
        "Groundedness": Groundedness,
        "AnswerRelevancy": AnswerRelevancy,
    }


def resolve_evaluators(names: Sequence[str]) -> list[EvaluatorProtocol]:
    """Evaluators by name: a built-in one, or ``module:factory`` for your own."""
    known = builtin_evaluators()
    out: list[EvaluatorProtocol] = []
    for name in (n.strip() for n in names if n.strip()):
        if name in known:
            out.append(known[name]())
            continue
        mod, _, attr = name.partition(":")
        if not attr:
            raise ValueError(
                f"unknown evaluator {name!r}: use one of {sorted(known)} or module:factory"
            )
        try:
            out.append(getattr(importlib.import_module(mod), attr)())
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load evaluator {name!r}: {exc}") from None
    if not out:
        raise ValueError("give at least one evaluator")
    return out


@dataclass(slots=True)
class SpanFilter:
    route: str | None = None
    prefix_id: str | None = None
    service_name: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        parts, params = [], []
        if self.route is not None:
            parts.append("s.route = ?")
            params.append(self.route)
        if self.prefix_id is not None:
            parts.append(f"{PREFIX_SQL} = ?")
            params.append(self.prefix_id)
        if self.service_name is not None:
            parts.append("s.service_name = ?")
            params.append(self.service_name)
        return " AND ".join(parts) or "TRUE", params


@dataclass(slots=True)
class OnlineReport:
    """What one run did. ``scored``/``already_scored`` count (request, evaluator) pairs;
    ``skipped`` counts them by reason; ``requests`` is how many requests matched."""

    window: dict[str, str | None]
    evaluators: list[str]
    sample: float
    requests: int = 0
    sampled_out: int = 0
    scored: dict[str, int] = field(default_factory=dict)
    already_scored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)

    @property
    def scored_total(self) -> int:
        return sum(self.scored.values())

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "evaluators": self.evaluators,
            "sample": self.sample,
            "requests": self.requests,
            "sampled_out": self.sampled_out,
            "scored": self.scored_total,
            "scored_by_evaluator": self.scored,
            "already_scored": self.already_scored,
            "skipped": self.skipped_total,
            "skipped_by_reason": self.skipped,
            "text_sources": self.sources,
        }


#: writes one batch of scores (the store's ``score_rows``, or the lake's ``scores`` table)
ScoreWriter = Callable[[Sequence[ScoreRow]], object]


def run_online(
    source: duckdb.DuckDBPyConnection | Engine,
    evaluators: Sequence[EvaluatorProtocol],
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    span_filter: SpanFilter | None = None,
    sample: float = 1.0,
    batch_size: int = 2000,
    write: ScoreWriter | None = None,
) -> OnlineReport:
    """Score the selected requests once per evaluator (see the module docstring).

    ``source``: the store (a DuckDB connection; scores go to its ``score_rows``) or an engine
    over a lake with a ``write`` of its own (``lake_writer``)."""
    if not 0 < sample <= 1:
        raise ValueError(f"sample must be in (0, 1], got {sample}")
    if not evaluators:
        raise ValueError("give at least one evaluator")
    engine = as_engine(source)
    if write is None:
        if not isinstance(source, duckdb.DuckDBPyConnection):
            raise ValueError("give write= to score through an engine")
        con = source

        def write(rows: Sequence[ScoreRow]) -> int:
            return write_scores(con, rows)

    d = engine.dialect
    window = Window.of(since, until)
    names = [ev.name for ev in evaluators]
    report = OnlineReport(window.to_dict(), names, sample)
    wsql, wparams = window.where("s")
    fsql, fparams = (span_filter or SpanFilter()).where()
    keep = round(sample * _SAMPLE_BUCKETS)
    bucket = f"({d.hex_prefix_int(d.md5('s.span_id'), 8)} % {_SAMPLE_BUCKETS})"
    counts = engine.arrow(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE {bucket} < {keep}) AS kept "
        f"FROM {REQUESTS} s WHERE {wsql} AND {fsql}",
        [*wparams, *fparams],
    ).to_pylist()[0]
    report.requests, selected = int(counts["n"]), int(counts["kept"] or 0)
    report.sampled_out = report.requests - selected
    wanted = ", ".join("'" + n.replace("'", "''") + "'" for n in names)
    events = engine.has_log_events
    ev_cte = (
        f""",
ev AS (
  SELECT e.trace_id, e.span_id, {d.collect_list("(e.event_name, e.body)", "e.time")} AS events
  FROM log_events e JOIN cand c ON c.trace_id = e.trace_id
    AND (e.span_id = c.span_id OR e.span_id = c.scope_span_id)
  GROUP BY e.trace_id, e.span_id)"""
        if events
        else ""
    )
    ev_col, sev_col = ("ev.events", "sev.events") if events else ("NULL", "NULL")
    ev_joins = (
        """
LEFT JOIN ev ON ev.trace_id = c.trace_id AND ev.span_id = c.span_id
LEFT JOIN ev sev ON sev.trace_id = c.trace_id AND sev.span_id = c.scope_span_id
  AND c.scope_span_id <> c.span_id"""
        if events
        else ""
    )
    rows = engine.arrow(
        f"""WITH cand AS (
  SELECT s.trace_id, s.span_id, s.scope_span_id, s.start_time FROM {REQUESTS} s
  WHERE {wsql} AND {fsql} AND {bucket} < {keep}),
done AS (
  SELECT sc.trace_id, sc.span_id, {d.collect_list("sc.name")} AS names FROM scores sc
  JOIN cand c ON c.trace_id = sc.trace_id AND c.span_id = sc.span_id
  WHERE sc.source = '{SOURCE}' AND sc.name IN ({wanted}) GROUP BY sc.trace_id, sc.span_id)
{ev_cte}
SELECT c.trace_id, c.span_id, x.attributes, d.names, {ev_col} AS events,
  y.attributes AS scope_attributes, {sev_col} AS scope_events
FROM cand c
LEFT JOIN spans x ON x.trace_id = c.trace_id AND x.span_id = c.span_id
LEFT JOIN spans y ON y.trace_id = c.trace_id AND y.span_id = c.scope_span_id
  AND c.scope_span_id <> c.span_id
LEFT JOIN done d ON d.trace_id = c.trace_id AND d.span_id = c.span_id{ev_joins}
ORDER BY c.start_time, c.span_id""",
        [*wparams, *fparams],
    ).to_pylist()
    skipped: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    todo: dict[str, list[tuple[str, str, dict[str, Any]]]] = {n: [] for n in names}
    for row in rows:
        trace_id, span_id = row["trace_id"], row["span_id"]
        attrs, scope_attrs = row["attributes"], row["scope_attributes"]
        done_names = set(row["names"] or ())
        report.already_scored += len(done_names)
        pending = [ev for ev in evaluators if ev.name not in done_names]
        if not pending:
            continue
        msgs = messages.extract(orjson.loads(attrs) if attrs else {}, event_pairs(row["events"]))
        if msgs.output is None and (scope_attrs or row["scope_events"]):
            # the model call carries no text: the application may have put it on its route
            msgs = messages.extract(
                orjson.loads(scope_attrs) if scope_attrs else {},
                event_pairs(row["scope_events"]),
            )
        if msgs.output is None:
            skipped["no_output_text"] += len(pending)
            continue
        sources[msgs.source or "value"] += 1
        for ev in pending:
            needs = getattr(ev, "needs", ())
            if "input" in needs and msgs.input is None:
                skipped["no_input_text"] += 1
            elif "context" in needs:
                skipped["no_context"] += 1  # retrieval context is not on production spans
            elif "expected" in needs:
                skipped["no_expected_answer"] += 1
            else:
                todo[ev.name].append(
                    (trace_id, span_id, {"input": msgs.input, "output": msgs.output})
                )
    for ev in evaluators:
        items = todo[ev.name]
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            many = getattr(ev, "evaluate_many", None)
            kws = [kw for _, _, kw in chunk]
            results = many(kws) if many else [ev.evaluate(**kw) for kw in kws]
            out: list[ScoreRow] = [
                score_row(t, s, ev.name, r, SOURCE)
                for (t, s, _), r in zip(chunk, results, strict=True)
            ]
            write(out)
        report.scored[ev.name] = len(items)
    report.skipped = dict(skipped)
    report.sources = dict(sources)
    return report


def lake_writer(lake_url: str, *, storage_options: dict[str, Any] | None = None) -> ScoreWriter:
    """Scores published to a lake's ``scores`` table (the ids are the store's: a re-run's
    copy of a score is removed by readers and compaction)."""
    import pyarrow as pa

    from prefixscope.collector.spans.model import SCORE_SCHEMA
    from prefixscope.collector.storage.tables import write_lake_table

    def write(rows: Sequence[ScoreRow]) -> int:
        if not rows:
            return 0
        now = datetime.now(UTC).replace(tzinfo=None)
        table = pa.Table.from_pylist(
            [
                {
                    "id": r.id,
                    "trace_id": r.trace_id,
                    "span_id": r.span_id,
                    "name": r.name,
                    "value": r.value,
                    "label": r.label,
                    "reason": r.reason,
                    "source": r.source,
                    "created_at": now,
                }
                for r in rows
            ],
            schema=SCORE_SCHEMA,
        )
        write_lake_table(lake_url, "scores", table, storage_options=storage_options)
        return len(rows)

    return write
