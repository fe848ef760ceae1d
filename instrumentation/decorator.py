"""``@trace``: one span per call of any function, plus helpers for the current span.

The wrapper changes nothing the caller can observe: same signature (``functools.wraps``), same
return value, the same exception object re-raised, and the same kind of callable (coroutine
functions stay coroutine functions, generator functions stay generator functions), so
frameworks that inspect the callable treat it as before. Telemetry failures are swallowed;
the function's own errors never are.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from contextvars import Token
from time import perf_counter
from typing import Any, NamedTuple, TypeVar, Unpack, overload

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from prefixscope import __version__, semconv

from . import _settings, _steps, variants
from .variants import VariantFields

__all__ = ["SpanIds", "current_ids", "record_exception", "record_fallback", "trace"]

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

TRACER_NAME = _settings.TRACER_NAME


def get_tracer(tracer_provider: TracerProvider | None = None) -> otel_trace.Tracer:
    """Our tracer from ``tracer_provider``, or from the global provider (resolved lazily)."""
    return otel_trace.get_tracer(TRACER_NAME, __version__, tracer_provider=tracer_provider)


def record_exception(span: Span, exc: BaseException) -> None:
    """Record ``exc`` on ``span`` and mark it failed; never raises."""
    try:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    except Exception:  # pragma: no cover - a broken SDK must not hide the app's error
        log.debug("could not record exception on span", exc_info=True)


class _Call:
    """The span (and scope) of one call; every telemetry step is guarded."""

    __slots__ = ("ctx", "ctx_token", "span", "t0", "variant_token")

    def __init__(
        self,
        tracer: otel_trace.Tracer,
        name: str,
        kind: SpanKind,
        static: Mapping[str, AttributeValue],
        own: Mapping[str, AttributeValue],
    ) -> None:
        self.variant_token: Token[Any] | None = variants._enter(own) if own else None
        self.ctx_token: object = None
        self.span: Span | None = None
        self.ctx: otel_context.Context | None = None
        try:
            attrs = variants.current_attributes()
            if static:
                attrs = {**attrs, **static}
            self.span = tracer.start_span(name, kind=kind, attributes=attrs or None)
            self.ctx = otel_trace.set_span_in_context(self.span)
        except Exception:
            log.debug("could not start span %s", name, exc_info=True)
        self.t0 = perf_counter()

    def attach(self) -> None:
        if self.ctx is not None:
            self.ctx_token = otel_context.attach(self.ctx)

    def detach(self) -> None:
        if self.ctx_token is not None:
            otel_context.detach(self.ctx_token)  # type: ignore[arg-type]
            self.ctx_token = None

    def end(self, error: BaseException | None) -> None:
        try:
            if self.variant_token is not None:
                variants._CURRENT.reset(self.variant_token)
                self.variant_token = None
        except ValueError:  # pragma: no cover - finished in another context (generators)
            pass
        span = self.span
        if span is None:
            return
        if isinstance(error, Exception):
            record_exception(span, error)
        try:
            span.end()
        except Exception:  # pragma: no cover
            log.debug("could not end span", exc_info=True)


class _StreamObserver(_steps.StepObserver):
    """Keeps the span current while the generator body runs; ends it with the stream."""

    __slots__ = ("_call", "_first", "_own")

    def __init__(self, call: _Call, own: Mapping[str, AttributeValue]) -> None:
        self._call = call
        self._own = own
        self._first = True

    def enter(self) -> object:
        token = variants._enter(self._own) if self._own else None
        self._call.attach()
        return token

    def leave(self, token: Any) -> None:
        self._call.detach()
        if token is not None:
            variants._CURRENT.reset(token)

    def item(self, value: Any) -> None:
        if self._first:
            self._first = False
            span = self._call.span
            if span is not None:
                try:
                    span.set_attribute(
                        semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, perf_counter() - self._call.t0
                    )
                except Exception:  # pragma: no cover
                    log.debug("could not record time to first chunk", exc_info=True)

    def finish(self, error: BaseException | None) -> None:
        self._call.end(error)


def _decorate(
    fn: Callable[..., Any],
    tracer: otel_trace.Tracer,
    name: str,
    kind: SpanKind,
    static: Mapping[str, AttributeValue],
    own: Mapping[str, AttributeValue],
) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):

        def observe() -> _steps.StepObserver:
            # The stream's scope is entered per step by the observer, not held by the call.
            scoped = variants.new_scope(own)
            call = _Call(tracer, name, kind, static, scoped)
            if call.variant_token is not None:
                variants._CURRENT.reset(call.variant_token)
                call.variant_token = None
            return _StreamObserver(call, scoped)

        if inspect.isasyncgenfunction(fn):
            return _steps.wrap_asyncgen_function(fn, observe)
        return _steps.wrap_generator_function(fn, observe)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = _Call(tracer, name, kind, static, variants.new_scope(own))
            call.attach()
            error: BaseException | None = None
            try:
                return await fn(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.detach()
                call.end(error)

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = _Call(tracer, name, kind, static, variants.new_scope(own))
        call.attach()
        error: BaseException | None = None
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.detach()
            call.end(error)

    return wrapper


@overload
def trace(func: F, /) -> F: ...


@overload
def trace(
    func: None = None,
    /,
    *,
    name: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    tracer_provider: TracerProvider | None = None,
    request: bool = False,
    **fields: Unpack[VariantFields],
) -> Callable[[F], F]: ...


def trace(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    tracer_provider: TracerProvider | None = None,
    request: bool = False,
    **fields: Unpack[VariantFields],
) -> Any:
    """Trace every call of the decorated function (``@trace`` or ``@trace(...)``).

    ``name`` defaults to the function's ``__qualname__``. Variant fields (the keywords of
    :class:`~prefixscope.instrumentation.variants.Variant`: ``prefix_id``, ``route``,
    ``cohort``, ...) act like a :func:`~prefixscope.instrumentation.variant` scope
    around the call: they land on this span and on every span started inside it.
    ``attributes`` are extra attributes for this span only. For generators and async
    generators the span covers the whole stream: it ends when the stream is exhausted, closed
    or fails, and records ``gen_ai.response.time_to_first_chunk`` (seconds).
    ``request=True`` marks the span as one model request (``prefixscope.span.kind``): use it
    on a function that calls a model through a client nothing instruments, or to count a
    function that makes several model calls as one request.
    """
    own = variants.Variant(**fields).attributes()
    static = variants.extra_attributes(attributes)
    if request:
        static = {**static, semconv.PREFIXSCOPE_SPAN_KIND: semconv.REQUEST_SPAN_KIND}
    tracer = get_tracer(tracer_provider)

    def decorate(fn: F) -> F:
        span_name = name or getattr(fn, "__qualname__", None) or repr(fn)
        return _decorate(fn, tracer, span_name, kind, static, own)  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def record_fallback(reason: str, *, span: Span | None = None) -> bool:
    """Set ``fallback.reason`` on ``span`` (default: the current span).

    Returns whether a recording span was there to take it.
    """
    target = span if span is not None else otel_trace.get_current_span()
    if not target.is_recording():
        return False
    try:
        target.set_attribute(semconv.FALLBACK_REASON, str(reason))
    except Exception:  # pragma: no cover
        return False
    return True


class SpanIds(NamedTuple):
    """Lower-case hex ids, as stored in the ``spans`` table and accepted by scores/feedback."""

    trace_id: str
    span_id: str

    def as_dict(self) -> dict[str, str]:
        """``{"trace_id": ..., "span_id": ...}`` for ``POST /api/v1/scores`` and feedback."""
        return {"trace_id": self.trace_id, "span_id": self.span_id}


def current_ids(span: Span | None = None) -> SpanIds | None:
    """The ids of ``span`` (default: the current span), or ``None`` outside any valid span."""
    target = span if span is not None else otel_trace.get_current_span()
    ctx = target.get_span_context()
    if not ctx.is_valid:
        return None
    return SpanIds(otel_trace.format_trace_id(ctx.trace_id), otel_trace.format_span_id(ctx.span_id))
