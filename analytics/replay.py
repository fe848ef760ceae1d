"""Replay a golden dataset against the base model and prefix variants, traced and scored.

Every item x variant runs through ``generate(prompt, variant) -> str`` — a user function, or
:func:`hf_generator` (a PEFT model switching adapters), or a vLLM engine wrapped the same way —
inside ``variant(prefix_id=..., cohort=item.cohort, attributes={dataset.name, dataset.item_id,
replay.run_id})`` and a ``@trace``d call, so each replay is a span with ``prefix.id``. The
chosen evaluators score the output and the scores are written with the span's ids.

When no tracer provider is configured (no recording span), the span row is written straight
into the store instead, so ``prefixscope replay --data-dir`` works without a running server.
Resumable: items already scored (or stored) for the same ``run_id`` and variant are skipped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from prefixscope import semconv

from .datasets import Dataset, load_dataset
from .evaluators import EvaluatorProtocol
from .runner import score_row, write_scores

GenerateFn = Callable[[str, str], str]


@dataclass(slots=True)
class ReplayReport:
    run_id: str
    dataset: str
    variants: list[str]
    done: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _done(con: duckdb.DuckDBPyConnection, run_id: str) -> set[tuple[str, str]]:
    rows = con.execute(
        f"""SELECT DISTINCT json_extract_string(attributes, '$."{semconv.DATASET_ITEM_ID}"'),
  coalesce(nullif(prefix_id, ''), '{semconv.BASE_PREFIX_ID}')
FROM spans WHERE json_extract_string(attributes, '$."{semconv.REPLAY_RUN_ID}"') = ?
UNION SELECT split_part(source, '|', 3), split_part(source, '|', 4) FROM scores
WHERE source LIKE ?""",
        [run_id, f"replay|{run_id}|%"],
    ).fetchall()
    return {(str(a), str(b)) for a, b in rows}


def _direct_span(
    con: duckdb.DuckDBPyConnection,
    attrs: dict[str, Any],
    prefix: str,
    route: str,
    cohort: dict[str, Any],
    start: datetime,
    ms: float,
    error: str | None,
) -> tuple[str, str]:
    tid, sid = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    con.execute(
        """INSERT INTO span_rows (trace_id, span_id, name, kind, service_name, start_time, end_time,
  duration_ms, status_code, status_message, base_model, prefix_id, route, cohort, attributes,
  resource, operation, ingested_at, ingest_batch)
VALUES (?, ?, 'replay.generate', 'INTERNAL', 'prefixscope-replay', ?, ?, ?, ?, ?, ?, ?, ?, ?,
  ?, '{}', 'request', ?, 0)""",
        [
            tid,
            sid,
            start,
            start,
            ms,
            "ERROR" if error else "OK",
            error,
            attrs.get(semconv.BASE_MODEL, "unknown"),
            prefix,
            route,
            orjson.dumps(cohort).decode() if cohort else None,
            orjson.dumps(attrs).decode(),
            datetime.now(UTC).replace(tzinfo=None),
        ],
    )
    return tid, sid


def replay(
    con: duckdb.DuckDBPyConnection,
    dataset: Dataset | str,
    variants: Sequence[str],
    generate: GenerateFn,
    *,
    evaluators: Sequence[EvaluatorProtocol] = (),
    run_id: str | None = None,
    route: str = "replay",
    base_model: str | None = None,
    progress: bool = True,
    tracer_provider: Any = None,
    versions: Mapping[str, str] | None = None,
) -> ReplayReport:
    """Replay every item of ``dataset`` on each of ``variants`` (``"base"`` = base model).

    ``versions`` maps a variant to the ``prefix.version`` its spans carry (default: what the
    instrumentor reads from the adapter, e.g. a content hash), so replays and production
    traffic of the same release share one version.

    ``tracer_provider`` defaults to the global one (set by ``configure``); with none, or a
    no-op provider, span rows are written directly into the store.
    """
    from prefixscope.instrumentation import current_ids, trace, variant

    ds = load_dataset(con, dataset) if isinstance(dataset, str) else dataset
    run_id = run_id or uuid.uuid4().hex[:12]
    report = ReplayReport(run_id, ds.name, list(variants))
    done = _done(con, run_id)
    work = [(it, v) for it in ds.items for v in variants]

    @trace(name="replay.generate", tracer_provider=tracer_provider)
    def _call(prompt: str, v: str) -> tuple[str, Any]:
        return generate(prompt, v), current_ids()

    from rich.progress import Progress

    direct_traces: list[str] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"replay {ds.name} [{run_id}]", total=len(work))
        for item, v in work:
            bar.advance(task)
            if (item.item_id, v) in done:
                report.skipped += 1
                continue
            attrs = {
                semconv.DATASET_NAME: ds.name,
                semconv.DATASET_VERSION: ds.version,
                semconv.DATASET_ITEM_ID: item.item_id,
                semconv.REPLAY_RUN_ID: run_id,
            }
            start = datetime.now(UTC).replace(tzinfo=None)
            t0 = time.perf_counter()
            error, output, ids = None, "", None
            with variant(
                prefix_id=v,
                prefix_version=(versions or {}).get(v),
                route=route,
                cohort=item.cohort or None,
                base_model=base_model,
                attributes=attrs,
            ):
                try:
                    output, ids = _call(item.input, v)
                except Exception as exc:  # one bad item must not stop the replay
                    error = f"{type(exc).__name__}: {exc}"
            ms = (time.perf_counter() - t0) * 1000
            if ids is None:
                direct = {
                    **attrs,
                    semconv.PREFIX_ID: v,
                    semconv.BASE_MODEL: base_model or "unknown",
                }
                trace_id, span_id = _direct_span(
                    con, direct, v, route, item.cohort, start, ms, error
                )
                direct_traces.append(trace_id)
            else:
                trace_id, span_id = ids.trace_id, ids.span_id
            if error:
                report.failed += 1
                report.errors.append(f"{item.item_id}/{v}: {error}")
                continue
            source = f"replay|{run_id}|{item.item_id}|{v}"
            kw: dict[str, Any] = {
                "input": item.input,
                "output": output,
                "expected": item.expected,
                "context": item.context,
            }
            write_scores(
                con,
                [
                    score_row(trace_id, span_id, ev.name, ev.evaluate(**kw), source)
                    for ev in evaluators
                ],
            )
            report.done += 1
    if direct_traces:  # rows written without ingest: resolve their requests here
        from prefixscope.collector.storage.request_store import rebuild

        rebuild(
            con,
            "ingest_batch = 0 AND trace_id IN (SELECT unnest(?::VARCHAR[]))",
            [direct_traces],
        )
    return report


def hf_generator(model: Any, tokenizer: Any, *, max_new_tokens: int = 64) -> GenerateFn:
    """``generate`` for a PEFT model: ``"base"`` disables adapters, else ``set_adapter(v)``."""

    def gen(prompt: str, v: str) -> str:
        inputs = tokenizer(prompt, return_tensors="pt")
        kw = {"max_new_tokens": max_new_tokens, "do_sample": False}
        if v == semconv.BASE_PREFIX_ID:
            with model.disable_adapter():
                out = model.generate(**inputs, **kw)
        else:
            model.set_adapter(v)
            out = model.generate(**inputs, **kw)
        n = inputs["input_ids"].shape[1]
        return str(tokenizer.decode(out[0][n:], skip_special_tokens=True))

    return gen
