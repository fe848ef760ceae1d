"""Instrumentor lifecycle: declared dependency ranges, idempotent (un)instrument, wrapt patches.

Modelled on opentelemetry-python-contrib's ``BaseInstrumentor`` without depending on it, with
a plain registry instead of its singleton: a framework is patched by at most one instance of
an instrumentor class at a time (:data:`ACTIVE`), so ``instrument()`` twice, from any
instance, patches once, and ``Cls().uninstrument()`` restores what any instance patched (the
OTel convention). ``uninstrument()`` restores the original attributes, and a wrapper that
someone else has wrapped again is turned into a pass-through instead of being torn out from
under them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from importlib import metadata
from typing import Any, ClassVar

import wrapt
from opentelemetry import trace as otel_trace
from opentelemetry.trace import TracerProvider

from . import _settings
from .decorator import get_tracer

log = logging.getLogger(__name__)

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


class DependencyConflict(RuntimeError):
    """An instrumented package is missing or outside the declared version range."""


def check_dependencies(requirements: Collection[str]) -> None:
    """Raise :class:`DependencyConflict` unless every ``"name >= x, < y"`` is satisfied."""
    from packaging.requirements import Requirement

    for text in requirements:
        req = Requirement(text)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError as exc:
            raise DependencyConflict(f"{req.name} is not installed (need {text})") from exc
        if not req.specifier.contains(version, prereleases=True):
            raise DependencyConflict(f"{req.name} {version} is outside the supported {text}")


class _Patch:
    __slots__ = ("enabled", "name", "original", "owner", "wrapper")

    def __init__(self, owner: Any, name: str, original: Any, wrapper: Any) -> None:
        self.owner, self.name, self.original, self.wrapper = owner, name, original, wrapper
        self.enabled = True


class Instrumentor:
    """Base class: subclasses declare ``requirements`` and implement ``_instrument``."""

    #: ``"package >= a, < b"`` strings checked before patching.
    requirements: ClassVar[tuple[str, ...]] = ()
    #: Requirements that are checked only if the package is installed.
    optional_requirements: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._patches: list[_Patch] = []

    @property
    def is_instrumented(self) -> bool:
        """Whether this instrumentor's framework is patched (by any instance of the class)."""
        return type(self) in ACTIVE

    def instrumentation_dependencies(self) -> tuple[str, ...]:
        return self.requirements

    def instrument(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        skip_dep_check: bool = False,
        **kwargs: Any,
    ) -> bool:
        """Patch the framework (once). Returns whether this call patched anything."""
        if type(self) in ACTIVE:
            log.debug("%s is already instrumented", type(self).__name__)
            return False
        if not skip_dep_check:
            try:
                check_dependencies(self.requirements)
                check_dependencies(
                    [r for r in self.optional_requirements if _installed(r.split()[0])]
                )
            except DependencyConflict as exc:
                log.warning("not instrumenting: %s", exc)
                return False
        self._instrument(tracer_provider=tracer_provider, **kwargs)
        ACTIVE[type(self)] = self
        return True

    def uninstrument(self) -> bool:
        """Restore every attribute the class's active instance patched. Returns whether
        anything was instrumented."""
        active = ACTIVE.pop(type(self), None)
        if active is None:
            return False
        for patch in reversed(active._patches):
            patch.enabled = False
            current = patch.owner.__dict__.get(patch.name)
            if current is patch.wrapper:
                setattr(patch.owner, patch.name, patch.original)
            else:  # wrapped again by someone else: leave theirs, ours is now a pass-through
                log.debug("%s.%s was re-wrapped; disabling instead", patch.owner, patch.name)
        active._patches.clear()
        active._uninstrument()
        return True

    # -- for subclasses ----------------------------------------------------------------------
    def _instrument(self, *, tracer_provider: TracerProvider | None, **kwargs: Any) -> None:
        raise NotImplementedError

    def _uninstrument(self) -> None:
        return None

    def _wrap(self, owner: Any, name: str, wrapper: Wrapper) -> None:
        """Wrap ``owner.name`` (a function in the class or module ``__dict__``)."""
        original = owner.__dict__[name]
        patch = _Patch(owner, name, original, None)

        def guarded(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if not patch.enabled:
                return wrapped(*args, **kwargs)
            return wrapper(wrapped, instance, args, kwargs)

        patch.wrapper = wrapt.FunctionWrapper(original, guarded)
        setattr(owner, name, patch.wrapper)
        self._patches.append(patch)


class ModelInstrumentor(Instrumentor):
    """The model instrumentors' one ``_instrument`` path (HF ``generate``, vLLM):
    ``instrument(tracer_provider=..., capture_content=...)`` sets the tracer and the
    content-capture setting (None: the process setting from ``configure``), then
    :meth:`_patch` wraps the framework with the rest of the keywords."""

    _tracer: otel_trace.Tracer
    _capture_content: bool | None

    def _instrument(
        self,
        *,
        tracer_provider: TracerProvider | None,
        capture_content: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self._tracer = get_tracer(tracer_provider)
        self._capture_content = capture_content
        self._patch(**kwargs)

    def _patch(self, **kwargs: Any) -> None:
        raise NotImplementedError

    @property
    def tracer(self) -> otel_trace.Tracer:
        return self._tracer

    def capture(self) -> bool:
        """Whether message content goes on spans: this instrumentor's setting, else the
        process's."""
        if self._capture_content is not None:
            return self._capture_content
        return _settings.capture_content()


#: the instance that patched each instrumentor class's framework, while it is patched
ACTIVE: dict[type[Instrumentor], Instrumentor] = {}


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True
