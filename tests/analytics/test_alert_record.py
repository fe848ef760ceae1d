"""The alert record: one typed object from the detector to the API and webhooks."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import orjson

from prefixscope.analytics.alert_record import ALERT_FIELDS, COLUMNS, AlertRecord
from prefixscope.api.models import Alert
from prefixscope.api.webhooks import payload


def _row(**over: object) -> tuple[object, ...]:
    values: dict[str, object] = {
        "id": "a1",
        "prefix_id": "radiology",
        "prefix_version": "2",
        "route": "/radiology",
        "cohort": '{"specialty": "radiology"}',
        "metric": "TaskCompletion",
        "baseline": "radiology@1",
        "baseline_value": 0.9,
        "value": 0.2,
        "delta": -0.7,
        "ci_low": None,
        "ci_high": -0.5,
        "p_value": 1e-10,
        "q_value": 1e-9,
        "n": 67,
        "n_baseline": 85,
        "direction": "worse",
        "severity": "critical",
        "status": "open",
        "example_trace_ids": '["t1", "t2"]',
        "created_at": datetime(2026, 12, 1, 8, 30),
        "updated_at": None,
        "resolved_at": None,
        "fingerprint": "fp1",
        "method": "msprt:rate",
        "details": '{"alpha": 0.05}',
    }
    values.update(over)
    return tuple(values[c] for c in COLUMNS)


def test_the_record_has_the_contract_fields_in_order() -> None:
    names = tuple(f.name for f in dataclasses.fields(AlertRecord))
    assert names == COLUMNS and names[: len(ALERT_FIELDS)] == ALERT_FIELDS


def test_a_row_becomes_a_record_with_parsed_json_and_unreadable_json_becomes_empty() -> None:
    rec = AlertRecord.from_row(_row())
    assert rec.cohort == {"specialty": "radiology"} and rec.example_trace_ids == ["t1", "t2"]
    assert rec.details == {"alpha": 0.05} and rec.created_at == datetime(2026, 12, 1, 8, 30)
    odd = AlertRecord.from_row(_row(cohort="[1]", example_trace_ids="{", details='"x"'))
    assert odd.cohort == {} and odd.example_trace_ids == [] and odd.details is None


def test_to_dict_is_json_with_iso_timestamps() -> None:
    d = AlertRecord.from_row(_row(resolved_at=datetime(2026, 12, 2))).to_dict()
    assert d["created_at"] == "2026-12-01T08:30:00" and d["resolved_at"] == "2026-12-02T00:00:00"
    assert d["updated_at"] is None and list(d) == list(COLUMNS)
    assert orjson.loads(orjson.dumps(d)) == d


def test_the_api_model_and_the_webhook_are_built_from_the_record() -> None:
    rec = AlertRecord.from_row(_row())
    model = Alert.model_validate(rec, from_attributes=True)
    # every API field comes from the record (the dedupe key stays internal)
    assert set(Alert.model_fields) == set(COLUMNS) - {"fingerprint"}
    for name in Alert.model_fields:
        if name != "created_at":
            assert getattr(model, name) == getattr(rec, name), name
    assert model.created_at.isoformat() == "2026-12-01T08:30:00+00:00"
    body = payload("new", model)
    assert body["alert"]["id"] == "a1" and body["alert"]["cohort"] == {"specialty": "radiology"}
