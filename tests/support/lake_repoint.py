"""A re-pointed served name on lake collectors, the traffic and registrations over HTTP.

Used by ``tests/api/test_lake_api.py`` (the DuckDB lake engine and the embedded server) and
``tests/analytics/test_spark.py`` (the Spark lake engine): a served name first mapped after
its spans (the backfill), then re-pointed to a new version, a span with an explicit
``prefix.id`` under that name, and a name declared with ``serve --served-model``.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.serverproc import ServerProcess

#: what :func:`repointed_lake` sends, per (prefix_id, prefix_version) as attributed: spans 1-3
#: and 7-8 on cardiology@3 (before and after its registration), 9-11 on @4 (after the
#: re-pointing), span 4 explicit, 5-6 radiology@1 (``--served-model``)
EXPECTED = {
    ("cardiology", "3"): 5,
    ("cardiology", "4"): 3,
    ("explicit", None): 1,
    ("radiology", "1"): 2,
}
#: the attributed requests per variant, on a lake engine (``requests_base``)
COUNTS_SQL = "SELECT prefix_id, prefix_version, count(*) AS n FROM requests_base GROUP BY ALL"
#: the ``--served-model`` declaration of the first collector (and of an embedded server)
DECLARED = ("--served-model", "radio-lora=radiology@1")


def lake_server(start_server: Any, lake: Path, *args: str) -> ServerProcess:
    srv: ServerProcess = start_server("--store", "lake", "--lake-path", str(lake), *args)
    return srv


def span(trace: int, start: dt.datetime, model: str, prefix_id: str | None = None) -> dict:
    ns = int(start.replace(tzinfo=dt.UTC).timestamp() * 1e9)
    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": model}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "7"}},
    ]
    if prefix_id is not None:
        attrs.append({"key": "prefix.id", "value": {"stringValue": prefix_id}})
    return {
        "traceId": f"{trace:032x}",
        "spanId": f"{trace:016x}",
        "name": f"chat {model}",
        "kind": 3,
        "startTimeUnixNano": str(ns),
        "endTimeUnixNano": str(ns + 20_000_000),
        "attributes": attrs,
    }


def send(servers: list[ServerProcess], spans: list[dict]) -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "notes"}},
                        {"key": "base_model", "value": {"stringValue": "tiny-base"}},
                    ]
                },
                "scopeSpans": [{"spans": spans}],
            }
        ]
    }
    for srv in servers:
        assert httpx.post(srv.base_url + "/v1/traces", json=body).status_code == 200


def put(servers: list[ServerProcess], pid: str, body: dict) -> list[dt.datetime]:
    times = []
    for i, srv in enumerate(servers):
        resp = httpx.put(f"{srv.base_url}/api/v1/prefixes/{pid}", json=body)
        assert resp.status_code in (200, 201), resp.text
        info = resp.json()
        assert info["served_model_names"] == body.get("served_model_names", ["cardio"]), i
        times.append(dt.datetime.fromisoformat(info["updated_at"]).replace(tzinfo=None))
    return times


def repointed_lake(
    start_server: Any, lake: Path, embedded: ServerProcess | None = None
) -> list[ServerProcess]:
    """Two lake collectors writing ``lake`` (the first with :data:`DECLARED`); every span and
    registration also goes to ``embedded`` when given (started with :data:`DECLARED`).
    Returns the collectors."""
    a = lake_server(start_server, lake, *DECLARED)
    b = lake_server(start_server, lake)
    also = [embedded] if embedded is not None else []
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # before any registration: 3 spans under the served name, 1 explicit, 2 on radio-lora
    early = [span(i, now - dt.timedelta(hours=1, seconds=i), "cardio") for i in range(1, 4)]
    early.append(span(4, now - dt.timedelta(hours=1), "cardio", prefix_id="explicit"))
    early += [span(i, now - dt.timedelta(minutes=30), "hosted_vllm/radio-lora") for i in (5, 6)]
    send([a, *also], early)
    first = put([a, *also], "cardiology", {"version": "3", "served_model_names": ["cardio"]})
    # the other collector sees the registration in the lake: an update, not a creation
    for srv in (b, *also):
        again = httpx.put(
            f"{srv.base_url}/api/v1/prefixes/cardiology",
            json={"version": "3", "served_model_names": ["cardio"], "owner": "ml"},
        )
        assert again.status_code == 200 and again.json()["owner"] == "ml", again.text
    middle_t = max(first) + dt.timedelta(milliseconds=5)
    send([b, *also], [span(i, middle_t, "openai/cardio") for i in range(7, 9)])
    time.sleep(0.05)
    second = put([b, *also], "cardiology", {"version": "4"})
    assert min(second) > middle_t
    late_t = max(second) + dt.timedelta(milliseconds=5)
    send([a, *also], [span(i, late_t, "cardio") for i in range(9, 12)])
    return [a, b]
