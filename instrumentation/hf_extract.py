"""What the Hugging Face instrumentor reads off models, adapters, arguments and outputs.

Every function takes framework objects duck-typed (torch and peft are imported lazily, only
where a tensor operation needs them) and may raise on exotic inputs: the instrumentor guards
each call, so a failed extraction loses an attribute, never the host call.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry.util.types import AttributeValue

from prefixscope import semconv

PROVIDER = "transformers"
OPERATION = "text_completion"

_GEN_PARAMS = (
    ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", semconv.GEN_AI_REQUEST_TOP_P),
    ("top_k", semconv.GEN_AI_REQUEST_TOP_K),
)

#: model -> {cache key: value}: the model's name, and per adapter (name, id(config)) its
#: attributes including the weights hash, computed once. Keyed weakly: models are not kept alive.
_CACHE: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _cached(model: Any) -> dict[Any, Any]:
    try:
        return _CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no caching
        return {}


def model_name(model: Any) -> str | None:
    """The base model's name: its config's ``name_or_path`` (a local path's last part)."""
    cache = _cached(model)
    if "name" not in cache:
        cache["name"] = _model_name(model)
    return cache["name"]


def _model_name(model: Any) -> str | None:
    base = model
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base) and hasattr(model, "peft_config"):
        base = get_base()
    config = getattr(base, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
    if not name:
        return getattr(config, "model_type", None) or type(base).__name__
    name = str(name)
    if os.path.isabs(name) or os.path.exists(name):
        return os.path.basename(os.path.normpath(name)) or name
    return name


def _active_adapter(model: Any) -> tuple[str, Any] | None:
    """(name, PeftConfig) of the adapter serving this call, or ``None`` for the base model."""
    peft_config = getattr(model, "peft_config", None)
    if not isinstance(peft_config, Mapping) or not peft_config:
        return None
    if getattr(model, "_adapters_disabled", False):
        return None
    if hasattr(model, "active_adapter") and not callable(model.active_adapter):
        name = model.active_adapter  # PeftModel: a property
    else:  # transformers' PeftAdapterMixin: a method, and adapters may be disabled
        if getattr(model, "_hf_peft_config_loaded", False) is False:
            return None
        names = model.active_adapters()
        if not names:
            return None
        name = names[0]
    if isinstance(name, list | tuple):
        name = name[0] if name else None
    if name is None or name not in peft_config:
        return None
    return str(name), peft_config[name]


def _peft_type(config: Any) -> str:
    peft_type = getattr(config, "peft_type", None)
    value = getattr(peft_type, "value", peft_type)
    return str(value).lower() if value is not None else "unknown"


def _content_hash(model: Any, name: str) -> str:
    """A short hash of the adapter's weights (callers cache it per adapter config)."""
    import torch
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    if isinstance(model, PeftModel):
        state = get_peft_model_state_dict(model, adapter_name=name)
    else:  # adapters loaded through transformers' PeftAdapterMixin
        state = model.get_adapter_state_dict(name)
    digest = hashlib.sha256()
    for key_name in sorted(state):
        tensor = state[key_name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(key_name.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:12]


def adapter_attributes(model: Any) -> dict[str, AttributeValue]:
    """``prefix.*`` for the active PEFT adapter (``prefix.id = "base"`` when none is active)."""
    active = _active_adapter(model)
    if active is None:
        return {semconv.PREFIX_ID: semconv.BASE_PREFIX_ID}
    name, config = active
    cache = _cached(model)
    key = (name, id(config))
    if key not in cache:
        cache[key] = _describe_adapter(model, name, config)
    return dict(cache[key])


def _describe_adapter(model: Any, name: str, config: Any) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        semconv.PREFIX_ID: name,
        semconv.PREFIX_TYPE: _peft_type(config),
    }
    tokens = getattr(config, "num_virtual_tokens", None)
    if isinstance(tokens, int):
        attrs[semconv.PREFIX_NUM_VIRTUAL_TOKENS] = tokens
    revision = getattr(config, "revision", None)
    # Weights not reachable (offloaded, quantized, ...): no version rather than no span.
    with contextlib.suppress(Exception):
        attrs[semconv.PREFIX_VERSION] = str(revision) if revision else _content_hash(model, name)
    return attrs


def model_attributes(model: Any, user: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """Model and adapter attributes for a span; keys the user set (``variant``) are kept."""
    attrs: dict[str, AttributeValue] = {
        semconv.GEN_AI_OPERATION_NAME: OPERATION,
        semconv.GEN_AI_PROVIDER_NAME: PROVIDER,
        semconv.OPENINFERENCE_SPAN_KIND: "LLM",
    }
    name = model_name(model)
    if name:
        attrs[semconv.GEN_AI_REQUEST_MODEL] = name
        attrs[semconv.BASE_MODEL] = name
    attrs.update(adapter_attributes(model))
    for key in user:
        attrs.pop(key, None)
    return attrs


def generation_value(name: str, kwargs: Mapping[str, Any], model: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    config = kwargs.get("generation_config")
    if config is not None and getattr(config, name, None) is not None:
        return getattr(config, name)
    return getattr(getattr(model, "generation_config", None), name, None)


def request_attributes(model: Any, kwargs: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """``gen_ai.request.*`` in effect (sampling parameters only when sampling is on)."""
    attrs: dict[str, AttributeValue] = {}
    max_new = generation_value("max_new_tokens", kwargs, model)
    if isinstance(max_new, int):
        attrs[semconv.GEN_AI_REQUEST_MAX_TOKENS] = max_new
    if generation_value("do_sample", kwargs, model):
        for name, key in _GEN_PARAMS:
            value = generation_value(name, kwargs, model)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attrs[key] = value
    return attrs


def wants_streamer_hook(model: Any, kwargs: Mapping[str, Any]) -> bool:
    """Whether generate() accepts a streamer for this call (not beams, paged or custom)."""
    if kwargs.get("custom_generate") is not None:
        return False
    num_beams = generation_value("num_beams", kwargs, model)
    if isinstance(num_beams, int) and num_beams > 1:
        return False
    return generation_value("cache_implementation", kwargs, model) != "paged"


def input_ids_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    ids = kwargs.get("input_ids")
    if ids is None:
        ids = args[0] if args else kwargs.get("inputs")
    return ids


def input_counts(ids: Any, kwargs: Mapping[str, Any], pad_token_id: Any) -> list[int] | None:
    """Prompt tokens per sequence (padding excluded), or ``None`` without token ids."""
    if ids is None or getattr(ids, "dim", None) is None:
        return None
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    mask = kwargs.get("attention_mask")
    if mask is not None and getattr(mask, "dim", lambda: 0)() == 2:
        return [int(n) for n in mask.sum(dim=1).tolist()]
    if isinstance(pad_token_id, int):
        return [int(n) for n in (ids != pad_token_id).sum(dim=1).tolist()]
    return [int(ids.shape[1])] * int(ids.shape[0])


def _token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [int(v) for v in (value if isinstance(value, list | tuple) else [value])]


def output_counts(
    model: Any, result: Any, prompt_len: int | None, kwargs: Mapping[str, Any]
) -> tuple[list[int], list[str]]:
    """New tokens per returned sequence (up to and including the first EOS) and why each stopped.

    Sequences that hit EOS finished with ``"stop"``, the others with ``"length"``; padding after
    an early stop is not counted.
    """
    seqs = getattr(result, "sequences", result)
    if getattr(seqs, "dim", None) is None or seqs.dim() != 2:
        return [], []
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        start = 1  # the decoder start token
    elif prompt_len is not None and seqs.shape[1] >= prompt_len:
        start = prompt_len
    else:
        return [], []
    eos = set(_token_ids(generation_value("eos_token_id", kwargs, model)))
    pad = generation_value("pad_token_id", kwargs, model)
    count_pad = isinstance(pad, int) and pad not in eos
    counts: list[int] = []
    reasons: list[str] = []
    for row in seqs[:, start:].tolist():  # one device-to-host copy, then plain Python
        for i, token in enumerate(row):
            if token in eos:
                counts.append(i + 1)
                reasons.append("stop")
                break
        else:
            counts.append(len(row) - row.count(pad) if count_pad else len(row))
            reasons.append("length")
    return counts, reasons
