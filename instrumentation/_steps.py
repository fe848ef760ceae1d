"""Drive a generator or async generator one step at a time, with hooks around each step.

Context variables set inside a generator body leak into whoever resumes it, and a span made
"current" across a ``yield`` would stay current in the caller. So the wrappers here re-enter
the observer's context around every step (``send``/``throw``/``close``) and leave it before
yielding, forwarding the full generator protocol like ``yield from`` does (PEP 380).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any


class StepObserver:
    """Hooks for one run of a wrapped generator; the defaults do nothing."""

    __slots__ = ()

    def enter(self) -> object:
        """Called before each step; the return value is passed to :meth:`leave`."""
        return None

    def leave(self, token: Any) -> None:
        """Called after each step (also when it raised)."""

    def item(self, value: Any) -> None:
        """Called with each item the generator produced, before it is handed on."""

    def finish(self, error: BaseException | None) -> None:
        """Called once: exhausted or closed (``None``) or failed (the exception)."""


def drive(gen: Generator[Any, Any, Any], obs: StepObserver) -> Generator[Any, Any, Any]:
    """``yield from gen`` with the observer's context around each step."""
    sent: Any = None
    pending: BaseException | None = None
    try:
        while True:
            token = obs.enter()
            try:
                item = gen.send(sent) if pending is None else gen.throw(pending)
            except StopIteration as stop:
                result = stop.value
                break
            finally:
                obs.leave(token)
            pending = None
            obs.item(item)
            try:
                sent = yield item
            except GeneratorExit:
                token = obs.enter()
                try:
                    gen.close()
                finally:
                    obs.leave(token)
                raise
            except BaseException as exc:
                pending = exc
    except GeneratorExit:
        obs.finish(None)
        raise
    except BaseException as exc:
        obs.finish(exc)
        raise
    obs.finish(None)
    return result


def wrap_generator_function(
    func: Callable[..., Generator[Any, Any, Any]], make_observer: Callable[[], StepObserver]
) -> Callable[..., Generator[Any, Any, Any]]:
    """A generator function that behaves like ``func`` and observes each run."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        obs = make_observer()
        try:
            gen = func(*args, **kwargs)
        except BaseException as exc:
            obs.finish(exc)
            raise
        return (yield from drive(gen, obs))

    return wrapper


async def observe_asyncgen(
    agen: AsyncGenerator[Any, Any], obs: StepObserver
) -> AsyncGenerator[Any, Any]:
    """The async twin of :func:`drive` (async generators cannot ``yield from``)."""
    sent: Any = None
    pending: BaseException | None = None
    try:
        while True:
            token = obs.enter()
            try:
                if pending is None:
                    item = await agen.asend(sent)
                else:
                    item = await agen.athrow(pending)
            except StopAsyncIteration:
                break
            finally:
                obs.leave(token)
            pending = None
            obs.item(item)
            try:
                sent = yield item
            except GeneratorExit:
                token = obs.enter()
                try:
                    await agen.aclose()
                finally:
                    obs.leave(token)
                raise
            except BaseException as exc:
                pending = exc
    except GeneratorExit:
        obs.finish(None)
        raise
    except BaseException as exc:
        obs.finish(exc)
        raise
    obs.finish(None)


def wrap_asyncgen_function(
    func: Callable[..., AsyncGenerator[Any, Any]], make_observer: Callable[[], StepObserver]
) -> Callable[..., AsyncGenerator[Any, Any]]:
    """An async generator function that behaves like ``func`` and observes each run."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        obs = make_observer()
        try:
            agen = func(*args, **kwargs)
        except BaseException as exc:
            obs.finish(exc)
            raise
        inner = observe_asyncgen(agen, obs)
        sent: Any = None
        pending: BaseException | None = None
        while True:
            try:
                item = await (inner.asend(sent) if pending is None else inner.athrow(pending))
            except StopAsyncIteration:
                return
            pending = None
            try:
                sent = yield item
            except GeneratorExit:
                await inner.aclose()
                raise
            except BaseException as exc:
                pending = exc

    return wrapper
