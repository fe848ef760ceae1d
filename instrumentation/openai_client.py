"""OpenAI-client calls to a vLLM (or any OpenAI-compatible) server: a CLIENT span per call.

The span's W3C ``traceparent`` travels in the request headers (``extra_headers``), so a vLLM
server started with ``--otlp-traces-endpoint`` puts its own ``llm_request`` span in the same
trace. A vLLM server serves LoRA adapters under their own model names: a request whose
``model`` is not the base model is reported with ``prefix.id = model``. Streams
(``stream=True``) keep the span open until they are exhausted or closed and record the time
to the first chunk; usage arrives in the last chunk when the caller asks for it
(``stream_options={"include_usage": True}``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from time import perf_counter
from typing import Any, Protocol

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from prefixscope import semconv

from . import variants
from .decorator import record_exception

log = logging.getLogger(__name__)

_PARAMS = (
    ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", semconv.GEN_AI_REQUEST_TOP_P),
    ("max_tokens", semconv.GEN_AI_REQUEST_MAX_TOKENS),
    ("max_completion_tokens", semconv.GEN_AI_REQUEST_MAX_TOKENS),
)


class Instrumentor(Protocol):
    """What the client wrappers need from the instrumentor that installs them (the vLLM
    instrumentor): its tracer, its content-capture setting and its patch bookkeeping."""

    @property
    def tracer(self) -> otel_trace.Tracer: ...

    def capture(self) -> bool: ...

    def _wrap(self, owner: Any, name: str, wrapper: Any) -> None: ...


def instrument(instr: Instrumentor, base_model: str | None) -> None:
    """Wrap the sync and async completions and chat-completions ``create`` methods."""
    try:
        from openai.resources import completions
        from openai.resources.chat import completions as chat
    except ImportError:
        return
    calls = _Calls(instr, base_model)
    for owner, operation in (
        (completions.Completions, "text_completion"),
        (chat.Completions, "chat"),
    ):
        instr._wrap(owner, "create", calls.sync(operation))
    for owner, operation in (
        (completions.AsyncCompletions, "text_completion"),
        (chat.AsyncCompletions, "chat"),
    ):
        instr._wrap(owner, "create", calls.async_(operation))


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def response_attributes(resp: Any, capture: bool) -> dict[str, AttributeValue]:
    """Usage, finish reasons, model and id of a (chat) completion or of a stream chunk."""
    attrs: dict[str, AttributeValue] = {}
    usage = _get(resp, "usage")
    if usage is not None:
        n_in, n_out = _get(usage, "prompt_tokens"), _get(usage, "completion_tokens")
        if isinstance(n_in, int):
            attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] = n_in
            attrs[semconv.LLM_TOKEN_COUNT_PROMPT] = n_in
        if isinstance(n_out, int):
            attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = n_out
            attrs[semconv.LLM_TOKEN_COUNT_COMPLETION] = n_out
        cached = _get(_get(usage, "prompt_tokens_details"), "cached_tokens")
        if isinstance(cached, int):
            attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = cached
    model, rid = _get(resp, "model"), _get(resp, "id")
    if model:
        attrs[semconv.GEN_AI_RESPONSE_MODEL] = str(model)
    if rid:
        attrs[semconv.GEN_AI_RESPONSE_ID] = str(rid)
    choices = _get(resp, "choices") or []
    reasons = [str(r) for r in (_get(c, "finish_reason") for c in choices) if r]
    if reasons:
        attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    if capture and choices:
        texts = [_get(c, "text") or _get(_get(c, "message"), "content") or "" for c in choices]
        attrs[semconv.OUTPUT_VALUE] = "\n".join(texts)
    return attrs


class _Calls:
    def __init__(self, instr: Instrumentor, base_model: str | None) -> None:
        self.instr = instr
        self.base_model = base_model

    def start(self, operation: str, kwargs: dict[str, Any]) -> tuple[Span, dict[str, Any]]:
        user = variants.current_attributes()
        model = kwargs.get("model")
        span = self.instr.tracer.start_span(
            f"{operation} {model}" if model else operation,
            kind=SpanKind.CLIENT,
            attributes=user or None,
        )
        if span.is_recording():
            try:
                span.set_attributes(self.request_attributes(operation, kwargs, user))
            except Exception:
                log.debug("could not describe OpenAI call", exc_info=True)
        headers = dict(kwargs.get("extra_headers") or {})
        propagate.inject(headers, context=otel_trace.set_span_in_context(span))
        return span, {**kwargs, "extra_headers": headers}

    def request_attributes(
        self, operation: str, kwargs: Mapping[str, Any], user: Mapping[str, AttributeValue]
    ) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            semconv.GEN_AI_OPERATION_NAME: operation,
            semconv.GEN_AI_PROVIDER_NAME: "vllm",
            semconv.OPENINFERENCE_SPAN_KIND: "LLM",
        }
        model = kwargs.get("model")
        if model:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = str(model)
        base = self.base_model or user.get(semconv.BASE_MODEL)
        if base:
            attrs[semconv.BASE_MODEL] = str(base)
            if model and model != base:
                attrs[semconv.PREFIX_ID] = str(model)
                attrs[semconv.PREFIX_TYPE] = "lora"
            elif model:
                attrs[semconv.PREFIX_ID] = semconv.BASE_PREFIX_ID
        for name, key in _PARAMS:
            value = kwargs.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attrs[key] = value
        if self.instr.capture():
            prompt = kwargs.get("messages", kwargs.get("prompt"))
            if prompt is not None:
                text = prompt if isinstance(prompt, str) else json.dumps(prompt, default=str)
                attrs[semconv.INPUT_VALUE] = text
        for key in user:
            attrs.pop(key, None)
        return attrs

    def finish(self, span: Span, resp: Any) -> None:
        try:
            if span.is_recording():
                span.set_attributes(response_attributes(resp, self.instr.capture()))
        except Exception:
            log.debug("could not read OpenAI response", exc_info=True)
        span.end()

    def sync(self, operation: str) -> Any:
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            try:
                span, kwargs = self.start(operation, kwargs)
            except Exception:
                log.debug("could not start OpenAI span", exc_info=True)
                return wrapped(*args, **kwargs)
            token = otel_context.attach(otel_trace.set_span_in_context(span))
            try:
                resp = wrapped(*args, **kwargs)
            except Exception as exc:
                record_exception(span, exc)
                span.end()
                raise
            finally:
                otel_context.detach(token)
            if kwargs.get("stream"):
                return _Stream(resp, span, self)
            self.finish(span, resp)
            return resp

        return wrapper

    def async_(self, operation: str) -> Any:
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            async def call() -> Any:
                nonlocal kwargs
                try:
                    span, kwargs = self.start(operation, kwargs)
                except Exception:
                    log.debug("could not start OpenAI span", exc_info=True)
                    return await wrapped(*args, **kwargs)
                token = otel_context.attach(otel_trace.set_span_in_context(span))
                try:
                    resp = await wrapped(*args, **kwargs)
                except Exception as exc:
                    record_exception(span, exc)
                    span.end()
                    raise
                finally:
                    otel_context.detach(token)
                if kwargs.get("stream"):
                    return _Stream(resp, span, self)
                self.finish(span, resp)
                return resp

            return call()

        return wrapper


class _Stream(wrapt.ObjectProxy):
    """Proxies an OpenAI ``Stream``/``AsyncStream``; the span ends with the stream."""

    def __init__(self, stream: Any, span: Span, calls: _Calls) -> None:
        super().__init__(stream)
        self._self_span = span
        self._self_calls = calls
        self._self_t0 = perf_counter()
        self._self_first = True
        self._self_attrs: dict[str, AttributeValue] = {}
        self._self_done = False

    def _self_chunk(self, chunk: Any) -> None:
        if self._self_first:
            self._self_first = False
            ttft = perf_counter() - self._self_t0
            self._self_attrs[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttft
        try:
            self._self_attrs.update(response_attributes(chunk, capture=False))
        except Exception:
            log.debug("could not read stream chunk", exc_info=True)

    def _self_end(self, error: BaseException | None = None) -> None:
        if self._self_done:
            return
        self._self_done = True
        span = self._self_span
        if isinstance(error, Exception):
            record_exception(span, error)
        if span.is_recording():
            span.set_attributes(self._self_attrs)
        span.end()

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        try:
            chunk = self.__wrapped__.__next__()
        except StopIteration:
            self._self_end()
            raise
        except Exception as exc:
            self._self_end(exc)
            raise
        self._self_chunk(chunk)
        return chunk

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_end()
            raise
        except Exception as exc:
            self._self_end(exc)
            raise
        self._self_chunk(chunk)
        return chunk

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_end()

    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.__wrapped__.__exit__(*exc)
        finally:
            self._self_end()

    async def __aenter__(self) -> Any:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.__wrapped__.__aexit__(*exc)
        finally:
            self._self_end()
