"""Golden OTLP fixtures, one per foreign attribute convention, normalized into ``spans`` columns.

Each ``tests/fixtures/otlp/<source>.json`` is a realistic OTLP/JSON export request as that
source emits it; ``<source>.expected.json`` next to it lists, per span id, the exact value of
every ``spans`` column (``attributes``/``resource`` as the key/value pairs they must contain).
Every case is decoded three ways: the JSON decoder, the protobuf decoder (same request via
``json_format.Parse``), and — once for all sources — the real server, read back from DuckDB.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from prefixscope.collector.decoding.json import decode_json
from prefixscope.collector.decoding.protobuf import decode_protobuf
from prefixscope.collector.spans.model import NORMALIZED_COLUMNS, SPAN_COLUMN_NAMES, SpanBatch
from tests.support.otlp import SOURCES, expected_spans, fixture_bytes, otlp_json_to_protobuf
from tests.support.paths import FIXTURES as FIXTURES_DIR
from tests.support.serverproc import ServerProcess
from tests.support.store import query_store

FIXTURES = FIXTURES_DIR / "otlp"
_EPOCH = datetime(1970, 1, 1)
# Columns compared literally; attributes/resource are checked through *_include.
_PLAIN = tuple(c for c in SPAN_COLUMN_NAMES if c not in ("attributes", "resource"))


def _iso(value: Any) -> str:
    if isinstance(value, int):  # SpanBatch keeps microseconds since the epoch
        value = _EPOCH + timedelta(microseconds=value)
    assert isinstance(value, datetime), value
    return value.isoformat()


def _as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def actual_row(row: dict[str, Any]) -> dict[str, Any]:
    """A decoded or stored span in the shape of the expected files."""
    out = {c: row[c] for c in _PLAIN}
    out["start_time"] = _iso(row["start_time"])
    out["end_time"] = _iso(row["end_time"])
    out["cohort"] = _as_json(row["cohort"])
    out["attributes"] = _as_json(row["attributes"])
    out["resource"] = _as_json(row["resource"])
    out["events"] = _as_json(row["events"])
    out["links"] = _as_json(row["links"])
    return out


def assert_matches(source: str, span_id: str, got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(want) == {*_PLAIN, "attributes_include", "resource_include"} - {"span_id"}, (
        f"{source}.expected.json must list every column for span {span_id}"
    )
    for column in _PLAIN:
        if column == "span_id":
            continue
        assert got[column] == want[column], f"{source} span {span_id}: column {column}"
    for key, value in want["attributes_include"].items():
        assert got["attributes"].get(key) == value, f"{source} span {span_id}: attribute {key}"
    for key, value in want["resource_include"].items():
        assert got["resource"].get(key) == value, f"{source} span {span_id}: resource {key}"


def batch_rows(batch: SpanBatch) -> dict[str, dict[str, Any]]:
    cols = batch.columns
    return {
        span_id: actual_row({c: cols[c][i] for c in SPAN_COLUMN_NAMES})
        for i, span_id in enumerate(cols["span_id"])
    }


DECODERS: dict[str, Callable[[bytes], SpanBatch]] = {
    "json": decode_json,
    "protobuf": lambda body: decode_protobuf(otlp_json_to_protobuf(body)),
}


@pytest.mark.parametrize("encoding", sorted(DECODERS))
@pytest.mark.parametrize("source", SOURCES)
def test_source_normalizes_to_expected_columns(source: str, encoding: str) -> None:
    batch = DECODERS[encoding](fixture_bytes(source))
    assert (batch.rejected, batch.reject_messages, batch.truncated_attributes) == (0, [], 0)
    rows = batch_rows(batch)
    want = expected_spans(source)
    assert sorted(rows) == sorted(want)
    for span_id, expected in want.items():
        assert_matches(source, span_id, rows[span_id], expected)


@pytest.mark.parametrize("source", SOURCES)
def test_json_and_protobuf_decode_identically(source: str) -> None:
    body = fixture_bytes(source)
    assert decode_json(body).columns == decode_protobuf(otlp_json_to_protobuf(body)).columns


def test_every_normalized_column_is_exercised_by_some_fixture() -> None:
    """A column no fixture fills is a mapping nobody tests."""
    filled = {
        column
        for source in SOURCES
        for span in expected_spans(source).values()
        for column in NORMALIZED_COLUMNS
        if span[column] is not None
    }
    assert filled == set(NORMALIZED_COLUMNS)


def test_fixtures_through_the_real_server(start_server: Callable[..., ServerProcess]) -> None:
    srv = start_server()
    for i, source in enumerate(SOURCES):  # alternate the two OTLP/HTTP encodings
        body = fixture_bytes(source)
        if i % 2:
            body, ctype = otlp_json_to_protobuf(body), "application/x-protobuf"
        else:
            ctype = "application/json"
        resp = httpx.post(
            f"{srv.base_url}/v1/traces", content=body, headers={"Content-Type": ctype}, timeout=30
        )
        assert resp.status_code == 200, (source, resp.text)
    assert srv.stop() == 0
    columns = ", ".join(SPAN_COLUMN_NAMES)
    stored = {
        row[1]: actual_row(dict(zip(SPAN_COLUMN_NAMES, row, strict=True)))
        for row in query_store(srv.data_dir, f"SELECT {columns} FROM spans")
    }
    want = {
        span_id: (source, span)
        for source in SOURCES
        for span_id, span in expected_spans(source).items()
    }
    assert sorted(stored) == sorted(want)
    for span_id, (source, expected) in want.items():
        assert_matches(source, span_id, stored[span_id], expected)


# -- priority between spellings of one column (independent of attribute order) ---------------

#: column -> [(key, value)] highest priority first, and the value the column must take.
PRIORITY: dict[str, tuple[list[tuple[str, Any]], Any]] = {
    "base_model": (
        [
            ("base_model", "own"),
            ("gen_ai.request.model", "genai"),
            ("llm.model_name", "openinference"),
            ("gen_ai.response.model", "vllm"),
        ],
        "own",
    ),
    "session_id": ([("session.id", "sess"), ("gen_ai.conversation.id", "conv")], "sess"),
    "input_tokens": (
        [
            ("gen_ai.usage.input_tokens", 1),
            ("llm.token_count.prompt", 2),
            ("gen_ai.usage.prompt_tokens", 3),
        ],
        1,
    ),
    "output_tokens": (
        [
            ("gen_ai.usage.output_tokens", 1),
            ("llm.token_count.completion", 2),
            ("gen_ai.usage.completion_tokens", 3),
        ],
        1,
    ),
    "cached_tokens": (
        [
            ("gen_ai.usage.cache_read.input_tokens", 1),
            ("llm.token_count.prompt_details.cache_read", 2),
            ("gen_ai.usage.cache_read_tokens", 3),
        ],
        1,
    ),
    "ttft_ms": (
        [
            ("gen_ai.response.time_to_first_chunk", 0.5),
            ("gen_ai.latency.time_to_first_token", 0.25),
        ],
        500.0,
    ),
}


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def _decode_attrs(attrs: list[tuple[str, Any]]) -> dict[str, Any]:
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "p",
        "attributes": [{"key": k, "value": _any_value(v)} for k, v in attrs],
    }
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()
    (row,) = batch_rows(decode_json(body)).values()
    return row


@pytest.mark.parametrize("column", sorted(PRIORITY))
def test_highest_priority_spelling_wins_in_any_order(column: str) -> None:
    keys, want = PRIORITY[column]
    for order in itertools.permutations(keys):
        assert _decode_attrs(list(order))[column] == want, order


@pytest.mark.parametrize(
    ("attrs", "want"),
    [
        ([("gen_ai.usage.input_tokens", "n/a"), ("gen_ai.usage.prompt_tokens", 3)], 3),
        ([("gen_ai.usage.prompt_tokens", 3), ("gen_ai.usage.input_tokens", "n/a")], 3),
        ([("gen_ai.usage.input_tokens", " 42 ")], 42),
        ([("gen_ai.usage.input_tokens", True)], None),
        ([("gen_ai.usage.input_tokens", "99999999999999999999999")], None),
        ([("gen_ai.usage.input_tokens", 7.0)], 7),
    ],
)
def test_unusable_value_falls_through_to_the_next_spelling(
    attrs: list[tuple[str, Any]], want: int | None
) -> None:
    assert _decode_attrs(attrs)["input_tokens"] == want
