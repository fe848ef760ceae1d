"""Request and response models of ``/api/v1`` (the OpenAPI surface at ``/docs``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)


def _as_utc(value: dt.datetime) -> dt.datetime:
    """Stored timestamps are naive UTC; on the wire they carry their offset (``+00:00``)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


UtcDateTime = Annotated[dt.datetime, AfterValidator(_as_utc)]
#: A variant id in a path: letters, digits and ``_.:@-``, with at least one character that is
#: not a dot (``.`` and ``..`` would be registered and never reached by a browser).
PREFIX_ID_PATTERN = r"^[A-Za-z0-9_.:@-]*[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]*$"
PrefixIdPath = Annotated[
    str,
    Path(min_length=1, max_length=200, pattern=PREFIX_ID_PATTERN, examples=["radiology"]),
]
#: A window bound: ISO-8601 (date or date-time, optional offset) or a relative age.
TIME_BOUND_PATTERN = (
    r"^(\d{1,6}(\.\d{1,6})?[smhdw]|\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?)$"
)
TimeBoundStr = Annotated[str, Field(max_length=64, pattern=TIME_BOUND_PATTERN)]
#: A length of time: a number and a unit (s, m, h, d, w).
DurationStr = Annotated[str, Field(max_length=16, pattern=r"^\d{1,6}(\.\d{1,6})?[smhdw]$")]
TraceId = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-fA-F]{32}$",
        description="32 hex digits (stored lower-case)",
        examples=["4bf92f3577b34da6a3ce929d0e0e4736"],
    ),
]
SpanId = Annotated[
    str, Field(pattern=r"^[0-9a-fA-F]{16}$", description="16 hex digits (stored lower-case)")
]
ClientId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Client-chosen id; re-sending the same id is a no-op (idempotent retries)",
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=200)]
ShortText = Annotated[str, Field(max_length=200)]
LongText = Annotated[str, Field(max_length=20_000)]

#: Feedback kinds whose value is a fraction; user-defined kinds may use any finite value.
UNIT_FEEDBACK_KINDS = frozenset({"thumbs_up", "thumbs_down", "escalation"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreIn(_Strict):
    id: ClientId | None = None
    trace_id: TraceId
    span_id: SpanId | None = None
    name: Name = Field(description="Evaluator name, e.g. Groundedness")
    value: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="Score in [0, 1]")
    label: ShortText | None = None
    reason: LongText | None = None
    source: ShortText | None = None
    created_at: dt.datetime | None = Field(
        default=None, description="When the score was produced (default: now, UTC)"
    )


class FeedbackIn(_Strict):
    id: ClientId | None = None
    trace_id: TraceId
    span_id: SpanId | None = None
    kind: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")] = (
        Field(description="thumbs_up, thumbs_down, escalation, or a user-defined kind")
    )
    value: float = Field(
        default=1.0,
        allow_inf_nan=False,
        ge=-1e12,
        le=1e12,
        description="Default 1; in [0, 1] for thumbs_up/thumbs_down/escalation",
    )
    comment: LongText | None = None
    created_at: dt.datetime | None = None

    @field_validator("value")
    @classmethod
    def _unit_for_builtin_kinds(cls, value: float, info: ValidationInfo) -> float:
        kind = info.data.get("kind")
        if kind in UNIT_FEEDBACK_KINDS and not 0.0 <= value <= 1.0:
            raise ValueError(f"value for kind {kind!r} must be in [0, 1], got {value}")
        return value


class WriteResult(BaseModel):
    accepted: int = Field(description="Records in the request")
    inserted: int = Field(description="Records newly stored (committed)")
    ids: list[str] = Field(description="Id of each record, in request order")
    duplicate_ids: list[str] = Field(description="Ids that were already stored (not changed)")
    unknown_trace_ids: list[str] = Field(
        description="Trace ids with no stored span yet (accepted anyway)"
    )


class SqlRequest(_Strict):
    sql: str = Field(
        min_length=1,
        max_length=100_000,
        examples=["SELECT prefix_id, count(*) FROM requests GROUP BY 1"],
    )
    format: str | None = Field(
        default=None,
        max_length=100,
        description="Answer format: json (default), arrow, parquet, csv or ndjson (or its "
        "media type); overrides the Accept header",
        examples=["arrow"],
    )


class SqlResponse(BaseModel):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float


class ErrorBody(BaseModel):
    error: str
    message: str
    code: str | None = None
    position: int | None = None
    detail: list[dict[str, Any]] | None = None


class Alert(BaseModel):
    id: str
    prefix_id: str | None
    prefix_version: str | None
    route: str | None
    cohort: dict[str, Any]
    metric: str
    baseline: str | None
    baseline_value: float | None
    value: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    q_value: float | None
    n: int | None
    n_baseline: int | None
    direction: str | None
    severity: str | None
    status: str
    example_trace_ids: list[str]
    created_at: UtcDateTime
    updated_at: UtcDateTime | None = None
    resolved_at: UtcDateTime | None = None
    method: str | None = None
    details: dict[str, Any] | None = None


class AlertList(BaseModel):
    alerts: list[Alert]


class RegressionRunRequest(_Strict):
    since: TimeBoundStr | None = Field(
        default=None,
        description="Window start. msprt: a fixed ISO-8601 time, or null for all data (the "
        "window must grow between runs; an age like 7d slides and is refused); fixed: "
        "ISO-8601 or an age (24h, 7d); windows: at or before the evaluation window's start",
    )
    until: TimeBoundStr | None = None
    alpha: float | None = Field(default=None, gt=0, lt=1, description="FDR level")
    min_n: int | None = Field(default=None, ge=2, le=10_000_000, description="Per side")
    metrics: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=100
    )
    slice_depth: int | None = Field(
        default=None,
        ge=0,
        le=4,
        description="Cohort keys per tested slice (default 2: the route, each key, each pair; "
        "0: the full cohort combinations only)",
    )
    max_slices: int | None = Field(
        default=None, ge=1, le=100_000, description="Most two-key slices per variant and route"
    )
    full_slices: bool | None = Field(
        default=None, description="Also test every full combination deeper than slice_depth"
    )
    sequential: Literal["msprt", "fixed", "windows"] | None = Field(
        default=None,
        description="msprt (default): always-valid p-values on the growing window [since, "
        "now), their running minimum over the runs so far; windows: "
        "fixed-horizon tests of the latest completed evaluation window (re-runs re-test the "
        "same window; `until` is the clock, `since` defaults to unset); fixed: one look",
    )
    window: DurationStr | None = Field(
        default=None,
        description="windows mode: window length (epoch-aligned, UTC), default 1d",
        examples=["1d"],
    )
    window_delay: DurationStr | None = Field(
        default=None, description="windows mode: test a window only this long after it closed"
    )


class SliceNode(BaseModel):
    cohort: dict[str, Any] = Field(description="The slice: {} (the route), a key, or a pair")
    n: int
    n_baseline: int
    value: float
    baseline_value: float
    delta: float
    relative: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float
    q_value: float
    flagged: bool = Field(description="A significant worsening of at least the minimum effect")
    cause: bool = Field(description="Named as the regression's cause: the alert's cohort")


class SliceFamily(BaseModel):
    prefix_id: str
    prefix_version: str
    base_model: str | None
    route: str | None
    metric: str
    baseline: str
    family_q: float | None = Field(description="The family's Simes-BH q-value (stage 1)")
    slices: list[SliceNode]


class SliceTree(BaseModel):
    since: UtcDateTime | None
    until: UtcDateTime | None
    families: list[SliceFamily]


class RegressionRun(BaseModel):
    alerts: list[Alert] = Field(description="Active alerts this run raised or updated")
    new: list[str] = Field(description="Ids of alerts this run opened")
    updated: list[str] = Field(description="Ids of active alerts whose evidence was refreshed")
    resolved: list[str] = Field(description="Ids of alerts this run closed")
    comparisons: int = Field(description="Comparisons tested (before FDR control)")
    flagged: int
    sequential: Literal["msprt", "fixed", "windows"] = Field(
        description="How this run stays valid when runs repeat: msprt (growing window "
        "anchored at `since`), windows (the latest completed evaluation window) or fixed "
        "(one look)"
    )
    since: UtcDateTime | None = Field(description="Start of the data tested (null: all)")
    until: UtcDateTime | None = Field(description="End of the data tested (null: now)")


PrefixStatus = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", examples=["active"])]


class EvaluationFilter(_Strict):
    route: ShortText | None = None
    prefix_id: ShortText | None = Field(default=None, description="a variant id, or base")
    service_name: ShortText | None = None


class EvaluationRunRequest(_Strict):
    since: TimeBoundStr | None = Field(
        default=None, description="Window start: ISO-8601 or an age (1h, 7d); null: all"
    )
    until: TimeBoundStr | None = None
    evaluators: list[ShortText] = Field(
        min_length=1,
        max_length=20,
        description="Built-in evaluator names (JSONValidation, Refusal, AnswerRelevancy, "
        "Groundedness, TaskCompletion)",
        examples=[["JSONValidation", "Refusal"]],
    )
    filter: EvaluationFilter = Field(default_factory=EvaluationFilter)
    sample: float = Field(default=1.0, gt=0, le=1, description="fraction of requests scored")


class EvaluationRun(BaseModel):
    """Counts of (request, evaluator) pairs: scored now, scored before, skipped by reason."""

    window: dict[str, str | None]
    evaluators: list[str]
    sample: float
    requests: int = Field(description="requests in the window and filter")
    sampled_out: int
    scored: int
    scored_by_evaluator: dict[str, int]
    already_scored: int
    skipped: int
    skipped_by_reason: dict[str, int]
    text_sources: dict[str, int]


class PrefixRegistration(_Strict):
    base_model: ShortText | None = None
    prefix_type: ShortText | None = Field(default=None, examples=["prefix_tuning", "lora"])
    version: ShortText | None = None
    owner: ShortText | None = None
    specialty: ShortText | None = None
    training_corpus: LongText | None = None
    adapter_hash: ShortText | None = None
    status: PrefixStatus = "registered"
    metadata: dict[str, Any] = Field(default_factory=dict)
    served_model_names: list[ShortText] | None = Field(
        default=None,
        max_length=100,
        description=(
            "Model names this variant is served under (vLLM --lora-modules NAME=...). Spans "
            "without prefix.id whose request (else response) model is one of them are "
            "attributed to this variant, earlier spans included. Omitted: the names stay as "
            "they are; []: none."
        ),
        examples=[["cardiology"]],
    )


class PrefixInfo(BaseModel):
    prefix_id: str
    registered: bool
    base_models: list[str]
    prefix_types: list[str]
    versions: list[str]
    first_seen: UtcDateTime | None
    last_seen: UtcDateTime | None
    n: int
    base_model: str | None = None
    prefix_type: str | None = None
    version: str | None = None
    owner: str | None = None
    specialty: str | None = None
    training_corpus: str | None = None
    adapter_hash: str | None = None
    status: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    registered_at: UtcDateTime | None = None
    updated_at: UtcDateTime | None = None
    served_model_names: list[str] = Field(default_factory=list)


class TimeSeries(BaseModel):
    """Per-bucket metrics of one variant, one series per version, the base model beside it."""

    prefix_id: str
    since: str
    until: str
    bucket_seconds: int
    route: str | None
    cohort: dict[str, str]
    series: list[dict[str, Any]] = Field(
        description="One per (variant, version): t (bucket starts), n, error_rate / "
        "fallback_rate / thumbs_down_rate with *_ci (Jeffreys 95 %), latency_p50/p99 and "
        "ttft_p50/p99 (ms), scores: {evaluator: {t, mean, ci, n}}"
    )
    rollouts: list[dict[str, Any]] = Field(
        description="Version markers: first request of each version; registry (re)registration"
    )


class AlertEvidence(BaseModel):
    alert: Alert
    evidence: dict[str, Any] = Field(
        description="Both sides of the comparison (ECDFs, rates with intervals, or score "
        "histograms), the effect with its CI and the minimum effect, the evaluation window"
    )
    timeseries: TimeSeries | None = Field(
        description="The variant's series around the alert (its route and cohort)"
    )
    page_url: str | None = Field(description="The alert page (absolute with --public-url)")


class PrefixList(BaseModel):
    prefixes: list[PrefixInfo]


class SpanNode(BaseModel):
    span_id: str
    parent_span_id: str | None
    name: str | None
    kind: str | None
    service_name: str | None
    start_time: UtcDateTime | None
    end_time: UtcDateTime | None
    duration_ms: float | None
    status_code: str | None
    status_message: str | None
    prefix_id: str | None
    prefix_version: str | None
    base_model: str | None
    route: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    ttft_ms: float | None
    fallback_reason: str | None
    attributes: dict[str, Any]
    resource: dict[str, Any]
    events: list[Any] = Field(default_factory=list)
    links: list[Any] = Field(default_factory=list)
    scope_name: str | None = None
    scope_version: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    log_events: list[dict[str, Any]] = Field(
        default_factory=list, description="GenAI log events joined to this span"
    )
    input_text: str | None = Field(default=None, description="what evaluators read as input")
    output_text: str | None = Field(default=None, description="what evaluators read as output")
    children: list[SpanNode] = Field(default_factory=list)


class TraceScore(BaseModel):
    id: str
    span_id: str | None
    name: str
    value: float
    label: str | None
    reason: str | None
    source: str | None
    created_at: UtcDateTime


class TraceFeedback(BaseModel):
    id: str
    span_id: str | None
    kind: str
    value: float
    comment: str | None
    created_at: UtcDateTime


class TraceView(BaseModel):
    trace_id: str
    span_count: int
    start_time: UtcDateTime | None
    duration_ms: float | None
    roots: list[SpanNode]
    scores: list[TraceScore]
    feedback: list[TraceFeedback]


class MetricValue(BaseModel):
    value: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    base_value: float | None = Field(default=None, description="Base model, same other keys")
    delta: float | None = Field(default=None, description="value - base_value")
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None
    paired: bool = Field(default=False, description="Delta paired on golden-dataset items")


class ScorecardRow(BaseModel):
    group: dict[str, str | None]
    n: int
    metrics: dict[str, MetricValue]


class TimeWindow(BaseModel):
    since: str | None
    until: str | None


class Scorecard(BaseModel):
    group_by: list[str]
    window: TimeWindow
    alpha: float
    metrics: list[str]
    rows: list[ScorecardRow]


def _error(description: str) -> dict[str, Any]:
    # JSON even on routes whose success response is HTML (the dashboard fragments)
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        "model": ErrorBody,
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


#: Documented on every /api route (auth, malformed or invalid requests).
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Malformed request (e.g. a body that is not JSON) or unusable parameter"),
    401: _error("Missing or invalid bearer token (when tokens are configured)"),
    403: _error("The token lacks the scope (a read token on a write route)"),
    422: _error("Request failed validation; `detail` lists every problem with its location"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("No such resource")}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    413: _error("Body larger than the configured limit"),
    503: _error("The store could not commit right now; retry after Retry-After"),
}


GateStatus = Literal["pass", "fail", "insufficient_data"]
GateCellStatus = Literal["pass", "fail", "untested"]


class GateCell(BaseModel):
    route: str | None
    cohort: dict[str, Any]
    prefix_version: str
    passed: bool
    status: GateCellStatus = Field(
        description="fail: a significant regression; untested: too few requests to test "
        "against base (not a pass, not a regression); pass"
    )
    reasons: list[str]
    n: int


class GateResult(BaseModel):
    prefix_id: str
    passed: bool = Field(description="True when the verdict is pass")
    status: GateStatus = Field(
        description="fail if any cell fails; else pass if at least one cell was tested (thin "
        "cells are listed as untested; with strict=true any untested cell gives "
        "insufficient_data); else insufficient_data"
    )
    reason: str
    cells: list[GateCell]


class RoutingCandidate(BaseModel):
    mean: float | None
    ci_low: float | None
    n: int


class RoutingAdvice(BaseModel):
    route: str | None
    cohort: dict[str, Any]
    variant: str = Field(description='A prefix id, or "base" (fall back to the base model)')
    reason: str
    candidates: dict[str, RoutingCandidate]
    excluded: dict[str, str] = Field(
        default_factory=dict,
        description="Prefixes kept out of this slice by a regression against base that "
        "detection flags there, with the regression",
    )


class RoutingResponse(BaseModel):
    metric: str
    threshold: float
    min_n: int
    advice: list[RoutingAdvice]
