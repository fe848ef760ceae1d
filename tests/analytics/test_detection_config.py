"""The one place a detection config is assembled from a user's options
(``DetectionConfig.from_options``): the CLI's flags and the API's fields give the same config,
an option not given keeps its default, and every bad value is a ``DetectionConfigError``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from prefixscope.analytics.detection_config import DetectionConfig, DetectionConfigError
from prefixscope.analytics.slices import SliceConfig
from prefixscope.api.detect import detection_config
from prefixscope.api.models import RegressionRunRequest
from prefixscope.cli.common import detection_config as cli_config


def test_options_not_given_keep_the_defaults() -> None:
    assert DetectionConfig.from_options() == DetectionConfig().validate()
    cfg = DetectionConfig.from_options(alpha=0.01, min_n=50)
    assert (cfg.alpha, cfg.min_n) == (0.01, 50)
    assert cfg.slices == SliceConfig() and cfg.sequential == "msprt"


def test_min_effects_as_strings_or_a_mapping_and_durations_as_text() -> None:
    a = DetectionConfig.from_options(
        min_effect=["latency_p99=0.2", "error_rate=0.01"], window="6h", window_delay="30m"
    )
    b = DetectionConfig.from_options(
        min_effect={"latency_p99": 0.2, "error_rate": 0.01},
        window=timedelta(hours=6),
        window_delay=timedelta(minutes=30),
    )
    assert a == b
    assert a.min_effect["latency_p99"] == 0.2 and a.min_effect["error_rate"] == 0.01
    assert a.window == timedelta(hours=6) and a.window_delay == timedelta(minutes=30)


@pytest.mark.parametrize(
    "options",
    [
        {"alpha": 1.5},
        {"min_n": 1},
        {"min_effect": ["latency_p99"]},
        {"min_effect": ["latency_p99=fast"]},
        {"min_effect": ["=0.1"]},
        {"sequential": "sometimes"},
        {"window": "forever"},
        {"window_delay": "-1h"},
        {"slice_depth": 7},
        {"max_slices": 0},
    ],
)
def test_every_bad_value_is_a_detection_config_error(options: dict[str, object]) -> None:
    with pytest.raises(DetectionConfigError):
        DetectionConfig.from_options(**options)  # type: ignore[arg-type]


def test_the_cli_and_the_api_assemble_the_same_config() -> None:
    cli = cli_config(
        0.02,
        200,
        ("latency_p99=0.3",),
        0.05,
        "windows",
        "12h",
        "1h",
        SliceConfig(depth=1, max_slices=20, full=False),
    )
    api = detection_config(
        RegressionRunRequest(
            alpha=0.02,
            min_n=200,
            sequential="windows",
            window="12h",
            window_delay="1h",
            slice_depth=1,
            max_slices=20,
        )
    )
    api.min_effect["latency_p99"] = 0.3  # the API has no per-metric effect field
    assert cli == api


def test_the_gate_command_refuses_a_bad_flag_before_reading_the_store(tmp_path: object) -> None:
    from prefixscope.cli import main

    res = CliRunner().invoke(
        main,
        ["analytics", "gate", "--data-dir", str(tmp_path), "--prefix", "p", "--min-effect", "x"],
    )
    assert res.exit_code == 2
    assert "expected METRIC=VALUE" in res.output
