"""Run evaluators over stored spans and write ``scores`` rows.

Span text comes from :func:`prefixscope.collector.spans.messages.extract` (every instrumentation
convention's message content, and the span's GenAI log events; present only when content
capture was enabled) or from a caller-supplied ``resolve(span) -> dict`` returning
the evaluator keyword arguments (``input``, ``output``, ``expected``, ``context``, ...).
Replayed spans of a golden dataset automatically get their item's ``expected`` and
``context``. Score ids are deterministic (trace, span, evaluator, source), so re-running an
evaluator replaces its score instead of adding a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from prefixscope import semconv
from prefixscope.collector.spans import messages
from prefixscope.collector.storage.arrow_rows import insert_rows

from .evaluators import EvalResult, EvaluatorProtocol


@dataclass(frozen=True, slots=True)
class ScoreRow:
    trace_id: str
    span_id: str | None
    name: str
    value: float
    label: str | None
    reason: str | None
    source: str

    @property
    def id(self) -> str:
        raw = f"{self.trace_id}/{self.span_id or ''}/{self.name}/{self.source}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


def write_scores(con: duckdb.DuckDBPyConnection, rows: Sequence[ScoreRow]) -> int:
    """Insert or replace score rows (a repeated id: the last row wins), in one statement;
    returns how many rows were given."""
    if not rows:
        return 0
    now = datetime.now(UTC).replace(tzinfo=None)
    last = list({r.id: r for r in rows}.values())
    table = pa.table(
        {
            "id": pa.array([r.id for r in last], pa.string()),
            "trace_id": pa.array([r.trace_id for r in last], pa.string()),
            "span_id": pa.array([r.span_id for r in last], pa.string()),
            "name": pa.array([r.name for r in last], pa.string()),
            "value": pa.array([float(r.value) for r in last], pa.float64()),
            "label": pa.array([r.label for r in last], pa.string()),
            "reason": pa.array([r.reason for r in last], pa.string()),
            "source": pa.array([r.source for r in last], pa.string()),
            "created_at": pa.array([now] * len(last), pa.timestamp("us")),
        }
    )
    insert_rows(con, "score_rows", table, on_conflict="replace")
    return len(rows)


def score_row(
    trace_id: str, span_id: str | None, name: str, res: EvalResult, source: str
) -> ScoreRow:
    return ScoreRow(trace_id, span_id, name, res.score, res.label, res.reason[:2000], source)


def _default_resolve(span: Mapping[str, Any]) -> dict[str, Any] | None:
    msgs = messages.extract(span["attributes"], span.get("log_events") or ())
    if msgs.output is None:
        return None
    kw: dict[str, Any] = {"input": msgs.input, "output": msgs.output}
    if span.get("expected") is not None:
        kw["expected"] = span["expected"]
    if span.get("context"):
        kw["context"] = span["context"]
    return kw


def event_pairs(raw: Any) -> list[tuple[str, Any]]:
    """``(event_name, body)`` of a span's GenAI log events, bodies parsed from JSON."""
    out = []
    for item in raw or ():
        name, body = item.values() if isinstance(item, dict) else item
        out.append((name, orjson.loads(body) if isinstance(body, str) else body))
    return out


def evaluate_spans(
    con: duckdb.DuckDBPyConnection,
    evaluators: Sequence[EvaluatorProtocol],
    *,
    span_ids: Sequence[str] | None = None,
    trace_ids: Sequence[str] | None = None,
    resolve: Callable[[Mapping[str, Any]], dict[str, Any] | None] | None = None,
    source: str = "evaluator",
    write: bool = True,
) -> list[ScoreRow]:
    """Evaluate the selected spans with every evaluator; write (and return) the scores.

    Spans without text (and for which ``resolve`` returns None) are skipped.
    """
    if not span_ids and not trace_ids:
        raise ValueError("give span_ids or trace_ids")
    rows = con.execute(
        f"""SELECT s.trace_id, s.span_id, s.attributes, i.expected, i.context,
  (SELECT list((e.event_name, e.body) ORDER BY e.time) FROM log_events e
   WHERE e.trace_id = s.trace_id AND e.span_id = s.span_id) AS log_events
FROM spans s LEFT JOIN dataset_items i
  ON i.dataset = json_extract_string(s.attributes, '$."{semconv.DATASET_NAME}"')
 AND i.item_id = json_extract_string(s.attributes, '$."{semconv.DATASET_ITEM_ID}"')
 AND i.version = coalesce(json_extract_string(s.attributes, '$."{semconv.DATASET_VERSION}"'),
                          i.version)
WHERE list_contains(?, s.span_id) OR list_contains(?, s.trace_id)
ORDER BY s.start_time""",
        [list(span_ids or []), list(trace_ids or [])],
    ).fetchall()
    resolve = resolve or _default_resolve
    targets: list[tuple[str, str, dict[str, Any]]] = []
    for trace_id, span_id, attrs, expected, context, log_events in rows:
        span = {
            "trace_id": trace_id,
            "span_id": span_id,
            "attributes": orjson.loads(attrs) if attrs else {},
            "expected": expected,
            "context": orjson.loads(context) if context else [],
            "log_events": event_pairs(log_events),
        }
        kw = resolve(span)
        if kw is not None:
            targets.append((trace_id, span_id, kw))
    out: list[ScoreRow] = []
    for ev in evaluators:
        many = getattr(ev, "evaluate_many", None)
        items = [kw for _, _, kw in targets]
        results = many(items) if many else [ev.evaluate(**kw) for kw in items]
        out += [
            score_row(t, s, ev.name, r, source)
            for (t, s, _), r in zip(targets, results, strict=True)
        ]
    if write:
        write_scores(con, out)
    return out
