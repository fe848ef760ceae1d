"""One call seen twice: retried exports, a call's copy in another trace, a model server's
span without the client's context, and a stream's end record (Logfire). The resolver
(:mod:`.requests`) counts each call once; the rules are in its module doc."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrays import codes_of, np_of, valid_of

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


def retries(
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


def pair_streams(
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
    service = codes_of(spans.column("service_name"))
    scope = codes_of(spans.column("scope_name"))
    unused = (
        maximal & ~valid_of(spans.column("input_tokens")) & ~valid_of(spans.column("output_tokens"))
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


def cross_trace_duplicates(
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
    service = codes_of(spans.column("service_name"))
    scope = codes_of(spans.column("scope_name"))
    roots = calls[parent[calls] < 0]
    server = np_of(pc.fill_null(pc.equal(spans.column("kind"), "SERVER"), False))
    unnamed = ~valid_of(spans.column("request_model")) & ~valid_of(spans.column("response_model"))
    orphans = roots[server[roots] & unnamed[roots]]
    # another instrumentor's copy needs a service whose calls come from two scopes
    pairs = np.unique(np.stack([service[calls], scope[calls]], axis=1), axis=0)
    services, counts = np.unique(pairs[:, 0], return_counts=True)
    mixed = np.isin(service[roots], services[counts > 1])
    copies = roots[mixed]
    if not len(copies) and not len(orphans):
        return out
    tokens_in = np_of(spans.column("input_tokens").combine_chunks().fill_null(-1))
    tokens_out = np_of(spans.column("output_tokens").combine_chunks().fill_null(-1))
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


def dedupe(spans: pa.Table) -> pa.Table:
    key = pc.binary_join_element_wise(spans.column("trace_id"), spans.column("span_id"), "/")
    codes = codes_of(key)
    _, first = np.unique(codes, return_index=True)
    if len(first) == spans.num_rows:
        return spans
    return spans.take(pa.array(np.sort(first)))
