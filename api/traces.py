"""One trace as a span tree, with its scores and feedback (the dashboard's trace view)."""

from __future__ import annotations

import json
from typing import Any

from prefixscope.collector.spans import messages
from prefixscope.collector.storage.store import Store

from .models import SpanNode, TraceFeedback, TraceScore, TraceView

_SPAN_COLUMNS = (
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "service_name",
    "start_time",
    "end_time",
    "duration_ms",
    "status_code",
    "status_message",
    "prefix_id",
    "prefix_version",
    "base_model",
    "route",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "ttft_ms",
    "fallback_reason",
    "attributes",
    "resource",
    "events",
    "links",
    "scope_name",
    "scope_version",
    "request_model",
    "response_model",
)
_SCORE_COLUMNS = ("id", "span_id", "name", "value", "label", "reason", "source", "created_at")
_FEEDBACK_COLUMNS = ("id", "span_id", "kind", "value", "comment", "created_at")
#: A trace view shows at most this many spans (the rest are counted, not shown).
MAX_SPANS = 5_000
#: Deeper spans are shown as extra roots (keeps the response bounded and serialisable).
MAX_DEPTH = 64


def _json_obj(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {"_raw": str(text)}
    return value if isinstance(value, dict) else {"_value": value}


def _json_list(text: Any) -> list[Any]:
    if not text:
        return []
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except (TypeError, ValueError):
        return [{"_raw": str(text)}]
    return value if isinstance(value, list) else [value]


def get_trace(store: Store, trace_id: str) -> TraceView | None:
    trace_id = trace_id.lower()
    cur = store.cursor()
    try:
        spans = cur.execute(
            f"SELECT {', '.join(_SPAN_COLUMNS)} FROM spans WHERE trace_id = ? "
            "ORDER BY start_time NULLS LAST, span_id LIMIT ?",
            [trace_id, MAX_SPANS],
        ).fetchall()
        count_row = cur.execute("SELECT count(*) FROM spans WHERE trace_id = ?", [trace_id])
        span_count = int((count_row.fetchone() or (0,))[0])
        scores = cur.execute(
            f"SELECT {', '.join(_SCORE_COLUMNS)} FROM scores WHERE trace_id = ? "
            "ORDER BY created_at, name",
            [trace_id],
        ).fetchall()
        feedback = cur.execute(
            f"SELECT {', '.join(_FEEDBACK_COLUMNS)} FROM feedback WHERE trace_id = ? "
            "ORDER BY created_at",
            [trace_id],
        ).fetchall()
        log_events: dict[str, list[tuple[str, Any]]] = {}
        for span_id, name, body in cur.execute(
            "SELECT span_id, event_name, body FROM log_events WHERE trace_id = ? ORDER BY time",
            [trace_id],
        ).fetchall():
            log_events.setdefault(span_id, []).append((name, json.loads(body) if body else None))
    finally:
        cur.close()
    if not spans and not scores and not feedback:
        return None
    nodes = {}
    for row in spans:
        rec = dict(zip(_SPAN_COLUMNS, row, strict=True))
        rec["attributes"] = _json_obj(rec["attributes"])
        rec["resource"] = _json_obj(rec["resource"])
        rec["events"] = _json_list(rec["events"])
        rec["links"] = _json_list(rec["links"])
        own_logs = log_events.get(rec["span_id"], [])
        rec["log_events"] = [{"name": n, "body": b} for n, b in own_logs]
        msgs = messages.extract(rec["attributes"], own_logs)
        rec["input_text"], rec["output_text"] = msgs.input, msgs.output
        nodes[rec["span_id"]] = SpanNode(**rec)
    roots: list[SpanNode] = []
    for node in nodes.values():  # already in start order, so children are too
        parent = nodes.get(node.parent_span_id or "")
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            roots.append(node)
    starts = [n.start_time for n in nodes.values() if n.start_time is not None]
    ends = [n.end_time for n in nodes.values() if n.end_time is not None]
    duration = (max(ends) - min(starts)).total_seconds() * 1000.0 if starts and ends else None
    return TraceView(
        trace_id=trace_id,
        span_count=span_count,
        start_time=min(starts) if starts else None,
        duration_ms=duration,
        roots=_break_cycles(roots, nodes),
        scores=[TraceScore(**dict(zip(_SCORE_COLUMNS, r, strict=True))) for r in scores],
        feedback=[TraceFeedback(**dict(zip(_FEEDBACK_COLUMNS, r, strict=True))) for r in feedback],
    )


def _break_cycles(roots: list[SpanNode], nodes: dict[str, SpanNode]) -> list[SpanNode]:
    """Make the parent links a forest of bounded depth, whatever the input.

    Spans whose parent chain loops (hostile input) never reach a root, and spans nested
    deeper than :data:`MAX_DEPTH`, are detached from their parent and listed as roots.
    """
    placed: set[str] = set()
    out: list[SpanNode] = []
    pending = list(roots)
    while True:
        while pending:
            root = pending.pop(0)
            out.append(root)
            placed.add(root.span_id)
            stack = [(root, 0)]
            while stack:
                node, depth = stack.pop()
                keep = []
                for child in node.children:
                    if child.span_id in placed:
                        continue
                    if depth + 1 >= MAX_DEPTH:
                        pending.append(child)
                        continue
                    placed.add(child.span_id)
                    keep.append(child)
                    stack.append((child, depth + 1))
                node.children = keep
        rest = [n for sid, n in nodes.items() if sid not in placed]
        if not rest:
            return out
        pending.append(rest[0])
