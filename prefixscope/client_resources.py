"""The write resources of :class:`prefixscope.client.Client`: ``client.scores``,
``client.feedback`` and ``client.prefixes``. Each is given the client's JSON call."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: ``call(method, path, *, params=None, body=None)``: the decoded JSON answer
JsonCall = Callable[..., Any]


def segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _ids(trace_id: str | None, span_id: str | None) -> tuple[str, str | None]:
    """``trace_id``/``span_id`` as given; without a trace id, the current span's ids."""
    if trace_id is not None:
        return trace_id, span_id
    from prefixscope.instrumentation import current_ids

    ids = current_ids()
    if ids is None:
        raise ValueError(
            "no trace_id given and no current span: pass trace_id= (and span_id=), or call "
            "inside a traced function (@trace, variant(...), an instrumented model call)"
        )
    return ids.trace_id, span_id if span_id is not None else ids.span_id


def _without_none(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


class Scores:
    def __init__(self, call: JsonCall) -> None:
        self._json = call

    def log(
        self,
        name: str,
        value: float,
        *,
        trace_id: str | None = None,
        span_id: str | None = None,
        label: str | None = None,
        reason: str | None = None,
        source: str | None = None,
        id: str | None = None,
    ) -> dict[str, Any]:
        """Store one evaluator score in [0, 1] (``POST /api/v1/scores``) on ``trace_id`` /
        ``span_id``, by default the current span's. Returns the write result (``ids``,
        ``inserted``, ``duplicate_ids``, ``unknown_trace_ids``)."""
        trace, span = _ids(trace_id, span_id)
        record = {"trace_id": trace, "span_id": span, "name": name, "value": value}
        record |= {"label": label, "reason": reason, "source": source, "id": id}
        return self._json("POST", "/api/v1/scores", body=_without_none(record))


class Feedback:
    def __init__(self, call: JsonCall) -> None:
        self._json = call

    def log(
        self,
        kind: str,
        value: float | None = None,
        *,
        comment: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        id: str | None = None,
    ) -> dict[str, Any]:
        """Store one feedback record (``thumbs_up``, ``thumbs_down``, ``escalation`` or your
        own kind; ``value`` default 1) on ``trace_id``/``span_id``, by default the current
        span's (``POST /api/v1/feedback``)."""
        trace, span = _ids(trace_id, span_id)
        record = {"trace_id": trace, "span_id": span, "kind": kind, "value": value}
        record |= {"comment": comment, "id": id}
        return self._json("POST", "/api/v1/feedback", body=_without_none(record))


class Prefixes:
    def __init__(self, call: JsonCall) -> None:
        self._json = call

    def register(
        self,
        prefix_id: str,
        *,
        base_model: str | None = None,
        prefix_type: str | None = None,
        version: str | None = None,
        served_model_names: Sequence[str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Register (or replace) a variant (``PUT /api/v1/prefixes/{prefix_id}``); other
        fields: ``owner``, ``specialty``, ``training_corpus``, ``adapter_hash``, ``status``,
        ``metadata``. Returns the variant as the server now has it."""
        body = {
            "base_model": base_model,
            "prefix_type": prefix_type,
            "version": version,
            "served_model_names": list(served_model_names)
            if served_model_names is not None
            else None,
            **fields,
        }
        return self._json("PUT", f"/api/v1/prefixes/{segment(prefix_id)}", body=_without_none(body))

    def get(self, prefix_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/prefixes/{segment(prefix_id)}")

    def list(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/v1/prefixes")["prefixes"])
