"""The Hugging Face instrumentor on a real tiny Llama with two real prefix-tuning adapters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode  # noqa: E402

from prefixscope import semconv  # noqa: E402
from prefixscope.demo import tinymodels  # noqa: E402
from prefixscope.instrumentation import VariantSpanProcessor, _settings, variant  # noqa: E402
from prefixscope.instrumentation.hf import TransformersInstrumentor  # noqa: E402

RADIOLOGY = (
    "finding: chest x-ray shows no acute disease. code R93.1",
    "finding: ct of the head is normal. code R90.8",
    "finding: mri of the knee shows a torn meniscus. code S83.2",
)
DERMATOLOGY = (
    "finding: rash on both arms, eczema. code L30.9",
    "finding: mole on the back, benign nevus. code D22.5",
    "finding: itchy scalp with flakes, dermatitis. code L21.0",
)
#: Generic findings make the base continue "finding:" generically; each prefix steers it.
GENERIC = (
    "finding: the examination was otherwise unremarkable.",
    "finding: the vital signs were stable.",
    "finding: the history was reviewed with the patient.",
    "finding: the patient is doing well.",
)
PROMPT = "finding:"


class Tiny:
    def __init__(self, cache: Path) -> None:
        corpus = tinymodels.SAMPLE_CORPUS + GENERIC + RADIOLOGY + DERMATOLOGY
        self.base = tinymodels.build_base(corpus, cache_dir=cache)
        self.tok = self.base.tokenizer
        self.rad = tinymodels.train_prefix(self.base, RADIOLOGY, "radiology")
        self.derm = tinymodels.train_prefix(self.base, DERMATOLOGY, "dermatology")
        self.peft = tinymodels.load_with_adapters(self.base, [self.rad, self.derm])

    def encode(self, *prompts: str) -> dict[str, Any]:
        return dict(self.tok(list(prompts), return_tensors="pt", padding=True))

    def new_text(self, out: Any, enc: dict[str, Any]) -> list[str]:
        return self.tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.fixture(scope="module")
def tiny(pytestconfig: pytest.Config) -> Tiny:
    return Tiny(pytestconfig.rootpath / ".cache" / "tinymodels")


@pytest.fixture(scope="module")
def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider(memory: InMemorySpanExporter) -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(VariantSpanProcessor())
    tp.add_span_processor(SimpleSpanProcessor(memory))
    return tp


@pytest.fixture(scope="module", autouse=True)
def instrumented(provider: TracerProvider) -> Iterator[TransformersInstrumentor]:
    inst = TransformersInstrumentor()
    assert inst.instrument(tracer_provider=provider)
    yield inst
    inst.uninstrument()


@pytest.fixture
def exporter(memory: InMemorySpanExporter) -> InMemorySpanExporter:
    memory.clear()
    return memory


def gen_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.attributes.get(semconv.GEN_AI_OPERATION_NAME) == "text_completion"
    ]


def test_adapters_change_the_output(tiny: Tiny) -> None:
    """Guards the transformers/peft pin: prefix-tuning adapters must act in generate()."""
    enc = tiny.encode(PROMPT)
    base_out = tiny.new_text(tiny.base.model.generate(**enc, max_new_tokens=10), enc)
    outs = {}
    for name in ("radiology", "dermatology"):
        tiny.peft.set_adapter(name)
        outs[name] = tiny.new_text(tiny.peft.generate(**enc, max_new_tokens=10), enc)
    assert outs["radiology"] != base_out
    assert outs["dermatology"] != base_out
    assert outs["radiology"] != outs["dermatology"]


def _nll(tiny: Tiny, texts: tuple[str, ...], adapter: str | None) -> float:
    """Mean token negative log-likelihood of ``texts`` (right-padded, pads masked)."""
    enc = tiny.tok(
        [t + (tiny.tok.eos_token or "") for t in texts],
        return_tensors="pt",
        padding=True,
        padding_side="right",
    )
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    with torch.no_grad():
        if adapter is None:
            with tiny.peft.disable_adapter():
                return float(tiny.peft(**enc, labels=labels).loss)
        tiny.peft.set_adapter(adapter)
        return float(tiny.peft(**enc, labels=labels).loss)


def test_each_prefix_steers_towards_its_own_corpus(tiny: Tiny) -> None:
    """Each prefix makes its own corpus more likely than the base does and more likely than
    the other prefix's corpus (its training objective, measured on likelihoods rather than on
    the first greedy characters, which depend on the machine's floating point)."""
    for own, other, name in (
        (RADIOLOGY, DERMATOLOGY, "radiology"),
        (DERMATOLOGY, RADIOLOGY, "dermatology"),
    ):
        own_nll = _nll(tiny, own, name)
        assert own_nll < _nll(tiny, own, None), name
        assert own_nll < _nll(tiny, own, "dermatology" if name == "radiology" else "radiology")
        assert own_nll < _nll(tiny, other, name), name


def test_spans_name_the_active_adapter_per_call(tiny: Tiny, exporter: InMemorySpanExporter) -> None:
    enc = tiny.encode(PROMPT)
    order = ["radiology", "dermatology", "radiology"]
    for name in order:
        tiny.peft.set_adapter(name)
        tiny.peft.generate(**enc, max_new_tokens=4)
    spans = gen_spans(exporter)
    assert len(spans) == len(order) == len(exporter.get_finished_spans()), "one span per call"
    assert [s.attributes[semconv.PREFIX_ID] for s in spans] == order
    for span in spans:
        assert span.attributes[semconv.PREFIX_TYPE] == "prefix_tuning"
        assert span.attributes[semconv.PREFIX_NUM_VIRTUAL_TOKENS] == 8
        assert span.attributes[semconv.BASE_MODEL] == tinymodels.DEFAULT_NAME
        assert span.attributes[semconv.GEN_AI_REQUEST_MODEL] == tinymodels.DEFAULT_NAME
        assert span.attributes[semconv.GEN_AI_PROVIDER_NAME] == "transformers"
        assert span.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 4
        assert span.name == f"text_completion {tinymodels.DEFAULT_NAME}"
    versions = [s.attributes[semconv.PREFIX_VERSION] for s in spans]
    assert versions[0] == versions[2] != versions[1]


def test_base_model_and_disabled_adapter_report_base(
    tiny: Tiny, exporter: InMemorySpanExporter
) -> None:
    enc = tiny.encode(PROMPT)
    tiny.base.model.generate(**enc, max_new_tokens=2)
    tiny.peft.set_adapter("radiology")
    with tiny.peft.disable_adapter():
        tiny.peft.generate(**enc, max_new_tokens=2)
    spans = gen_spans(exporter)
    assert [s.attributes[semconv.PREFIX_ID] for s in spans] == ["base", "base"]
    assert all(semconv.PREFIX_TYPE not in s.attributes for s in spans)


def test_variant_fields_win_over_detected_ones(tiny: Tiny, exporter: InMemorySpanExporter) -> None:
    tiny.peft.set_adapter("dermatology")
    with variant(
        prefix_id="derm-release",
        prefix_version="7",
        route="skin",
        prompt_version="v2",
        cohort={"specialty": "dermatology"},
    ):
        tiny.peft.generate(**tiny.encode(PROMPT), max_new_tokens=2)
    [span] = gen_spans(exporter)
    attrs = span.attributes
    assert attrs[semconv.PREFIX_ID] == "derm-release"
    assert attrs[semconv.PREFIX_VERSION] == "7"
    assert attrs[semconv.PREFIX_TYPE] == "prefix_tuning"  # not set by the user: detected
    assert attrs[semconv.ROUTE] == "skin"
    assert attrs[semconv.PROMPT_VERSION] == "v2"
    assert attrs["cohort.specialty"] == "dermatology"


def _expected_new_tokens(row: list[int], prompt_len: int, eos: int, pad: int) -> int:
    new = row[prompt_len:]
    if eos in new:
        return new.index(eos) + 1
    return sum(1 for t in new if t != pad)


def test_batched_token_counts_per_sequence(tiny: Tiny, exporter: InMemorySpanExporter) -> None:
    prompts = ["finding:", "the patient was seen in clinic", "vital signs were"]
    enc = tiny.encode(*prompts)
    probe = tiny.base.model.generate(**enc, max_new_tokens=8)
    width = enc["input_ids"].shape[1]
    # Make a token the first sequence emits early act as EOS, so rows stop at different steps.
    stop = int(probe[0, width + 1])
    exporter.clear()
    out = tiny.base.model.generate(**enc, max_new_tokens=8, eos_token_id=stop)
    [span] = gen_spans(exporter)
    attrs = span.attributes

    expected_in = [len(tiny.tok(p)["input_ids"]) for p in prompts]
    assert len(set(expected_in)) > 1, "prompts must differ in length to test padding"
    pad = tiny.tok.pad_token_id
    expected_out = [_expected_new_tokens(r, width, stop, pad) for r in out.tolist()]
    assert min(expected_out) < 8, "at least one sequence must stop early"

    assert attrs[semconv.BATCH_SIZE] == 3
    assert list(attrs[semconv.BATCH_INPUT_TOKENS]) == expected_in
    assert list(attrs[semconv.BATCH_OUTPUT_TOKENS]) == expected_out
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == sum(expected_in)
    assert attrs[semconv.LLM_TOKEN_COUNT_PROMPT] == sum(expected_in)
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == sum(expected_out)
    assert attrs[semconv.LLM_TOKEN_COUNT_COMPLETION] == sum(expected_out)
    assert list(attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS]) == [
        "stop" if stop in r[width:] else "length" for r in out.tolist()
    ]


def test_ttft_recorded_and_user_streamer_still_fed(
    tiny: Tiny, exporter: InMemorySpanExporter
) -> None:
    from transformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self) -> None:
            self.chunks: list[list[int]] = []
            self.ended = False

        def put(self, value: Any) -> None:
            self.chunks.append(value.reshape(-1).tolist())

        def end(self) -> None:
            self.ended = True

    enc = tiny.encode(PROMPT)
    tiny.base.model.generate(**enc, max_new_tokens=6)  # no streamer: ours is injected
    mine = Collect()
    out = tiny.base.model.generate(**enc, max_new_tokens=6, streamer=mine)
    assert mine.ended
    streamed = [token for chunk in mine.chunks[1:] for token in chunk]
    assert streamed == out[0, enc["input_ids"].shape[1] :].tolist()
    for span in gen_spans(exporter):
        ttft = span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
        assert 0 < ttft < (span.end_time - span.start_time) / 1e9


def test_beam_search_gets_no_injected_streamer(tiny: Tiny, exporter: InMemorySpanExporter) -> None:
    enc = tiny.encode(PROMPT)
    out = tiny.base.model.generate(**enc, max_new_tokens=4, num_beams=2)
    assert out.shape[0] == 1
    [span] = gen_spans(exporter)
    assert semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in span.attributes
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


def test_generate_error_recorded_and_reraised(tiny: Tiny, exporter: InMemorySpanExporter) -> None:
    enc = tiny.encode(PROMPT)
    with pytest.raises(ValueError) as caught:
        tiny.base.model.generate(**enc, max_new_tokens=4, num_beams=2, streamer=object())
    [span] = gen_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.message"] == str(caught.value)


def test_pipeline_span_parents_generate_and_captures_only_on_opt_in(
    tiny: Tiny, exporter: InMemorySpanExporter
) -> None:
    from transformers import pipeline

    pipe = pipeline("text-generation", model=tiny.base.model, tokenizer=tiny.tok)
    pipe(PROMPT, max_new_tokens=3)
    _settings.set_capture_content(True)
    try:
        result = pipe(PROMPT, max_new_tokens=3)
    finally:
        _settings.set_capture_content(None)
    pipes = [s for s in exporter.get_finished_spans() if s.name == "text_generation pipeline"]
    gens = gen_spans(exporter)
    assert len(pipes) == len(gens) == 2
    for p, g in zip(pipes, gens, strict=True):
        assert g.parent is not None and g.parent.span_id == p.context.span_id
        assert p.attributes[semconv.OPENINFERENCE_SPAN_KIND] == "CHAIN"
        assert p.attributes[semconv.PREFIX_ID] == "base"
    assert semconv.INPUT_VALUE not in pipes[0].attributes
    assert pipes[1].attributes[semconv.INPUT_VALUE] == PROMPT
    assert pipes[1].attributes[semconv.OUTPUT_VALUE] == result[0]["generated_text"]


def test_instrument_is_idempotent_and_uninstrument_restores(
    tiny: Tiny,
    provider: TracerProvider,
    instrumented: TransformersInstrumentor,
    exporter: InMemorySpanExporter,
) -> None:
    from peft.peft_model import PeftModelForCausalLM
    from transformers.generation.utils import GenerationMixin
    from transformers.pipelines.text_generation import TextGenerationPipeline

    targets = [
        (GenerationMixin, "generate"),
        (PeftModelForCausalLM, "generate"),
        (TextGenerationPipeline, "__call__"),
    ]
    wrapped = [owner.__dict__[name] for owner, name in targets]
    other = TransformersInstrumentor()  # a plain object: the registry knows the framework
    assert other is not instrumented and other.is_instrumented
    assert instrumented.instrument(tracer_provider=provider) is False
    assert other.instrument(tracer_provider=provider) is False  # patched once, by any instance
    assert [owner.__dict__[name] for owner, name in targets] == wrapped
    enc = tiny.encode(PROMPT)
    tiny.peft.generate(**enc, max_new_tokens=2)
    assert len(exporter.get_finished_spans()) == 1

    assert TransformersInstrumentor().uninstrument()  # the OTel convention: any instance
    assert not instrumented.is_instrumented
    try:
        for (owner, name), w in zip(targets, wrapped, strict=True):
            assert owner.__dict__[name] is w.__wrapped__
        exporter.clear()
        tiny.peft.generate(**enc, max_new_tokens=2)
        tiny.base.model.generate(**enc, max_new_tokens=2)
        assert exporter.get_finished_spans() == ()
        assert instrumented.uninstrument() is False
    finally:
        assert instrumented.instrument(tracer_provider=provider)


def test_telemetry_failure_leaves_generate_untouched(
    tiny: Tiny, provider: TracerProvider, instrumented: TransformersInstrumentor
) -> None:
    class Exploding(VariantSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            raise RuntimeError("processor bug")

    broken = TracerProvider()
    broken.add_span_processor(Exploding())
    enc = tiny.encode(PROMPT, "the patient")
    instrumented.uninstrument()
    try:
        expected = tiny.base.model.generate(**enc, max_new_tokens=5)
        instrumented.instrument(tracer_provider=broken)
        got = tiny.base.model.generate(**enc, max_new_tokens=5)
    finally:
        instrumented.uninstrument()
        instrumented.instrument(tracer_provider=provider)
    assert torch.equal(expected, got)
