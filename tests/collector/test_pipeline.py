"""The one ingest call every transport makes (``IngestPipeline.export``), over a real writer,
DuckDB sink and store: its future is done only once the spans are committed, refused spans
come back as a partial success, a body that cannot be decoded answers its error and frees its
slot, and admission refuses before any work when the slots or the writer's queue are full."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from prefixscope.collector.decoding import PROTOBUF
from prefixscope.collector.pipeline.ingest import InFlight, IngestPipeline
from prefixscope.collector.pipeline.writer import GroupCommitWriter
from prefixscope.collector.storage.sinks import DuckDBSink
from prefixscope.collector.storage.store import Store, scalar
from prefixscope.config import Settings
from prefixscope.errors import BadRequest, Overloaded
from prefixscope.metrics import Metrics
from tests.support.otlp import make_body


@contextmanager
def _pipeline(tmp_path: Path, start: bool = True, **settings: object) -> Iterator[IngestPipeline]:
    s = dataclasses.replace(Settings(data_dir=tmp_path, workers=0), **settings)  # type: ignore[arg-type]
    metrics = Metrics()
    inflight = InFlight()
    with Store(tmp_path) as store:
        writer = GroupCommitWriter(
            DuckDBSink(store),
            metrics,
            queue_max_spans=s.queue_max_spans,
            batch_max_spans=s.batch_max_spans,
            more_coming=inflight.busy,
        )
        pipeline = IngestPipeline(s, writer, metrics, inflight)
        pipeline.store = store  # type: ignore[attr-defined]
        if start:
            writer.start()
        try:
            yield pipeline
        finally:
            writer.stop()
            pipeline.close()


def _stored(pipeline: IngestPipeline, trace_id: str) -> int:
    con = pipeline.store.cursor()  # type: ignore[attr-defined]
    try:
        return int(scalar(con, "SELECT count(*) FROM spans WHERE trace_id = ?", [trace_id]))
    finally:
        con.close()


def test_export_is_done_when_its_spans_are_committed(tmp_path: Path) -> None:
    with _pipeline(tmp_path) as pipeline:
        visible: list[int] = []
        futures = []
        for req_no in range(6):
            body, trace_id = make_body(req_no, 20)
            fut = pipeline.export(body, PROTOBUF, None, "http")
            fut.add_done_callback(lambda f, t=trace_id: visible.append(_stored(pipeline, t)))
            futures.append((fut, trace_id))
        results = [(f.result(timeout=30), t) for f, t in futures]
        assert [d.spans for d, _ in results] == [20] * 6
        assert [d.rejected for d, _ in results] == [0] * 6
        deadline = time.monotonic() + 10  # callbacks run just after result() wakes
        while len(visible) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert visible == [20] * 6  # every span durable when its caller hears
        assert pipeline._flight.count == 0  # every decode slot given back


def test_refused_spans_are_a_partial_success_and_the_rest_is_stored(tmp_path: Path) -> None:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    good = spans.add()
    good.trace_id, good.span_id, good.name = b"\x01" * 16, b"\x02" * 8, "ok"
    good.start_time_unix_nano, good.end_time_unix_nano = (
        1_700_000_000 * 10**9,
        1_700_000_001 * 10**9,
    )
    bad = spans.add()  # no trace id: refused, the export goes on
    bad.span_id, bad.name = b"\x03" * 8, "no trace"
    with _pipeline(tmp_path) as pipeline:
        decoded = pipeline.export(req.SerializeToString(), PROTOBUF, None, "grpc").result(30)
        assert (decoded.spans, decoded.rejected) == (1, 1)
        assert "trace" in decoded.message
        assert _stored(pipeline, (b"\x01" * 16).hex()) == 1


def test_an_undecodable_body_answers_its_error_and_frees_its_slot(tmp_path: Path) -> None:
    with _pipeline(tmp_path) as pipeline:
        fut = pipeline.export(b"\xff\x00 not protobuf", PROTOBUF, None, "http")
        with pytest.raises(BadRequest):
            fut.result(timeout=30)
        assert pipeline._flight.count == 0
        body, _ = make_body(1, 5)  # the pipeline goes on
        assert pipeline.export(body, PROTOBUF, None, "http").result(30).spans == 5


def test_admission_refuses_before_any_work(tmp_path: Path) -> None:
    with _pipeline(tmp_path) as pipeline:
        pipeline.max_inflight = 1
        body, trace_id = make_body(2, 5)
        # the one decode slot is taken
        with pipeline.admitted(), pytest.raises(Overloaded) as err:
            pipeline.export(body, PROTOBUF, None, "http")
        assert err.value.retry_after_s is not None
        assert pipeline.metrics.requests_shed._value.get() == 1
        assert _stored(pipeline, trace_id) == 0
        assert pipeline.export(body, PROTOBUF, None, "http").result(30).spans == 5


def test_a_full_writer_queue_refuses_new_exports(tmp_path: Path) -> None:
    with _pipeline(tmp_path, start=False, queue_max_spans=30) as pipeline:
        first, t1 = make_body(3, 30)  # fills the queue: the writer is not started
        accepted = pipeline.export(first, PROTOBUF, None, "http")
        deadline = time.monotonic() + 30
        while pipeline.writer.queued_spans < 30 and time.monotonic() < deadline:
            time.sleep(0.02)  # decoded in a decode thread, then queued
        assert pipeline.writer.queued_spans == 30
        second, t2 = make_body(4, 5)
        with pytest.raises(Overloaded):
            pipeline.export(second, PROTOBUF, None, "http")
        assert not accepted.done()  # not committed: not acknowledged
        pipeline.writer.start()
        assert accepted.result(30).spans == 30
        assert _stored(pipeline, t1) == 30 and _stored(pipeline, t2) == 0
