"""The demo models' training loop: random batches of a text list (the loss on the answer
only, after a marker) and AdamW steps over the trainable parameters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast


def batches(
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    steps: int,
    batch_size: int,
    max_length: int,
    seed: int,
    completion_marker: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Random training batches; with ``completion_marker`` the loss covers only the text
    after the marker (the answer), not the prompt before it.

    Each text is tokenized once, here: a batch is its rows' ids padded on the right, the
    tensors the tokenizer gives for the same rows (``padding=True, padding_side="right"``;
    it encodes each row alone), without a tokenizer call per step."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token or ""
    ids: list[list[int]] = tokenizer(
        [t + eos for t in texts], truncation=True, max_length=max_length
    )["input_ids"]
    # how many leading tokens of each text are its prompt (no loss on them)
    prompt = [0] * len(texts)
    if completion_marker:
        for i, text in enumerate(texts):
            cut = text.find(completion_marker)
            if cut >= 0:
                head = text[: cut + len(completion_marker)]
                prompt[i] = len(tokenizer(head, add_special_tokens=True)["input_ids"])
    pad = tokenizer.pad_token_id
    if pad is None:  # as the tokenizer's own padding refuses
        raise ValueError("the tokenizer has no pad token: batches cannot be padded")
    for _ in range(steps):
        idx = torch.randint(len(texts), (batch_size,), generator=gen).tolist()
        width = max(len(ids[i]) for i in idx)
        # right padding in training: every row's tokens keep the positions they have at
        # generation time (left padding shifts them, which a prefix cannot learn around)
        input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
            mask[row, : len(ids[i])] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        for row, i in enumerate(idx):
            labels[row, : prompt[i]] = -100
        yield {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def train(model: Any, batches: Iterator[dict[str, Any]], lr: float) -> float:
    import torch

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: one kernel per step for all parameters instead of one per parameter (the
    # same arithmetic: weights bit for bit as the per-tensor loop, ~10 % less training time)
    opt = torch.optim.AdamW(params, lr=lr, foreach=True)
    loss_value = float("nan")
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
    model.eval()
    return loss_value
