"""Hugging Face instrumentor: ``generate`` (plain models and PEFT, incl. prefix tuning) and
the ``text-generation`` pipeline.

One span per ``generate`` call: ``PeftModel.generate`` calls the base model's ``generate``, and
an assistant model's ``generate`` runs inside it, so nested calls are passed through. The span
names the variant automatically from the active PEFT adapter (``prefix.id`` = adapter name,
``prefix.type`` = ``peft_type``, ``prefix.num_virtual_tokens``, ``prefix.version`` = the
config's ``revision`` or a hash of the adapter weights) unless a ``variant(...)`` scope set
them; plain models report ``prefix.id = "base"``. Token counts come from the tensors (per
sequence, padding excluded), the time to first token from a streamer hook that wraps any
streamer the caller passed. Prompt and completion text are recorded by the pipeline span only
when content capture is on. Supported: ``transformers >= 4.46, < 5.20`` and
``peft >= 0.13, < 0.22`` (transformers 5.20-5.24 drop prefix-tuning adapters in generate).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from time import perf_counter
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from prefixscope import semconv

from . import hf_extract, variants
from ._wrap import ModelInstrumentor
from .decorator import record_exception

__all__ = ["TransformersInstrumentor"]

log = logging.getLogger(__name__)

#: Set while an instrumented generate() runs, so nested generate() calls add no span.
_IN_GENERATE: ContextVar[bool] = ContextVar("prefixscope_hf_generate", default=False)


class _TimingStreamer:
    """Records when the first generated token arrives; forwards everything to ``inner``.

    ``generate`` first puts the prompt (or the decoder start token), then each new token.
    """

    __slots__ = ("_inner", "_puts", "first_token_at")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._puts = 0
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        if self.first_token_at is None:
            self._puts += 1
            if self._puts == 2:
                self.first_token_at = perf_counter()
        if self._inner is not None:
            self._inner.put(value)

    def end(self) -> None:
        if self._inner is not None:
            self._inner.end()

    def __getattr__(self, name: str) -> Any:  # anything else the caller's streamer offers
        try:
            inner = object.__getattribute__(self, "_inner")
        except AttributeError:
            inner = None
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def _set_counts(span: Span, inputs: list[int] | None, outputs: list[int]) -> None:
    attrs: dict[str, AttributeValue] = {}
    if inputs is not None:
        total_in = sum(inputs)
        attrs[semconv.BATCH_SIZE] = len(inputs)
        attrs[semconv.BATCH_INPUT_TOKENS] = inputs
        attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] = total_in
        attrs[semconv.LLM_TOKEN_COUNT_PROMPT] = total_in
    if outputs:
        total_out = sum(outputs)
        attrs[semconv.BATCH_OUTPUT_TOKENS] = outputs
        attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = total_out
        attrs[semconv.LLM_TOKEN_COUNT_COMPLETION] = total_out
        if inputs is not None:
            attrs[semconv.LLM_TOKEN_COUNT_TOTAL] = sum(inputs) + total_out
    span.set_attributes(attrs)


class TransformersInstrumentor(ModelInstrumentor):
    """Traces ``GenerationMixin.generate``, ``PeftModel.generate`` and text-generation pipelines.

    ``TransformersInstrumentor().instrument(tracer_provider=..., capture_content=...)``; both
    default to the global provider and the process setting from ``configure``.
    """

    requirements = ("transformers >= 4.46, < 5.20",)
    optional_requirements = ("peft >= 0.13, < 0.22",)

    def _patch(self, **kwargs: Any) -> None:
        from transformers.generation.utils import GenerationMixin
        from transformers.pipelines.text_generation import TextGenerationPipeline

        self._wrap(GenerationMixin, "generate", self._wrap_generate)
        for owner in _peft_model_classes():
            if "generate" in owner.__dict__:
                self._wrap(owner, "generate", self._wrap_generate)
        self._wrap(TextGenerationPipeline, "__call__", self._wrap_pipeline)

    # -- generate ----------------------------------------------------------------------------
    def _wrap_generate(
        self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if _IN_GENERATE.get():
            return wrapped(*args, **kwargs)
        user = variants.current_attributes()
        try:
            span = self._tracer.start_span(
                hf_extract.OPERATION, kind=SpanKind.INTERNAL, attributes=user or None
            )
        except Exception:
            log.debug("could not start generate span", exc_info=True)
            return wrapped(*args, **kwargs)
        recording = span.is_recording()
        timer: _TimingStreamer | None = None
        inputs: list[int] | None = None
        prompt_len: int | None = None
        t0 = perf_counter()
        if recording:
            try:
                attrs = hf_extract.model_attributes(instance, user)
                attrs.update(hf_extract.request_attributes(instance, kwargs))
                span.set_attributes(attrs)
                name = attrs.get(semconv.GEN_AI_REQUEST_MODEL) or user.get(semconv.BASE_MODEL)
                if name:
                    span.update_name(f"{hf_extract.OPERATION} {name}")
                ids = hf_extract.input_ids_of(args, kwargs)
                pad = hf_extract.generation_value("pad_token_id", kwargs, instance)
                inputs = hf_extract.input_counts(ids, kwargs, pad)
                prompt_len = int(ids.shape[-1]) if inputs is not None else None
            except Exception:
                log.debug("could not describe generate call", exc_info=True)
            try:
                if kwargs.get("streamer") is not None or hf_extract.wants_streamer_hook(
                    instance, kwargs
                ):
                    timer = _TimingStreamer(kwargs.get("streamer"))
                    kwargs = {**kwargs, "streamer": timer}
            except Exception:
                log.debug("could not hook a streamer", exc_info=True)
        flag = _IN_GENERATE.set(True)
        ctx_token = otel_context.attach(otel_trace.set_span_in_context(span))
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            record_exception(span, exc)
            raise
        else:
            if recording:
                self._finish(span, instance, kwargs, result, inputs, prompt_len, timer, t0)
            return result
        finally:
            otel_context.detach(ctx_token)
            _IN_GENERATE.reset(flag)
            span.end()

    @staticmethod
    def _finish(
        span: Span,
        model: Any,
        kwargs: Mapping[str, Any],
        result: Any,
        inputs: list[int] | None,
        prompt_len: int | None,
        timer: _TimingStreamer | None,
        t0: float,
    ) -> None:
        try:
            outputs, reasons = hf_extract.output_counts(model, result, prompt_len, kwargs)
            _set_counts(span, inputs, outputs)
            if reasons:
                span.set_attribute(semconv.GEN_AI_RESPONSE_FINISH_REASONS, reasons)
            if timer is not None and timer.first_token_at is not None:
                span.set_attribute(
                    semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, timer.first_token_at - t0
                )
        except Exception:
            log.debug("could not read generate output", exc_info=True)

    # -- pipeline ----------------------------------------------------------------------------
    def _wrap_pipeline(
        self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        user = variants.current_attributes()
        try:
            span = self._tracer.start_span(
                "text_generation pipeline", kind=SpanKind.INTERNAL, attributes=user or None
            )
        except Exception:
            log.debug("could not start pipeline span", exc_info=True)
            return wrapped(*args, **kwargs)
        capture = False
        if span.is_recording():
            try:
                attrs = hf_extract.model_attributes(getattr(instance, "model", None), user)
                attrs[semconv.OPENINFERENCE_SPAN_KIND] = "CHAIN"
                attrs.pop(semconv.GEN_AI_OPERATION_NAME, None)
                span.set_attributes(attrs)
                capture = self.capture()
                if capture:
                    prompt = args[0] if args else kwargs.get("text_inputs")
                    span.set_attribute(semconv.INPUT_VALUE, _text(prompt))
            except Exception:
                log.debug("could not describe pipeline call", exc_info=True)
        ctx_token = otel_context.attach(otel_trace.set_span_in_context(span))
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            record_exception(span, exc)
            raise
        else:
            if capture:
                try:
                    span.set_attribute(semconv.OUTPUT_VALUE, _text(result))
                except Exception:
                    log.debug("could not record pipeline output", exc_info=True)
            return result
        finally:
            otel_context.detach(ctx_token)
            span.end()


def _peft_model_classes() -> tuple[type, ...]:
    try:
        import peft.peft_model as pm
    except ImportError:
        return ()
    return (pm.PeftModel, pm.PeftModelForCausalLM, pm.PeftModelForSeq2SeqLM)


def _text(value: Any) -> str:
    """Prompt or pipeline output as text: strings as they are, generated texts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in ("generated_text", "content"):
            if key in value:
                return _text(value[key])
        return str(value)
    if isinstance(value, list | tuple):
        return "\n".join(_text(v) for v in value)
    return str(value)
