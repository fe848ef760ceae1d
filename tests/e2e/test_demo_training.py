"""The demo's training batches: tokenized once, they are the tensors the tokenizer gives for
the same rows (so the trained weights do not depend on how the batches are built)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from prefixscope.demo import data as demo_data
from prefixscope.demo import tinymodels, training


def tokenizer_batches(
    tokenizer: Any,
    texts: list[str],
    steps: int,
    batch_size: int,
    max_length: int,
    seed: int,
    marker: str | None,
) -> list[dict[str, torch.Tensor]]:
    """The reference: the tokenizer called on each batch's rows, padded on the right, the
    prompt's tokens (up to the marker) out of the loss."""
    gen = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token or ""
    out = []
    for _ in range(steps):
        idx = torch.randint(len(texts), (batch_size,), generator=gen).tolist()
        enc = tokenizer(
            [texts[i] + eos for i in idx],
            return_tensors="pt",
            padding=True,
            padding_side="right",
            truncation=True,
            max_length=max_length,
        )
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        for row, i in enumerate(idx):
            cut = texts[i].find(marker) if marker else -1
            if cut >= 0:
                n = len(tokenizer(texts[i][: cut + len(marker or "")])["input_ids"])
                labels[row, :n] = -100
        out.append({**enc, "labels": labels})
    return out


@pytest.mark.parametrize("marker", [None, "code:"])
def test_batches_are_the_tokenizers_tensors(marker: str | None) -> None:
    data = demo_data.build(seed=3)
    # the texts the demo trains on: the base corpus (no marker in some) and a prefix's
    texts = data.base_corpus()[::7] + data.train["cardiology"]
    tokenizer = tinymodels._train_tokenizer(data.base_corpus(), tinymodels.TinyConfig().vocab_size)
    # a short max_length: some rows are cut, as long texts are in training
    for max_length in (16, 64):
        want = tokenizer_batches(tokenizer, texts, 40, 8, max_length, 7, marker)
        got = list(training.batches(tokenizer, texts, 40, 8, max_length, 7, marker))
        assert len(got) == len(want) == 40
        truncated = 0
        for g, w in zip(got, want, strict=True):
            assert set(g) == set(w)
            for key in w:
                assert g[key].dtype == w[key].dtype and torch.equal(g[key], w[key]), key
            truncated += int((w["attention_mask"].sum(1) == max_length).sum())
        assert (truncated > 0) == (max_length == 16)
        if marker:  # the prompt is out of the loss in some rows
            assert any((w["labels"][:, 0] == -100).any() for w in want)
