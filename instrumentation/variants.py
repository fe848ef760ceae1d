"""Which variant is serving: ``variant(...)`` scopes and the span processor that stamps them.

The active variant lives in a :class:`contextvars.ContextVar`, so it follows the code that runs
inside the scope: nested scopes, asyncio tasks (they copy the context when created) and threads
started with a copied context (``contextvars.copy_context().run``, or an executor wrapper that
propagates the context). A scope holds one flat, immutable attribute mapping that is computed
once on entry, so stamping a span costs a dictionary merge, not a re-encoding.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import random
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, TypedDict, TypeVar, Unpack

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.util.types import AttributeValue

from prefixscope import semconv

from . import _settings, _steps

__all__ = [
    "Variant",
    "VariantFields",
    "VariantScope",
    "VariantSpanProcessor",
    "current_attributes",
    "extra_attributes",
    "set_default_attributes",
    "variant",
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


class VariantFields(TypedDict, total=False):
    """The variant keywords that :func:`variant` and :func:`~.decorator.trace` take: the
    fields of :class:`Variant` (a test keeps the two equal)."""

    prefix_id: str | None
    prefix_version: str | int | None
    prefix_type: str | None
    route: str | None
    prompt_version: str | int | None
    base_model: str | None
    session_id: str | None
    cohort: Mapping[str, Any] | None


def _wire(key: str) -> Any:
    """A field whose value goes on the wire as the string attribute ``key``."""
    return dataclasses.field(default=None, metadata={"wire": key})


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    """Which variant serves a request. Each field maps to its DESIGN.md wire attribute;
    ``cohort={"specialty": "x"}`` becomes ``cohort.specialty``; ``None`` fields are left out."""

    prefix_id: str | None = _wire(semconv.PREFIX_ID)
    prefix_version: str | int | None = _wire(semconv.PREFIX_VERSION)
    prefix_type: str | None = _wire(semconv.PREFIX_TYPE)
    route: str | None = _wire(semconv.ROUTE)
    prompt_version: str | int | None = _wire(semconv.PROMPT_VERSION)
    base_model: str | None = _wire(semconv.BASE_MODEL)
    session_id: str | None = _wire(semconv.SESSION_ID)
    cohort: Mapping[str, Any] | None = None

    def attributes(self) -> dict[str, AttributeValue]:
        """The flat span attributes of these fields."""
        out: dict[str, AttributeValue] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and "wire" in f.metadata:
                out[f.metadata["wire"]] = str(value)  # the contract says strings ("3")
        if self.cohort:
            for key, value in self.cohort.items():
                if value is not None:
                    out[semconv.COHORT_PREFIX + str(key)] = _attribute_value(value)
        return out


def extra_attributes(attributes: Mapping[str, Any] | None) -> dict[str, AttributeValue]:
    """Any other span attributes, as attribute values (``None`` values are left out)."""
    if not attributes:
        return {}
    return {k: _attribute_value(v) for k, v in attributes.items() if v is not None}


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
    *, attributes: Mapping[str, Any] | None = None, **fields: Unpack[VariantFields]
) -> VariantScope:
    """Name the variant for every span started inside (a context manager and a decorator).

    The keywords are :class:`Variant`'s fields (``prefix_id``, ``prefix_version``,
    ``prefix_type``, ``route``, ``prompt_version``, ``base_model``, ``session_id``,
    ``cohort``) and map to the wire attributes of DESIGN.md; ``cohort={"specialty": "x"}``
    becomes ``cohort.specialty``; ``attributes`` adds any other span attributes. Inner scopes
    override outer ones field by field; cohorts merge key by key.
    """
    return VariantScope({**extra_attributes(attributes), **Variant(**fields).attributes()})


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
