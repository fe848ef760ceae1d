"""``@trace`` and ``variant``: real SDK, in-memory exporter, no mocks."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from prefixscope import semconv
from prefixscope.instrumentation import (
    VariantSpanProcessor,
    current_attributes,
    current_ids,
    record_fallback,
    trace,
    variant,
)


class Boom(Exception):
    pass


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(VariantSpanProcessor())
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    out = {s.name: s for s in exporter.get_finished_spans()}
    assert len(out) == len(exporter.get_finished_spans()), "span names are unique per test"
    return out


# -- the four kinds of callables ----------------------------------------------------------------


def test_sync_function_keeps_signature_and_result(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    def add(a: int, b: int = 2, *, c: int = 3) -> int:
        """Adds."""
        return a + b + c

    traced = trace(tracer_provider=provider)(add)
    assert traced(1, c=10) == 13
    assert traced.__name__ == "add" and traced.__doc__ == "Adds."
    assert traced.__wrapped__ is add  # type: ignore[attr-defined]
    assert inspect.signature(traced) == inspect.signature(add)
    span = spans(exporter)[add.__qualname__]
    assert span.status.status_code is StatusCode.UNSET


def test_bare_decorator_form_uses_qualname() -> None:
    @trace
    def plain() -> str:
        return "ok"

    assert plain() == "ok"
    assert plain.__name__ == "plain"


def test_coroutine_function_stays_a_coroutine_function(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @trace(tracer_provider=provider, name="coro")
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert inspect.iscoroutinefunction(double)
    assert asyncio.run(double(21)) == 42
    assert "coro" in spans(exporter)


def test_generator_forwards_send_and_return_value_and_records_ttfc(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @trace(tracer_provider=provider, name="gen")
    def echo(n: int) -> Iterator[int]:
        total = 0
        for _ in range(n):
            got = yield total
            total += got or 0
        return total

    assert inspect.isgeneratorfunction(echo)

    def consume() -> Any:
        return (yield from echo(3))

    gen = consume()
    assert next(gen) == 0
    assert gen.send(5) == 5
    assert not exporter.get_finished_spans(), "span stays open while the stream is open"
    assert gen.send(7) == 12
    with pytest.raises(StopIteration) as stop:
        gen.send(1)
    assert stop.value.value == 13
    span = spans(exporter)["gen"]
    ttfc = span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert isinstance(ttfc, float) and 0 <= ttfc <= (span.end_time - span.start_time) / 1e9


def test_generator_closed_early_ends_span_and_runs_finally(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    cleaned: list[bool] = []

    @trace(tracer_provider=provider, name="stream")
    def stream() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            cleaned.append(True)

    gen = stream()
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()
    assert cleaned == [True]
    span = spans(exporter)["stream"]
    assert span.status.status_code is StatusCode.UNSET


def test_generator_throw_is_forwarded(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @trace(tracer_provider=provider, name="catcher")
    def catcher() -> Iterator[str]:
        try:
            yield "first"
        except Boom:
            yield "caught"

    gen = catcher()
    assert next(gen) == "first"
    assert gen.throw(Boom()) == "caught"
    gen.close()
    assert spans(exporter)["catcher"].status.status_code is StatusCode.UNSET


def test_async_generator_forwards_asend_and_records_ttfc(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @trace(tracer_provider=provider, name="agen")
    async def ticks(n: int) -> AsyncIterator[int]:
        acc = 0
        for _ in range(n):
            await asyncio.sleep(0)
            got = yield acc
            acc += got or 1

    assert inspect.isasyncgenfunction(ticks)

    async def main() -> list[int]:
        agen = ticks(3)
        out = [await agen.__anext__(), await agen.asend(10), await agen.asend(100)]
        with pytest.raises(StopAsyncIteration):
            await agen.asend(0)
        return out

    assert asyncio.run(main()) == [0, 10, 110]
    assert semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in spans(exporter)["agen"].attributes


@pytest.mark.parametrize("kind", ["sync", "async", "gen", "agen"])
def test_exception_recorded_and_reraised_unchanged(
    kind: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    err = Boom("bad input")

    @trace(tracer_provider=provider, name="fail")
    def sync_fail() -> None:
        raise err

    @trace(tracer_provider=provider, name="fail")
    async def async_fail() -> None:
        raise err

    @trace(tracer_provider=provider, name="fail")
    def gen_fail() -> Iterator[int]:
        yield 1
        raise err

    @trace(tracer_provider=provider, name="fail")
    async def agen_fail() -> AsyncIterator[int]:
        yield 1
        raise err

    async def drain_async() -> None:
        async for _ in agen_fail():
            pass

    with pytest.raises(Boom) as caught:
        if kind == "sync":
            sync_fail()
        elif kind == "async":
            asyncio.run(async_fail())
        elif kind == "gen":
            list(gen_fail())
        else:
            asyncio.run(drain_async())
    assert caught.value is err
    span = spans(exporter)["fail"]
    assert span.status.status_code is StatusCode.ERROR
    assert "Boom: bad input" in (span.status.description or "")
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"].endswith("Boom")


# -- context: current span, parents, ids --------------------------------------------------------


def test_span_is_current_inside_body_but_not_between_yields(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("t")

    @trace(tracer_provider=provider, name="outer")
    def outer() -> Iterator[str]:
        with tracer.start_as_current_span("child"):
            pass
        yield "x"
        yield "y"

    gen = outer()
    next(gen)
    assert not otel_trace.get_current_span().is_recording(), "span leaked into the caller"
    list(gen)
    found = spans(exporter)
    assert found["child"].parent is not None
    assert found["child"].parent.span_id == found["outer"].context.span_id


def test_current_ids_and_record_fallback(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[Any] = []

    @trace(tracer_provider=provider, name="handler")
    def handler() -> None:
        seen.append(current_ids())
        assert record_fallback("adapter_timeout")

    handler()
    assert current_ids() is None
    assert record_fallback("nothing to record on") is False
    span = spans(exporter)["handler"]
    ids = seen[0]
    assert ids.trace_id == format(span.context.trace_id, "032x")
    assert ids.span_id == format(span.context.span_id, "016x")
    assert ids.as_dict() == {"trace_id": ids.trace_id, "span_id": ids.span_id}
    assert span.attributes[semconv.FALLBACK_REASON] == "adapter_timeout"


# -- variant scopes -----------------------------------------------------------------------------


def test_variant_nesting_overrides_and_merges_cohorts(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @trace(tracer_provider=provider)
    def call(tag: str) -> None:
        return None

    with variant(prefix_id="rad", prefix_version=3, route="imaging", cohort={"specialty": "r"}):
        call("a")
        with variant(prefix_version="4", cohort={"language": "de"}, session_id="s1"):
            call("b")
            assert current_attributes()[semconv.PREFIX_VERSION] == "4"
        call("c")
    assert dict(current_attributes()) == {}
    a, b, c = (dict(s.attributes) for s in exporter.get_finished_spans())
    # each entry of a scope has its own id (the request rule's scope): a and c are in the
    # outer one, b in the inner one; the rest is inherited
    scopes = [str(x.pop(semconv.VARIANT_SCOPE)) for x in (a, b, c)]
    assert scopes[0] == scopes[2] != scopes[1]
    assert all(re.fullmatch("[0-9a-f]{16}", x) for x in scopes)
    assert a == {
        semconv.PREFIX_ID: "rad",
        semconv.PREFIX_VERSION: "3",
        semconv.ROUTE: "imaging",
        "cohort.specialty": "r",
    }
    assert b == {
        **a,
        semconv.PREFIX_VERSION: "4",
        "cohort.language": "de",
        semconv.SESSION_ID: "s1",
    }
    assert c == a


def test_trace_variant_fields_reach_child_spans_of_other_tracers(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    foreign = provider.get_tracer("some.http.client")

    @trace(tracer_provider=provider, name="route", route="triage", cohort={"segment": "pro"})
    def route() -> None:
        with foreign.start_as_current_span("http", attributes={semconv.ROUTE: "explicit"}):
            pass

    route()
    found = spans(exporter)
    assert found["route"].attributes[semconv.ROUTE] == "triage"
    assert found["http"].attributes["cohort.segment"] == "pro"
    assert found["http"].attributes[semconv.ROUTE] == "explicit", "explicit attributes win"


def test_variant_as_decorator_for_sync_async_and_generators(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("t")
    scope = variant(prefix_id="derm")

    @scope
    def sync() -> str:
        with tracer.start_as_current_span("sync"):
            return "s"

    @scope
    async def coro() -> str:
        with tracer.start_as_current_span("coro"):
            return "c"

    @scope
    def gen() -> Iterator[str]:
        with tracer.start_as_current_span("gen"):
            yield "g"
        assert current_attributes().get(semconv.PREFIX_ID) == "derm"

    out = [sync(), asyncio.run(coro())]
    it = gen()
    out.append(next(it))
    assert semconv.PREFIX_ID not in current_attributes(), "scope leaked out of the generator"
    list(it)
    assert out == ["s", "c", "g"]
    assert {s.name: s.attributes[semconv.PREFIX_ID] for s in exporter.get_finished_spans()} == {
        "sync": "derm",
        "coro": "derm",
        "gen": "derm",
    }


def test_variant_follows_copied_context_into_threads(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @trace(tracer_provider=provider, name="copied")
    def copied() -> None:
        return None

    @trace(tracer_provider=provider, name="bare")
    def bare() -> None:
        return None

    with variant(prefix_id="cardio"):
        ctx = contextvars.copy_context()
        threads = [
            threading.Thread(target=ctx.run, args=(copied,)),
            threading.Thread(target=bare),  # a bare thread starts with an empty context
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    found = spans(exporter)
    assert found["copied"].attributes[semconv.PREFIX_ID] == "cardio"
    assert semconv.PREFIX_ID not in found["bare"].attributes


def test_variant_isolated_between_concurrent_asyncio_tasks(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @trace(tracer_provider=provider)
    async def answer(step: int) -> str:
        await asyncio.sleep(0.001 * (3 - step))
        return str(current_attributes()[semconv.PREFIX_ID])

    async def request(prefix: str) -> list[str]:
        with variant(prefix_id=prefix, cohort={"specialty": prefix}):
            return [await answer(i) for i in range(3)]

    async def main() -> list[list[str]]:
        return await asyncio.gather(request("rad"), request("derm"), request("cardio"))

    assert asyncio.run(main()) == [["rad"] * 3, ["derm"] * 3, ["cardio"] * 3]
    finished = exporter.get_finished_spans()
    assert len(finished) == 9
    for span in finished:
        assert span.attributes["cohort.specialty"] == span.attributes[semconv.PREFIX_ID]


def test_shared_scope_object_entered_by_many_tasks(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    shared = variant(route="shared")

    async def one(i: int) -> str | None:
        with shared:
            await asyncio.sleep(0.001 * (i % 3))
            value = current_attributes().get(semconv.ROUTE)
        assert semconv.ROUTE not in current_attributes()
        return str(value)

    async def main() -> list[str | None]:
        return await asyncio.gather(*(one(i) for i in range(6)))

    assert asyncio.run(main()) == ["shared"] * 6


# -- telemetry never breaks the host ------------------------------------------------------------


class ExplodingProcessor(VariantSpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("processor bug")


def test_broken_span_pipeline_does_not_break_the_function() -> None:
    tp = TracerProvider()
    tp.add_span_processor(ExplodingProcessor())

    @trace(tracer_provider=tp)
    def f(x: int) -> int:
        return x + 1

    @trace(tracer_provider=tp)
    def g() -> Iterator[int]:
        yield 1
        yield 2

    assert f(1) == 2
    assert list(g()) == [1, 2]
    with pytest.raises(ZeroDivisionError):
        trace(tracer_provider=tp)(lambda: 1 / 0)()
