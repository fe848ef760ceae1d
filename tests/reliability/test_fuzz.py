"""Hostile input (bench/reliability/fuzz.py): decoders never crash, server never 5xx.

Regressions: JSON integers outside 64 bits crashed the decoder (500) - fixed in
collector/decoding/json.py; slow-loris bodies held every decode slot so other clients got 429
until the senders gave up - fixed in collector/receivers/http.py / collector/pipeline/ingest.py
(receive slots apart from decode slots, and a body deadline).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.reliability import fuzz
from bench.reliability.common import ServerProcess
from prefixscope.collector.decoding import JSON
from prefixscope.errors import BadRequest
from tests.support.reports import assert_goals

#: timing- or memory-sensitive: run alone (scripts/check)
pytestmark = pytest.mark.serial

SEEDS = fuzz.Seeds.build(8)


def test_short_fuzz_run_has_no_crash_no_5xx_and_serves_through_slow_loris() -> None:
    rep = fuzz.run(cases=2000, http_share=0.05, seed=11, loris_clients=16, loris_s=4.0)
    assert_goals(rep)


@given(st.integers(min_value=0, max_value=2**32))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_request_decodes_or_is_refused_within_the_taxonomy(seed: int) -> None:
    case = fuzz.make_case(random.Random(seed), SEEDS)
    result, _table = fuzz.classify(case)  # anything outside the taxonomy raises here
    assert result.startswith(("decoded", "refused:"))


@pytest.mark.parametrize("value", [2**64, 10**40, "18446744073709551616", "-9223372036854775809"])
@pytest.mark.parametrize("where", ["startTimeUnixNano", "endTimeUnixNano", "intValue"])
def test_json_integer_outside_64_bits_is_a_400(value: object, where: str) -> None:
    if where == "intValue":
        body = fuzz._span_doc([{"key": "gen_ai.usage.input_tokens", "value": {where: value}}])
    else:
        body = fuzz._span_doc([], **{where: value})
    with pytest.raises(BadRequest, match="range"):
        fuzz.decode_body(body, JSON, None, 1 << 20, 1024)


def test_slow_loris_clients_do_not_starve_others(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", ["--lake-roll-interval-s", "0"]).start()
    try:
        res = fuzz.slow_loris(srv, clients=12, seconds=3.0)
    finally:
        srv.stop()
    assert res["normal_requests"] > 0
    assert res["normal_served_200"] == res["normal_requests"], res
