"""Tiny causal language models and real PEFT adapters, built offline in seconds.

Needs the ``[hf]`` extra (torch, transformers, peft, tokenizers), imported lazily so that
importing this module costs nothing. Everything is built from scratch — a byte-level BPE
tokenizer trained with ``tokenizers`` on the given corpus, a small Llama trained for a few
steps, then prefix-tuning or LoRA adapters trained for a few steps on their own texts — and
cached on disk under a key that hashes the whole recipe, so a second run only loads.

Typical use (the tests and ``prefixscope demo`` do this)::

    base = build_base(corpus, cache_dir=".cache/tinymodels")
    rad = train_prefix(base, radiology_texts, "radiology", num_virtual_tokens=8)
    derm = train_prefix(base, dermatology_texts, "dermatology", num_virtual_tokens=8)
    model = load_with_adapters(base, [rad, derm])   # a PeftModel
    model.set_adapter("radiology")
    model.generate(**base.tokenizer(["note: ..."], return_tensors="pt"), max_new_tokens=16)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import training

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

__all__ = [
    "SAMPLE_CORPUS",
    "Adapter",
    "TinyBase",
    "TinyConfig",
    "build_base",
    "load_base",
    "load_with_adapters",
    "train_lora",
    "train_prefix",
]

#: Bump when the on-disk layout or the training procedure changes (invalidates the cache).
RECIPE_VERSION = 2
DEFAULT_NAME = "prefixscope-tiny-llama"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)

#: A small generic corpus for a base model when the caller has nothing better.
SAMPLE_CORPUS: tuple[str, ...] = (
    "the patient was seen in clinic today and the note was written by the physician.",
    "the report lists the findings, the impression and the plan for follow up.",
    "a short summary of the visit is added to the record after every encounter.",
    "the physician reviewed the history, the medications and the allergies.",
    "vital signs were stable and the patient was discharged home in good condition.",
    "the plan is to repeat the test in six weeks and to call with the results.",
    "the code for the diagnosis is recorded with the note in the billing system.",
    "no acute distress was noted and the examination was otherwise unremarkable.",
)


@dataclass(frozen=True)
class TinyConfig:
    """Architecture of the tiny Llama (head dim 32, vLLM-compatible)."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512


@dataclass
class TinyBase:
    """A built base model: the model (eval mode), its tokenizer and where both are saved."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    path: Path
    key: str
    name: str = DEFAULT_NAME


@dataclass(frozen=True)
class Adapter:
    """A trained adapter saved with ``save_pretrained`` (load it with ``load_with_adapters``)."""

    name: str
    path: Path
    peft_type: Literal["prefix_tuning", "lora"]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _key(recipe: dict[str, Any]) -> str:
    blob = json.dumps({"v": RECIPE_VERSION, **recipe}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _default_cache_dir() -> Path:
    return Path(os.environ.get("PREFIXSCOPE_TINYMODELS_CACHE", ".cache/tinymodels"))


def _publish(build_dir: Path, final: Path) -> None:
    """Move a finished build into place atomically; if another process won, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(build_dir, final)
    except OSError:
        if not (final / "DONE").exists():
            raise
        shutil.rmtree(build_dir, ignore_errors=True)


def _train_tokenizer(corpus: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",  # decoder-only batched generation pads on the left
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def load_base(path: str | os.PathLike[str]) -> TinyBase:
    """Load a base built by :func:`build_base` from its directory."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    meta = json.loads((path / "prefixscope_recipe.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    return TinyBase(model, tokenizer, path, meta["key"], meta["name"])


def build_base(
    corpus: Sequence[str] = SAMPLE_CORPUS,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    name: str = DEFAULT_NAME,
    config: TinyConfig | None = None,
    train_steps: int = 150,
    lr: float = 1e-2,
    batch_size: int = 8,
    max_length: int = 64,
    seed: int = 0,
) -> TinyBase:
    """Build (or load from cache) a tiny Llama with a tokenizer trained on ``corpus``.

    The model is trained for ``train_steps`` language-modelling steps on ``corpus`` so that
    generations are not pure noise. Saved at ``<cache_dir>/<key>/<name>`` (so the model's
    ``name_or_path`` ends with ``name``).
    """
    config = config or TinyConfig()
    recipe = {
        "kind": "base",
        "name": name,
        "corpus": list(corpus),
        "config": asdict(config),
        "train_steps": train_steps,
        "lr": lr,
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
    }
    key = _key(recipe)
    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    final = root / f"base-{key}"
    if not (final / "DONE").exists():
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)
        tokenizer = _train_tokenizer(corpus, config.vocab_size)
        model_config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            max_position_embeddings=config.max_position_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(model_config)
        batches = training.batches(
            tokenizer, list(corpus), train_steps, batch_size, max_length, seed
        )
        loss = training.train(model, batches, lr)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        root.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        model.save_pretrained(build / name)
        tokenizer.save_pretrained(build / name)
        meta = {"key": key, "name": name, "final_loss": loss, "recipe": recipe}
        (build / name / "prefixscope_recipe.json").write_text(json.dumps(meta, indent=1))
        (build / "DONE").write_text(key)
        _publish(build, final)
    return load_base(final / name)


def _train_adapter(
    base: TinyBase,
    texts: Sequence[str],
    name: str,
    peft_config: Any,
    peft_type: Literal["prefix_tuning", "lora"],
    recipe: dict[str, Any],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    max_length: int,
    seed: int,
    cache_dir: str | os.PathLike[str] | None,
    completion_marker: str | None = None,
) -> Adapter:
    recipe = {
        **recipe,
        "completion_marker": completion_marker,
        "base": base.key,
        "name": name,
        "texts": list(texts),
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
    }
    key = _key(recipe)
    root = Path(cache_dir) if cache_dir is not None else base.path.parent.parent / "adapters"
    final = root / f"{peft_type}-{key}"
    if not (final / "DONE").exists():
        import torch
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        # A fresh copy: LoRA injects layers into the model it wraps.
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base.path), peft_config)
        batches = training.batches(
            base.tokenizer, list(texts), steps, batch_size, max_length, seed, completion_marker
        )
        loss = training.train(model, batches, lr)
        root.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        model.save_pretrained(build / name)
        meta = {"key": key, "final_loss": loss, "recipe": recipe}
        (build / name / "prefixscope_recipe.json").write_text(json.dumps(meta, indent=1))
        (build / "DONE").write_text(key)
        _publish(build, final)
    meta = json.loads((final / name / "prefixscope_recipe.json").read_text())
    return Adapter(name, final / name, peft_type, {"final_loss": meta["final_loss"]})


def train_prefix(
    base: TinyBase,
    texts: Sequence[str],
    name: str,
    num_virtual_tokens: int = 8,
    steps: int = 80,
    *,
    lr: float = 3e-2,
    batch_size: int = 8,
    max_length: int = 64,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    completion_marker: str | None = None,
    prefix_projection: bool = False,
) -> Adapter:
    """Train (or load from cache) a real PEFT prefix-tuning adapter on ``texts``.

    With ``completion_marker`` (e.g. ``"code:"``) only the answer after it is trained on.

    The base should have seen the adapter's vocabulary (build it on a corpus that includes
    these texts): the prefix then learns to steer the base towards them, which a few dozen
    steps do (about a second on two CPU cores).
    """
    from peft import PrefixTuningConfig, TaskType

    cfg = PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=num_virtual_tokens,
        prefix_projection=prefix_projection,
        encoder_hidden_size=base.model.config.hidden_size,
    )
    recipe = {"kind": "prefix_tuning", "num_virtual_tokens": num_virtual_tokens}
    if prefix_projection:  # the MLP reparameterisation of the prefix (more stable training)
        recipe["prefix_projection"] = True
    return _train_adapter(
        base,
        texts,
        name,
        cfg,
        "prefix_tuning",
        recipe,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        cache_dir=cache_dir,
        completion_marker=completion_marker,
    )


def train_lora(
    base: TinyBase,
    texts: Sequence[str],
    name: str,
    r: int = 8,
    steps: int = 40,
    *,
    target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    lr: float = 1e-2,
    batch_size: int = 8,
    max_length: int = 64,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Adapter:
    """Train (or load from cache) a real PEFT LoRA adapter on ``texts`` (vLLM can serve it)."""
    from peft import LoraConfig, TaskType

    cfg = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=2 * r,
        lora_dropout=0.0,
        target_modules=list(target_modules),
    )
    recipe = {"kind": "lora", "r": r, "target_modules": sorted(target_modules)}
    return _train_adapter(
        base,
        texts,
        name,
        cfg,
        "lora",
        recipe,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        cache_dir=cache_dir,
    )


def load_with_adapters(
    base: TinyBase | str | os.PathLike[str], adapters: Sequence[Adapter]
) -> PeftModel:
    """A fresh copy of the base with every adapter loaded; the first one is active.

    Switch with ``model.set_adapter(name)``. The returned model is in eval mode.
    """
    if not adapters:
        raise ValueError("load_with_adapters needs at least one adapter")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_path = base.path if isinstance(base, TinyBase) else Path(base)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    first, *rest = adapters
    peft_model = PeftModel.from_pretrained(model, first.path, adapter_name=first.name)
    for adapter in rest:
        peft_model.load_adapter(adapter.path, adapter_name=adapter.name)
    peft_model.set_adapter(first.name)
    peft_model.eval()
    return peft_model
