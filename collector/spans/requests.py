"""The request: the unit of every metric, resolved from whole traces.

A **request** is one model call made for a variant (or for the base model). Spans nest, and
many of them carry variant attributes (``variant(...)`` stamps every span in its scope, the
SDK puts ``base_model`` on every span), so counting spans counts HTTP handlers, DB calls and
chains as requests. :func:`resolve` turns the spans of whole traces into one row per request,
by these rules (DESIGN.md, "The request"; docs/requests.md):

1. **Model calls.** A span is a model call when its ``operation`` (the normalized
   ``prefixscope.span.kind`` / ``gen_ai.operation.name`` / ``openinference.span.kind`` /
   ``traceloop.span.kind`` / … value, see ``normalize.py``) names one
   (:data:`~.operations.CALL_OPERATIONS`), or, when the operation names nothing known to be
   something else (:data:`~.operations.NOT_CALL_OPERATIONS`: chains, tools, agents,
   retrievers, embeddings…), when the span carries a request or response model name or token
   usage of its own. ``base_model`` alone (from the resource or the SDK's defaults) never
   makes a call. ``@trace(request=True)`` (operation ``request``) always does.
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

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefixscope import semconv

from .arrays import (
    MAX_JUMPS,
    codes_of,
    last_per_group,
    lexical_rank,
    nearest_marked,
    np_of,
    pointer_jump,
    valid_of,
)
from .duplicates import STREAM_END_NAME, cross_trace_duplicates, dedupe, pair_streams, retries
from .operations import CALL_OPERATIONS, NOT_CALL_OPERATIONS
from .request_columns import REQUEST_COLUMN_NAMES, REQUEST_SCHEMA, SKELETON_COLUMNS

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


def resolve(spans: pa.Table) -> pa.Table:
    """One row per request (:data:`REQUEST_SCHEMA`) of the traces in ``spans``.

    ``spans`` holds :data:`SKELETON_COLUMNS` of whole traces (a trace cut in two resolves as
    two partial traces). Rows repeated by ``(trace_id, span_id)`` count once.
    """
    spans = spans.select(list(SKELETON_COLUMNS))
    if spans.num_rows == 0:
        return REQUEST_SCHEMA.empty_table()
    spans = dedupe(spans)
    n = spans.num_rows
    idx = np.arange(n, dtype=np.int64)
    trace = codes_of(spans.column("trace_id"))
    parent = _parents(spans, trace)
    start_us = np_of(spans.column("start_time").cast(pa.int64()).fill_null(0))
    end_us = np_of(spans.column("end_time").cast(pa.int64()).fill_null(np.iinfo(np.int64).min))
    rank = lexical_rank(spans.column("span_id"))

    # 1-2. model calls, containers, and the call each span belongs to
    op = pc.utf8_lower(spans.column("operation"))
    explicit = np_of(pc.fill_null(pc.equal(op, semconv.REQUEST_SPAN_KIND), False))
    call_op = np_of(pc.fill_null(pc.is_in(op, pa.array(sorted(CALL_OPERATIONS))), False))
    not_call = np_of(pc.fill_null(pc.is_in(op, pa.array(sorted(NOT_CALL_OPERATIONS))), False))
    evidence = np.zeros(n, dtype=bool)
    for col in ("request_model", "response_model", "input_tokens", "output_tokens"):
        evidence |= valid_of(spans.column(col))
    is_call = explicit | call_op | (~not_call & evidence)
    stream_end = np_of(pc.fill_null(pc.equal(op, "log"), False)) & np_of(
        pc.fill_null(pc.starts_with(spans.column("name"), STREAM_END_NAME), False)
    )
    failed = np_of(pc.fill_null(pc.equal(spans.column("status_code"), "ERROR"), False))
    model = codes_of(spans.column("request_model"))
    nca = nearest_marked(parent, is_call, inclusive=False)
    attempts_of = np.zeros(n, dtype=bool)  # calls whose calls below are retries of them
    for _ in range(MAX_JUMPS):  # containers: calls with two or more calls right below
        below = nca[is_call & (nca >= 0)]
        children = np.bincount(below, minlength=n) if len(below) else np.zeros(n, np.int64)
        container = is_call & (children >= 2) & ~explicit & ~attempts_of
        for c in np.nonzero(container)[0]:
            kids = np.nonzero(is_call & (nca == c))[0]
            if retries(kids, start_us, end_us, failed, model):
                container[c] = False
                attempts_of[c] = True
        if not container.any():
            break
        is_call &= ~container
        nca = nearest_marked(parent, is_call, inclusive=False)
    maximal = is_call & (nca < 0)
    stream_of = pair_streams(spans, maximal, stream_end, start_us, end_us, model)
    dup_of = cross_trace_duplicates(spans, maximal, parent, trace, start_us, end_us, model)
    maximal &= dup_of < 0
    call_root = nearest_marked(parent, maximal, inclusive=True)  # the request call a span is in

    # 3. variant scopes: each span's nearest scoped span, and that scope's outermost span
    scope = codes_of(spans.column("variant_scope"))
    scoped = scope >= 0
    up = idx.copy()
    same = (parent >= 0) & scoped
    same[same] &= scope[parent[same]] == scope[same]
    up[same] = parent[same]
    scope_root = pointer_jump(up, lambda g: up[g] == g)
    in_scope = nearest_marked(parent, scoped, inclusive=True)
    root_of = np.where(in_scope >= 0, scope_root[np.maximum(in_scope, 0)], -1)

    calls = np.nonzero(maximal)[0]
    call_scope = root_of[calls]
    # a scope's calls: the scope carries its latency and judgements to its last call
    group = np.full(n, -1, dtype=np.int64)
    group[calls] = call_scope
    carrier = last_per_group(group, end_us, rank)
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
    for _ in range(MAX_JUMPS):
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
    last_span = last_per_group(trace_group, end_us, rank)
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


def _parents(spans: pa.Table, trace: np.ndarray) -> np.ndarray:
    """Each span's parent row in ``spans`` (same trace), or -1."""
    n = spans.num_rows
    sid = spans.column("span_id").combine_chunks()
    pid = spans.column("parent_span_id").combine_chunks().cast(pa.string())
    both = codes_of(pa.concat_arrays([sid.cast(pa.string()), pid]))
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
    valid = valid_of(arr)
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
    start = np_of(spans.column("start_time").cast(pa.int64()).fill_null(0))
    # calls nested in each request's call, outer ones first (by start time)
    is_call = maximal | (nca >= 0)
    inner = np.nonzero(is_call & ~maximal)[0]
    top = inner.copy()
    for _ in range(MAX_JUMPS):
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
    duration = np_of(spans.column("duration_ms").combine_chunks().fill_null(np.nan)).astype(float)
    end = spans.column("end_time").combine_chunks().take(take)
    latency = duration[req.span].copy()
    if len(stream[0]):  # a stream's latency runs from its request to its end record
        end_us = np_of(spans.column("end_time").cast(pa.int64()).fill_null(0))
        latency[stream[0]] = (end_us[stream[1]] - start[req.span[stream[0]]]) / 1000.0
        ends = np.asarray(end.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False))
        ends = ends.copy()
        ends[stream[0]] = end_us[stream[1]]
        end = pa.array(ends, pa.int64(), mask=~valid_of(end)).cast(pa.timestamp("us"))
    status = spans.column("status_code").combine_chunks()
    failed = np_of(pc.fill_null(pc.equal(status, "ERROR"), False))
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
