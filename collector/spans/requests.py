"""The request: the unit of every metric, resolved from whole traces.

A **request** is one model call made for a variant (or for the base model). Spans nest, and
many of them carry variant attributes (``variant(...)`` stamps every span in its scope, the
SDK puts ``base_model`` on every span), so counting spans counts HTTP handlers, DB calls and
chains as requests. :func:`resolve` turns the spans of whole traces into one row per request,
by these rules (DESIGN.md, "The request"; docs/requests.md):

1. **Model calls.** A span is a model call when its ``operation`` (the normalized
   ``prefixscope.span.kind`` / ``gen_ai.operation.name`` / ``openinference.span.kind`` /
   ``traceloop.span.kind`` / … value, see ``normalize.py``) names one (:data:`CALL_OPERATIONS`),
   or, when the operation names nothing known to be something else
   (:data:`NOT_CALL_OPERATIONS`: chains, tools, agents, retrievers, embeddings…), when the span
   carries a request or response model name or token usage of its own. ``base_model`` alone
   (from the resource or the SDK's defaults) never makes a call. ``@trace(request=True)``
   (operation ``request``) always does.
2. **Nested calls are one request.** A call inside another call (a client span over the
   server's span, a LangChain LLM span over the OpenAI client's span) is part of the outer
   one: the outer span is the request, and what it lacks (TTFT, tokens, cached tokens, model
   names) comes from the calls inside. Except a *container*: a call with two or more calls
   directly below it (vLLM's ``LLM.generate`` over a batch of prompts) is not a request
   itself, each call below it is. A span marked with ``@trace(request=True)`` is never a
   container.
3. **Variant scopes.** Spans started inside one entry of ``variant(...)`` (or a ``@trace``
   with variant fields) share a ``variant.scope`` id. The outermost span of a scope and the
   one model call inside it are ONE request: the request's span is the call (its latency is
   ``latency_ms``), and the scope's duration is its ``route_latency_ms``. A scope with
   several calls holds one request per call; the scope's own latency and judgements go to
   its last call (by end time). A scope with no model call anywhere below it (the
   application calls a model through a client nothing instruments) is one request at its
   outermost span.
4. **Judgements.** Every span of a trace that holds requests belongs to exactly one of them
   (``span_ids``): the spans inside a call, the spans of a scope (its last call's), and
   every other span (an HTTP root, a tool, an agent step) to the trace's last request
   (``last_in_trace``). A score or feedback row on any of them, or on the trace itself
   (``span_id`` NULL, via ``last_in_trace``), counts once for that request.

The function is pure (Arrow in, Arrow out), vectorised in numpy, and needs whole traces: the
embedded store resolves settled traces incrementally (``storage/request_store.py``); the lake
engines resolve at query time with the same function (``analytics/engines.py``), so every
engine counts the same requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefixscope import semconv

#: operation values (lower-case) that make a span a model call (a generation)
CALL_OPERATIONS: frozenset[str] = frozenset(
    {
        semconv.REQUEST_SPAN_KIND,  # @trace(request=True)
        # OTel GenAI gen_ai.operation.name; OpenLLMetry llm.request.type; LiteLLM
        "chat",
        "text_completion",
        "generate_content",
        "completion",
        "llm_request",  # OpenLLMetry's custom operation
        # OpenInference openinference.span.kind, traceAI gen_ai.span.kind / fi.span.kind,
        # MLflow mlflow.spanType
        "llm",
        "chat_model",
        # Langfuse langfuse.observation.type
        "generation",
        # Vercel AI SDK ai.operationId: the provider calls inside the loop
        "ai.generatetext.dogenerate",
        "ai.streamtext.dostream",
        "ai.generateobject.dogenerate",
        "ai.streamobject.dostream",
    }
)
#: operation values (lower-case) of spans that are never requests themselves, even when they
#: carry a model name or the summed tokens of the calls below them: wrappers (agents, chains,
#: tools, workflows...) and model calls that are not generations (embeddings, reranking)
NOT_CALL_OPERATIONS: frozenset[str] = frozenset(
    {
        # OTel GenAI, AI SDK 7, openai-agents, OpenLLMetry custom operations
        "invoke_agent",
        "create_agent",
        "execute_tool",
        "execute_task",
        "invoke_workflow",
        "retrieval",
        "agent_step",
        "handoff",
        "guardrail",
        "vector_db_retrieve",
        "embeddings",
        "image_generation",
        "transcription",
        "speech",
        "rerank",
        # OpenInference / traceAI / MLflow / Langfuse span kinds
        "chain",
        "tool",
        "agent",
        "retriever",
        "embedding",
        "reranker",
        "evaluator",
        "prompt",
        "parser",
        "memory",
        "unknown",
        "conversation",
        "vector_db",
        "a2a_client",
        "a2a_server",
        "span",
        "event",
        # OpenLLMetry traceloop.span.kind
        "workflow",
        "task",
        # Logfire: a stream's end record (paired with its request, below) and pending spans
        "log",
        "pending_span",
        # Vercel AI SDK ai.operationId: the outer loops carry the summed usage
        "ai.generatetext",
        "ai.streamtext",
        "ai.generateobject",
        "ai.streamobject",
        "ai.toolcall",
        "ai.embed",
        "ai.embedmany",
        "ai.embed.doembed",
        "ai.embedmany.doembed",
        "ai.rerank",
        "ai.rerank.dorerank",
    }
)
#: Logfire records a streamed call as two spans: the request span ends when the response
#: headers arrive, and a log record named by this template prefix, at the stream's end,
#: carries the usage (often in another trace: it is logged under the request's parent context)
STREAM_END_NAME = "streaming response from "
#: a stream-end record is paired with a request span of the same service, scope and model that
#: ended at most this long after the record (clock steps between the two)
STREAM_PAIR_SLACK_US = 50_000
#: two call spans of one service in two traces are one call (OpenInference's LangChain spans
#: are not put in the context, so the client instrumentor's span for the same call starts a
#: trace of its own) when the inner one lies within the outer one, give or take this
DUPLICATE_SLACK_US = 5_000
#: a model server's span that reached it without the client's trace context (a client that
#: does not propagate it, or a stream it skipped) is the client's call when it lies within the
#: client's call, give or take this (the two hosts' clocks), with equal token counts
SERVER_SKEW_US = 100_000
#: the span columns :func:`resolve` reads
SKELETON_COLUMNS: tuple[str, ...] = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "service_name",
    "scope_name",
    "start_time",
    "end_time",
    "duration_ms",
    "status_code",
    "base_model",
    "request_model",
    "response_model",
    "prefix_id",
    "prefix_version",
    "prefix_type",
    "route",
    "prompt_version",
    "session_id",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "ttft_ms",
    "fallback_reason",
    "operation",
    "variant_scope",
    "cohort",
)

#: (column, arrow type, DuckDB type): the ``requests`` table, one row per request
REQUEST_COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("trace_id", pa.string(), "VARCHAR NOT NULL"),
    ("span_id", pa.string(), "VARCHAR NOT NULL"),
    ("scope_span_id", pa.string(), "VARCHAR"),
    ("name", pa.string(), "VARCHAR"),
    ("service_name", pa.string(), "VARCHAR"),
    ("start_time", pa.timestamp("us"), "TIMESTAMP"),
    ("end_time", pa.timestamp("us"), "TIMESTAMP"),
    ("base_model", pa.string(), "VARCHAR"),
    ("request_model", pa.string(), "VARCHAR"),
    ("response_model", pa.string(), "VARCHAR"),
    ("prefix_id", pa.string(), "VARCHAR"),
    ("prefix_version", pa.string(), "VARCHAR"),
    ("prefix_type", pa.string(), "VARCHAR"),
    ("route", pa.string(), "VARCHAR"),
    ("prompt_version", pa.string(), "VARCHAR"),
    ("session_id", pa.string(), "VARCHAR"),
    ("cohort", pa.string(), "JSON"),
    ("latency_ms", pa.float64(), "DOUBLE"),
    ("route_latency_ms", pa.float64(), "DOUBLE"),
    ("ttft_ms", pa.float64(), "DOUBLE"),
    ("input_tokens", pa.int64(), "BIGINT"),
    ("output_tokens", pa.int64(), "BIGINT"),
    ("cached_tokens", pa.int64(), "BIGINT"),
    ("error", pa.bool_(), "BOOLEAN"),
    ("fallback_reason", pa.string(), "VARCHAR"),
    ("last_in_trace", pa.bool_(), "BOOLEAN"),
    ("span_ids", pa.list_(pa.string()), "VARCHAR[]"),
)
REQUEST_COLUMN_NAMES: tuple[str, ...] = tuple(c[0] for c in REQUEST_COLUMNS)
REQUEST_SCHEMA: pa.Schema = pa.schema([(n, t) for n, t, _ in REQUEST_COLUMNS])

#: columns a request takes from its model call (else from the calls nested in it)
_CALL_COLUMNS = (
    "base_model",
    "request_model",
    "response_model",
    "prefix_id",
    "prefix_version",
    "prefix_type",
    "route",
    "prompt_version",
    "session_id",
    "cohort",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "fallback_reason",
)
#: ... of which a stream's end record (Logfire) has the final ones
_STREAM_COLUMNS = ("response_model", "input_tokens", "output_tokens", "cached_tokens")
#: ... and, when neither has them, from the outermost span of its variant scope
_SCOPE_COLUMNS = (
    "base_model",
    "prefix_id",
    "prefix_version",
    "prefix_type",
    "route",
    "prompt_version",
    "session_id",
    "cohort",
    "fallback_reason",
)
#: bound on pointer jumps (2**64 levels): beyond it only a parent cycle is left
_MAX_JUMPS = 64


def _np(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return np.asarray(arr.to_numpy(zero_copy_only=False))


def _valid(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return _np(pc.is_valid(arr))


def _codes(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dense integer codes of a string column (-1 for NULL)."""
    enc = pc.dictionary_encode(arr)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    return np.asarray(enc.indices.fill_null(-1).to_numpy(), dtype=np.int64)


def _lexical_rank(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The rank of each value in sorted order (ties share a rank): a tie-break every engine
    reproduces from the value itself."""
    enc = pc.dictionary_encode(arr)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    order = np.asarray(pc.sort_indices(enc.dictionary).to_numpy(), dtype=np.int64)
    rank_of_code = np.empty(len(order), dtype=np.int64)
    rank_of_code[order] = np.arange(len(order))
    idx = np.asarray(enc.indices.fill_null(0).to_numpy(), dtype=np.int64)
    return rank_of_code[idx] if len(order) else np.zeros(len(idx), dtype=np.int64)


def _jump(pointer: np.ndarray, done: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Pointer jumping: follow ``pointer`` until it reaches -1 or a node where ``done`` holds
    (O(log depth) rounds); pointers still moving after the bound are in a cycle: -1."""
    g = pointer.copy()
    for _ in range(_MAX_JUMPS):
        act = np.nonzero(g >= 0)[0]
        if len(act):
            act = act[~done(g[act])]
        if not len(act):
            return g
        g[act] = g[g[act]]
    act = np.nonzero(g >= 0)[0]
    g[act[~done(g[act])]] = -1
    return g


def _nearest(parent: np.ndarray, marked: np.ndarray, *, inclusive: bool) -> np.ndarray:
    """Each node's nearest marked ancestor (or itself, when ``inclusive``), else -1."""
    start = parent.copy()
    if inclusive:
        idx = np.arange(len(parent))
        start[marked] = idx[marked]
    return _jump(start, lambda g: marked[g])


def _last_per_group(group: np.ndarray, end_us: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For members ``i`` (``group[i] >= 0``), the member of each group with the largest
    ``(end_us, rank)``: returns ``best[g]`` indexed by group (-1 where empty)."""
    size = int(group.max()) + 1 if len(group) and group.max() >= 0 else 0
    best = np.full(size, -1, dtype=np.int64)
    mem = np.nonzero(group >= 0)[0]
    if not len(mem):
        return best
    order = np.lexsort((rank[mem], end_us[mem], group[mem]))
    mem = mem[order]
    g = group[mem]
    last = np.r_[g[1:] != g[:-1], True]
    best[g[last]] = mem[last]
    return best


def resolve(spans: pa.Table) -> pa.Table:
    """One row per request (:data:`REQUEST_SCHEMA`) of the traces in ``spans``.

    ``spans`` holds :data:`SKELETON_COLUMNS` of whole traces (a trace cut in two resolves as
    two partial traces). Rows repeated by ``(trace_id, span_id)`` count once.
    """
    spans = spans.select(list(SKELETON_COLUMNS))
    if spans.num_rows == 0:
        return REQUEST_SCHEMA.empty_table()
    spans = _dedupe(spans)
    n = spans.num_rows
    idx = np.arange(n, dtype=np.int64)
    trace = _codes(spans.column("trace_id"))
    parent = _parents(spans, trace)
    start_us = _np(spans.column("start_time").cast(pa.int64()).fill_null(0))
    end_us = _np(spans.column("end_time").cast(pa.int64()).fill_null(np.iinfo(np.int64).min))
    rank = _lexical_rank(spans.column("span_id"))

    # 1-2. model calls, containers, and the call each span belongs to
    op = pc.utf8_lower(spans.column("operation"))
    explicit = _np(pc.fill_null(pc.equal(op, semconv.REQUEST_SPAN_KIND), False))
    call_op = _np(pc.fill_null(pc.is_in(op, pa.array(sorted(CALL_OPERATIONS))), False))
    not_call = _np(pc.fill_null(pc.is_in(op, pa.array(sorted(NOT_CALL_OPERATIONS))), False))
    evidence = np.zeros(n, dtype=bool)
    for col in ("request_model", "response_model", "input_tokens", "output_tokens"):
        evidence |= _valid(spans.column(col))
    is_call = explicit | call_op | (~not_call & evidence)
    stream_end = _np(pc.fill_null(pc.equal(op, "log"), False)) & _np(
        pc.fill_null(pc.starts_with(spans.column("name"), STREAM_END_NAME), False)
    )
    failed = _np(pc.fill_null(pc.equal(spans.column("status_code"), "ERROR"), False))
    model = _codes(spans.column("request_model"))
    nca = _nearest(parent, is_call, inclusive=False)
    attempts_of = np.zeros(n, dtype=bool)  # calls whose calls below are retries of them
    for _ in range(_MAX_JUMPS):  # containers: calls with two or more calls right below
        below = nca[is_call & (nca >= 0)]
        children = np.bincount(below, minlength=n) if len(below) else np.zeros(n, np.int64)
        container = is_call & (children >= 2) & ~explicit & ~attempts_of
        for c in np.nonzero(container)[0]:
            kids = np.nonzero(is_call & (nca == c))[0]
            if _retries(kids, start_us, end_us, failed, model):
                container[c] = False
                attempts_of[c] = True
        if not container.any():
            break
        is_call &= ~container
        nca = _nearest(parent, is_call, inclusive=False)
    maximal = is_call & (nca < 0)
    stream_of = _pair_streams(spans, maximal, stream_end, start_us, end_us, model)
    dup_of = _cross_trace_duplicates(spans, maximal, parent, trace, start_us, end_us, model)
    maximal &= dup_of < 0
    call_root = _nearest(parent, maximal, inclusive=True)  # the request call a span is in

    # 3. variant scopes: each span's nearest scoped span, and that scope's outermost span
    scope = _codes(spans.column("variant_scope"))
    scoped = scope >= 0
    up = idx.copy()
    same = (parent >= 0) & scoped
    same[same] &= scope[parent[same]] == scope[same]
    up[same] = parent[same]
    scope_root = _jump(up, lambda g: up[g] == g)
    in_scope = _nearest(parent, scoped, inclusive=True)
    root_of = np.where(in_scope >= 0, scope_root[np.maximum(in_scope, 0)], -1)

    calls = np.nonzero(maximal)[0]
    call_scope = root_of[calls]
    # a scope's calls: the scope carries its latency and judgements to its last call
    group = np.full(n, -1, dtype=np.int64)
    group[calls] = call_scope
    carrier = _last_per_group(group, end_us, rank)
    carrier_of = np.full(n, -1, dtype=np.int64)  # scope root -> its last call
    carrier_of[: len(carrier)] = carrier
    # scopes with a call anywhere below them (through nested scopes too)
    has_call = np.zeros(n, dtype=bool)
    enclosing = np.full(n, -1, dtype=np.int64)  # scope root -> the enclosing scope's root
    roots = np.nonzero(scoped & (scope_root == idx))[0]
    if len(roots):
        outer = in_scope[np.maximum(parent[roots], 0)]
        outer[parent[roots] < 0] = -1
        enclosing[roots] = np.where(outer >= 0, scope_root[np.maximum(outer, 0)], -1)
    cur = np.unique(call_scope[call_scope >= 0])
    for _ in range(_MAX_JUMPS):
        cur = cur[~has_call[cur]]
        if not len(cur):
            break
        has_call[cur] = True
        cur = np.unique(enclosing[cur])
        cur = cur[cur >= 0]
    bare = roots[~has_call[roots] & (call_root[roots] < 0)]  # no-call scopes: requests

    # the requests: maximal calls, then bare scopes
    req_span = np.concatenate([calls, bare])
    req_scope = np.concatenate([call_scope, bare])
    is_carrier = np.concatenate(
        [carrier_of[np.maximum(call_scope, 0)] == calls, np.ones_like(bare, bool)]
    )
    is_carrier[: len(calls)] &= call_scope >= 0
    m = len(req_span)
    if m == 0:
        return REQUEST_SCHEMA.empty_table()
    req_of_span = np.full(n, -1, dtype=np.int64)
    req_of_span[req_span] = np.arange(m)

    # 4. judgements: every span of a trace with requests belongs to one request
    owner = np.full(n, -1, dtype=np.int64)
    inside = call_root >= 0
    owner[inside] = req_of_span[call_root[inside]]
    rest = np.nonzero(~inside & (root_of >= 0))[0]
    if len(rest):
        r = root_of[rest]
        via_call = carrier_of[r]
        via_call_req = np.where(via_call >= 0, req_of_span[np.maximum(via_call, 0)], -1)
        bare_req = req_of_span[r]
        owner[rest] = np.where(via_call_req >= 0, via_call_req, bare_req)
    trace_group = np.full(n, -1, dtype=np.int64)
    trace_group[req_span] = trace[req_span]
    last_span = _last_per_group(trace_group, end_us, rank)
    last_req = np.full(int(trace.max()) + 1, -1, dtype=np.int64)
    last_req[: len(last_span)] = np.where(last_span >= 0, req_of_span[np.maximum(last_span, 0)], -1)
    orphan = owner < 0
    owner[orphan] = last_req[trace[orphan]]
    # a call's copy in another trace, and a stream's end record, belong to the call
    for partner in (dup_of, stream_of):
        other = np.nonzero(partner >= 0)[0]
        if len(other):
            by_call = req_of_span[partner[other]]
            owner[other[by_call >= 0]] = by_call[by_call >= 0]

    return _build(
        spans,
        _Requests(req_span, req_scope, is_carrier, owner, last_req, trace, rank),
        maximal,
        nca,
        dup_of,
        stream_of,
    )


def _retries(
    kids: np.ndarray,
    start_us: np.ndarray,
    end_us: np.ndarray,
    failed: np.ndarray,
    model: np.ndarray,
) -> bool:
    """Whether calls below one call are its attempts (one after another, the same model,
    every one but the last failed: a retry loop), not a batch of requests."""
    kids = kids[np.argsort(start_us[kids], kind="stable")]
    sequential = bool(np.all(start_us[kids[1:]] >= end_us[kids[:-1]]))
    same_model = len(np.unique(model[kids])) == 1
    return sequential and same_model and bool(np.all(failed[kids[:-1]]))


def _pair_streams(
    spans: pa.Table,
    maximal: np.ndarray,
    stream_end: np.ndarray,
    start_us: np.ndarray,
    end_us: np.ndarray,
    model: np.ndarray,
) -> np.ndarray:
    """For each Logfire stream-end record, the request span it completes (else -1): the
    latest-ending call of the same service, scope and model without token usage that ended
    before the record (give or take :data:`STREAM_PAIR_SLACK_US`), each call paired once.
    Returns, per span, the row of the call its record completes (-1 elsewhere)."""
    out = np.full(len(maximal), -1, dtype=np.int64)
    records = np.nonzero(stream_end)[0]
    if not len(records):
        return out
    service = _codes(spans.column("service_name"))
    scope = _codes(spans.column("scope_name"))
    unused = (
        maximal & ~_valid(spans.column("input_tokens")) & ~_valid(spans.column("output_tokens"))
    )
    for rec in records[np.argsort(start_us[records], kind="stable")]:
        cand = np.nonzero(
            unused
            & (service == service[rec])
            & (scope == scope[rec])
            & (model == model[rec])
            & (end_us <= start_us[rec] + STREAM_PAIR_SLACK_US)
        )[0]
        if len(cand):
            best = cand[np.argmax(end_us[cand])]
            out[rec] = best
            unused[best] = False
    return out


def _cross_trace_duplicates(
    spans: pa.Table,
    maximal: np.ndarray,
    parent: np.ndarray,
    trace: np.ndarray,
    start_us: np.ndarray,
    end_us: np.ndarray,
    model: np.ndarray,
) -> np.ndarray:
    """For each call that records, at the root of a trace of its own, a call already recorded
    in another trace, that call's row (else -1). Two shapes:

    * another instrumentor's copy: the same service, another instrumentation scope, the same
      model, within the other call (give or take :data:`DUPLICATE_SLACK_US`);
    * the model server's span without the client's context (``SERVER`` kind, no model name):
      another service's call containing it (give or take :data:`SERVER_SKEW_US`) with the same
      prompt and completion token counts.

    Token counts must be equal where both calls have them. Matched one to one, the tightest
    containment first."""
    out = np.full(len(maximal), -1, dtype=np.int64)
    calls = np.nonzero(maximal)[0]
    if len(calls) < 2:
        return out
    service = _codes(spans.column("service_name"))
    scope = _codes(spans.column("scope_name"))
    roots = calls[parent[calls] < 0]
    server = _np(pc.fill_null(pc.equal(spans.column("kind"), "SERVER"), False))
    unnamed = ~_valid(spans.column("request_model")) & ~_valid(spans.column("response_model"))
    orphans = roots[server[roots] & unnamed[roots]]
    # another instrumentor's copy needs a service whose calls come from two scopes
    pairs = np.unique(np.stack([service[calls], scope[calls]], axis=1), axis=0)
    services, counts = np.unique(pairs[:, 0], return_counts=True)
    mixed = np.isin(service[roots], services[counts > 1])
    copies = roots[mixed]
    if not len(copies) and not len(orphans):
        return out
    tokens_in = _np(spans.column("input_tokens").combine_chunks().fill_null(-1))
    tokens_out = _np(spans.column("output_tokens").combine_chunks().fill_null(-1))
    found: list[tuple[int, int, int]] = []

    def consider(b: int, cand: np.ndarray, both: bool) -> None:
        for c in cand:
            if both and (tokens_in[b] < 0 or tokens_out[b] < 0):
                return
            if all(x[c] < 0 or x[b] < 0 or x[c] == x[b] for x in (tokens_in, tokens_out)):
                found.append((int(end_us[c] - start_us[c]), int(b), int(c)))

    other_trace = trace[calls]
    for b in copies:
        consider(
            int(b),
            calls[
                (service[calls] == service[b])
                & (scope[calls] != scope[b])
                & (other_trace != trace[b])
                & (model[calls] == model[b])
                & (start_us[calls] <= start_us[b])
                & (end_us[calls] + DUPLICATE_SLACK_US >= end_us[b])
            ],
            both=False,
        )
    for b in orphans:
        consider(
            int(b),
            calls[
                (service[calls] != service[b])
                & (other_trace != trace[b])
                & (start_us[calls] <= start_us[b] + SERVER_SKEW_US)
                & (end_us[calls] + SERVER_SKEW_US >= end_us[b])
                & (tokens_in[calls] == tokens_in[b])
                & (tokens_out[calls] == tokens_out[b])
            ],
            both=True,
        )
    taken = np.zeros(len(maximal), dtype=bool)
    for _, copy, call in sorted(found):
        if out[copy] < 0 and not taken[call] and out[call] < 0:
            out[copy] = call
            taken[call] = True
    return out


def _dedupe(spans: pa.Table) -> pa.Table:
    key = pc.binary_join_element_wise(spans.column("trace_id"), spans.column("span_id"), "/")
    codes = _codes(key)
    _, first = np.unique(codes, return_index=True)
    if len(first) == spans.num_rows:
        return spans
    return spans.take(pa.array(np.sort(first)))


def _parents(spans: pa.Table, trace: np.ndarray) -> np.ndarray:
    """Each span's parent row in ``spans`` (same trace), or -1."""
    n = spans.num_rows
    sid = spans.column("span_id").combine_chunks()
    pid = spans.column("parent_span_id").combine_chunks().cast(pa.string())
    both = _codes(pa.concat_arrays([sid.cast(pa.string()), pid]))
    s_code, p_code = both[:n], both[n:]
    width = int(both.max()) + 1
    key = trace * width + s_code
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    pkey = trace * width + p_code
    pos = np.searchsorted(sorted_key, pkey)
    pos = np.minimum(pos, n - 1)
    found = (p_code >= 0) & (sorted_key[pos] == pkey)
    parent = np.where(found, order[pos], -1)
    parent[parent == np.arange(n)] = -1  # a span that names itself as parent: a root
    return parent


def _pick(
    spans: pa.Table, column: str, stages: list[tuple[np.ndarray, np.ndarray]], m: int
) -> pa.Array:
    """Per request, the first non-null value of ``column`` over ``stages``: each stage is
    ``(request index, span row)`` candidates in priority order."""
    arr = spans.column(column).combine_chunks()
    valid = _valid(arr)
    src = np.full(m, -1, dtype=np.int64)
    for req, row in stages:
        ok = valid[row] & (src[req] < 0)
        req, row = req[ok], row[ok]
        if len(req):
            _, first = np.unique(req, return_index=True)  # first candidate per request
            src[req[first]] = row[first]
    return arr.take(pa.array(src, mask=src < 0))


@dataclass(frozen=True, slots=True)
class _Requests:
    """The resolved requests, as span rows: ``span`` (the request's span), ``scope`` (the
    outermost span of its scope, or -1), ``carrier`` (it carries its scope's latency and
    judgements), ``owner`` (per span, the request it belongs to), ``last`` (per trace code,
    its last request)."""

    span: np.ndarray
    scope: np.ndarray
    carrier: np.ndarray
    owner: np.ndarray
    last: np.ndarray
    trace: np.ndarray
    rank: np.ndarray


def _build(
    spans: pa.Table,
    req: _Requests,
    maximal: np.ndarray,
    nca: np.ndarray,
    dup_of: np.ndarray,
    stream_of: np.ndarray,
) -> pa.Table:
    n, m = spans.num_rows, len(req.span)
    req_ids = np.arange(m)
    req_of_span = np.full(n, -1, dtype=np.int64)
    req_of_span[req.span] = req_ids
    start = _np(spans.column("start_time").cast(pa.int64()).fill_null(0))
    # calls nested in each request's call, outer ones first (by start time)
    is_call = maximal | (nca >= 0)
    inner = np.nonzero(is_call & ~maximal)[0]
    top = inner.copy()
    for _ in range(_MAX_JUMPS):
        nxt = nca[top]
        step = nxt >= 0
        if not step.any():
            break
        top[step] = nxt[step]
    inner_req = req_of_span[top] if len(top) else np.zeros(0, np.int64)
    # another instrumentor's copy of the call (in another trace) comes after the nested ones
    copies = np.nonzero(dup_of >= 0)[0]
    inner = np.concatenate([inner, copies])
    inner_req = np.concatenate([inner_req, req_of_span[dup_of[copies]]])
    order = np.lexsort((start[inner], inner_req))
    inner, inner_req = inner[order], inner_req[order]
    keep = inner_req >= 0
    inner, inner_req = inner[keep], inner_req[keep]
    records = np.nonzero(stream_of >= 0)[0]
    record_req = req_of_span[stream_of[records]]
    own = (req_ids, req.span)
    stream = (record_req[record_req >= 0], records[record_req >= 0])
    nested = (inner_req, inner)
    has_scope = req.scope >= 0
    scope_stage = (req_ids[has_scope], req.scope[has_scope])
    cols: dict[str, pa.Array] = {}
    for c in _CALL_COLUMNS:
        stages = [stream, own, nested] if c in _STREAM_COLUMNS else [own, nested]
        if c in _SCOPE_COLUMNS:
            stages.append(scope_stage)
        cols[c] = _pick(spans, c, stages, m)
    take = pa.array(req.span)
    duration = _np(spans.column("duration_ms").combine_chunks().fill_null(np.nan)).astype(float)
    end = spans.column("end_time").combine_chunks().take(take)
    latency = duration[req.span].copy()
    if len(stream[0]):  # a stream's latency runs from its request to its end record
        end_us = _np(spans.column("end_time").cast(pa.int64()).fill_null(0))
        latency[stream[0]] = (end_us[stream[1]] - start[req.span[stream[0]]]) / 1000.0
        ends = np.asarray(end.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False))
        ends = ends.copy()
        ends[stream[0]] = end_us[stream[1]]
        end = pa.array(ends, pa.int64(), mask=~_valid(end)).cast(pa.timestamp("us"))
    status = spans.column("status_code").combine_chunks()
    failed = _np(pc.fill_null(pc.equal(status, "ERROR"), False))
    scope_rows = np.maximum(req.scope, 0)
    carries = req.carrier & has_scope
    route_lat = np.where(carries, duration[scope_rows], np.nan)
    error = failed[req.span] | (carries & failed[scope_rows])
    # the spans each request owns, as lists of ids (sorted by id)
    members = np.nonzero(req.owner >= 0)[0]
    members = members[np.lexsort((req.rank[members], req.owner[members]))]
    counts = np.bincount(req.owner[members], minlength=m)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    span_ids = pa.ListArray.from_arrays(
        pa.array(offsets), spans.column("span_id").combine_chunks().take(pa.array(members))
    )
    last = np.zeros(m, dtype=bool)
    lr = req.last[req.trace[req.span]]
    last[lr[lr >= 0]] = True
    scope_id_col = (
        spans.column("span_id").combine_chunks().take(pa.array(req.scope, mask=req.scope < 0))
    )
    out = {
        "trace_id": spans.column("trace_id").combine_chunks().take(take),
        "span_id": spans.column("span_id").combine_chunks().take(take),
        "scope_span_id": scope_id_col,
        "name": spans.column("name").combine_chunks().take(take),
        "service_name": spans.column("service_name").combine_chunks().take(take),
        "start_time": spans.column("start_time").combine_chunks().take(take),
        "end_time": end,
        **cols,
        "latency_ms": pa.array(latency, mask=np.isnan(latency)),
        "route_latency_ms": pa.array(route_lat, mask=np.isnan(route_lat)),
        "error": pa.array(error),
        "last_in_trace": pa.array(last),
        "span_ids": span_ids,
    }
    table = pa.Table.from_arrays(
        [out[name].cast(REQUEST_SCHEMA.field(name).type) for name in REQUEST_COLUMN_NAMES],
        schema=REQUEST_SCHEMA,
    )
    order = pc.sort_indices(
        table, [("trace_id", "ascending"), ("start_time", "ascending"), ("span_id", "ascending")]
    )
    return table.take(order)
