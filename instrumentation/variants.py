"""Which variant is serving: ``variant(...)`` scopes and the span processor that stamps them.

The active variant lives in a :class:`contextvars.ContextVar`, so it follows the code that runs
inside the scope: nested scopes, asyncio tasks (they copy the context when created) and threads
started with a copied context (``contextvars.copy_context().run``, or an executor wrapper that
propagates the context). A scope holds one flat, immutable attribute mapping that is computed
once on entry, so stamping a span costs a dictionary merge, not a re-encoding.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.util.types import AttributeValue

from prefixscope import semconv

from . import _settings, _steps

__all__ = [
    "VariantScope",
    "VariantSpanProcessor",
    "current_attributes",
    "set_default_attributes",
    "variant",
    "variant_attributes",
]

F = TypeVar("F", bound=Callable[..., Any])
Attributes = Mapping[str, AttributeValue]

_EMPTY: Attributes = MappingProxyType({})
_CURRENT: ContextVar[Attributes] = ContextVar("prefixscope_variant", default=_EMPTY)
#: Process-wide defaults (e.g. ``base_model`` from ``configure``); a scope overrides them.
_DEFAULTS: Attributes = _EMPTY


def _attribute_value(value: Any) -> AttributeValue:
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)


def variant_attributes(
    *,
    prefix_id: str | None = None,
    prefix_version: str | int | None = None,
    prefix_type: str | None = None,
    route: str | None = None,
    prompt_version: str | int | None = None,
    base_model: str | None = None,
    session_id: str | None = None,
    cohort: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, AttributeValue]:
    """The flat span attributes for these variant fields (``None`` fields are left out)."""
    out: dict[str, AttributeValue] = {}
    if attributes:
        out.update((k, _attribute_value(v)) for k, v in attributes.items() if v is not None)
    for key, value in (
        (semconv.PREFIX_ID, prefix_id),
        (semconv.PREFIX_VERSION, prefix_version),
        (semconv.PREFIX_TYPE, prefix_type),
        (semconv.ROUTE, route),
        (semconv.PROMPT_VERSION, prompt_version),
        (semconv.BASE_MODEL, base_model),
        (semconv.SESSION_ID, session_id),
    ):
        if value is not None:
            out[key] = str(value)  # the wire contract says strings (e.g. prefix.version "3")
    if cohort:
        for key, value in cohort.items():
            if value is not None:
                out[semconv.COHORT_PREFIX + str(key)] = _attribute_value(value)
    return out


def current_attributes() -> Attributes:
    """The variant attributes in effect here: process defaults overridden by active scopes."""
    scoped = _CURRENT.get()
    if not _DEFAULTS:
        return scoped
    if not scoped:
        return _DEFAULTS
    return {**_DEFAULTS, **scoped}


def set_default_attributes(attributes: Mapping[str, AttributeValue]) -> None:
    """Set process-wide defaults (``configure`` calls this with ``base_model``)."""
    global _DEFAULTS
    _DEFAULTS = MappingProxyType(dict(attributes))


def _enter(own: Attributes) -> Token[Attributes]:
    return _CURRENT.set(MappingProxyType({**_CURRENT.get(), **own}))


def new_scope(own: Attributes) -> Attributes:
    """``own`` plus a fresh ``variant.scope`` id: one per entry of a scope, so the collector
    can tell this scope's spans from an enclosing or a sibling scope's (the outermost span of
    a scope and the model call inside it are one request). Empty stays empty."""
    if not own:
        return own
    return MappingProxyType({**own, semconv.VARIANT_SCOPE: f"{random.getrandbits(64):016x}"})


class _VariantObserver(_steps.StepObserver):
    """Enters the scope around each step of a decorated generator."""

    __slots__ = ("_own",)

    def __init__(self, own: Attributes) -> None:
        self._own = new_scope(own)  # one scope for the whole stream, entered per step

    def enter(self) -> object:
        return _enter(self._own)

    def leave(self, token: Any) -> None:
        _CURRENT.reset(token)


class VariantScope:
    """Context manager and decorator returned by :func:`variant`.

    Used with ``with``, the scope may be nested and re-entered; used as a decorator, every call
    enters its own scope (sync and async functions, generators and async generators: for the
    latter two the scope is active while the generator body runs, not while the caller holds it).
    """

    __slots__ = ("_tokens", "attributes")

    def __init__(self, attributes: Attributes) -> None:
        self.attributes: Attributes = MappingProxyType(dict(attributes))
        self._tokens: list[Token[Attributes]] = []

    def __enter__(self) -> Attributes:
        token = _enter(new_scope(self.attributes))
        self._tokens.append(token)
        return _CURRENT.get()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # One scope object may be entered by several threads or tasks at once; each may only
        # reset the token it made in its own context, so find the newest one that fits.
        for i in range(len(self._tokens) - 1, -1, -1):
            try:
                _CURRENT.reset(self._tokens[i])
            except ValueError:  # made in another context
                continue
            del self._tokens[i]
            return

    async def __aenter__(self) -> Attributes:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        own = self.attributes

        def make_observer() -> _steps.StepObserver:
            return _VariantObserver(own)

        if inspect.isasyncgenfunction(func):
            return _steps.wrap_asyncgen_function(func, make_observer)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(func):
            return _steps.wrap_generator_function(func, make_observer)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = _enter(new_scope(own))
                try:
                    return await func(*args, **kwargs)
                finally:
                    _CURRENT.reset(token)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _enter(new_scope(own))
            try:
                return func(*args, **kwargs)
            finally:
                _CURRENT.reset(token)

        return wrapper  # type: ignore[return-value]


def variant(
    *,
    prefix_id: str | None = None,
    prefix_version: str | int | None = None,
    prefix_type: str | None = None,
    route: str | None = None,
    prompt_version: str | int | None = None,
    base_model: str | None = None,
    session_id: str | None = None,
    cohort: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> VariantScope:
    """Name the variant for every span started inside (a context manager and a decorator).

    ``prefix_id`` etc. map to the wire attributes of DESIGN.md; ``cohort={"specialty": "x"}``
    becomes ``cohort.specialty``; ``attributes`` adds any other span attributes. Inner scopes
    override outer ones field by field; cohorts merge key by key.
    """
    return VariantScope(
        variant_attributes(
            prefix_id=prefix_id,
            prefix_version=prefix_version,
            prefix_type=prefix_type,
            route=route,
            prompt_version=prompt_version,
            base_model=base_model,
            session_id=session_id,
            cohort=cohort,
            attributes=attributes,
        )
    )


class VariantSpanProcessor(SpanProcessor):
    """Stamps the active variant's attributes on every span as it starts.

    This is what puts ``prefix.id``, ``route``, ``cohort.*``, ... on spans made by *other*
    instrumentations (HTTP clients, frameworks); PrefixScope's own spans carry them already.
    Attributes the span already carries win: an instrumentation that set ``prefix.id``
    explicitly is not overwritten. ``configure`` installs it; with your own tracer provider,
    add it with ``provider.add_span_processor(VariantSpanProcessor())``.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attrs = current_attributes()
        if not attrs:
            return
        scope = span.instrumentation_scope
        if scope is not None and scope.name == _settings.TRACER_NAME:
            return  # our own instrumentation stamps the variant when it starts the span
        existing = span.attributes or _EMPTY
        missing = {k: v for k, v in attrs.items() if k not in existing}
        if missing:
            span.set_attributes(missing)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
