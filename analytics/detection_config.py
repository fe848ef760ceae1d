"""What a detection run is told: :class:`DetectionConfig`, its checks, and the one place a
config is assembled from the options a user gives (:meth:`DetectionConfig.from_options`: the
CLI's flags, the API's query and body fields), so that the CLI, the API, the gate and routing
read the same settings the same way."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, cast

from .catalog import DEFAULT_MIN_EFFECT, DEFAULT_MIN_N, tail_min_n
from .query import InvalidArgument, parse_duration
from .slices import SliceConfig

SEQUENTIAL_MODES = ("msprt", "fixed", "windows")


class DetectionConfigError(ValueError):
    """A detection setting is out of range."""


@dataclass(slots=True)
class DetectionConfig:
    """Detection settings; :meth:`validate` fails fast on bad values."""

    #: FDR level for Benjamini-Hochberg (and the level of reported intervals)
    alpha: float = 0.05
    #: minimum requests (or scored requests) on *each* side of a comparison
    min_n: int = 100
    #: per-metric overrides of ``min_n``
    min_n_by_metric: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MIN_N))
    #: minimum worsening per metric: absolute for rates/scores, relative for quantiles
    min_effect: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_EFFECT))
    #: minimum effect of evaluator scores without an entry in ``min_effect``
    score_min_effect: float = 0.05
    #: mSPRT mixing scale as a multiple of the minimum effect
    tau_factor: float = 2.0
    #: "msprt" (always valid, for repeated runs), "windows" (fixed-horizon tests of the
    #: latest completed evaluation window) or "fixed" (one look, fixed horizon)
    sequential: Literal["msprt", "fixed", "windows"] = "msprt"
    #: windows mode: length W of the windows [k W, (k+1) W) of start_time (epoch, UTC)
    window: timedelta = timedelta(days=1)
    #: windows mode: a window is tested only once it has been closed this long, so spans,
    #: scores and feedback that arrive late are in it the first time it is tested
    window_delay: timedelta = timedelta(0)
    #: metrics to test (default: every detectable metric present)
    metrics: list[str] | None = None
    #: baselines to compare with
    baselines: tuple[str, ...] = ("base", "previous_version")
    #: cohort slices tested per (prefix, version, base model, route) (slices.py); depth 0:
    #: the full cohort combinations only, decided by one BH over the run (before slices)
    slices: SliceConfig = field(default_factory=SliceConfig)

    def validate(self) -> DetectionConfig:
        if not 0 < self.alpha < 1:
            raise DetectionConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_n < 2 or any(v < 2 for v in self.min_n_by_metric.values()):
            raise DetectionConfigError("min_n must be >= 2")
        if any(v < 0 for v in self.min_effect.values()) or self.score_min_effect < 0:
            raise DetectionConfigError("minimum effects must be >= 0")
        if self.tau_factor <= 0:
            raise DetectionConfigError("tau_factor must be > 0")
        if self.sequential not in SEQUENTIAL_MODES:
            raise DetectionConfigError(
                f"sequential must be one of {', '.join(SEQUENTIAL_MODES)}, got {self.sequential!r}"
            )
        try:
            self.window = parse_duration(self.window)
            self.window_delay = parse_duration(self.window_delay)
        except InvalidArgument as exc:
            raise DetectionConfigError(str(exc)) from None
        if self.window < timedelta(seconds=1):
            raise DetectionConfigError(f"window must be at least 1s, got {self.window}")
        if self.window_delay < timedelta(0):
            raise DetectionConfigError(f"window_delay must be >= 0, got {self.window_delay}")
        if not set(self.baselines) <= {"base", "previous_version"}:
            raise DetectionConfigError(f"unknown baselines {self.baselines}")
        if not 0 <= self.slices.depth <= 4:
            raise DetectionConfigError(f"slice depth must be 0 to 4, got {self.slices.depth}")
        if self.slices.max_slices < 1:
            raise DetectionConfigError(f"max_slices must be >= 1, got {self.slices.max_slices}")
        return self

    def effect_floor(self, metric: str) -> float:
        return self.min_effect.get(metric, self.score_min_effect)

    def n_floor(self, metric: str) -> int:
        """The minimum requests a side: the configured one, and for tail quantiles never
        fewer than :func:`~.catalog.tail_min_n` (a validity floor, not a tuning knob)."""
        return max(self.min_n_by_metric.get(metric, self.min_n), tail_min_n(metric))

    @classmethod
    def from_options(
        cls,
        *,
        alpha: float | None = None,
        min_n: int | None = None,
        min_effect: Mapping[str, float] | Iterable[str] = (),
        score_min_effect: float | None = None,
        sequential: str | None = None,
        window: str | timedelta | None = None,
        window_delay: str | timedelta | None = None,
        metrics: Iterable[str] | None = None,
        slice_depth: int | None = None,
        max_slices: int | None = None,
        full_slices: bool = False,
    ) -> DetectionConfig:
        """The defaults, with each option that was given (None: not given); ``min_effect`` as
        a mapping or as ``METRIC=VALUE`` strings (the CLI's repeated flag); durations as
        ``30m``/``1d`` or timedeltas. Raises :class:`DetectionConfigError` on any bad value."""
        config = cls()
        if alpha is not None:
            config.alpha = alpha
        if min_n is not None:
            config.min_n = min_n
        if score_min_effect is not None:
            config.score_min_effect = score_min_effect
        if sequential is not None:
            if sequential not in SEQUENTIAL_MODES:
                raise DetectionConfigError(
                    f"sequential must be one of {', '.join(SEQUENTIAL_MODES)}, got {sequential!r}"
                )
            config.sequential = cast(Literal["msprt", "fixed", "windows"], sequential)
        if metrics:
            config.metrics = list(metrics)
        try:
            if window is not None:
                config.window = parse_duration(window)
            if window_delay is not None:
                config.window_delay = parse_duration(window_delay)
        except InvalidArgument as exc:
            raise DetectionConfigError(str(exc)) from None
        items = min_effect.items() if isinstance(min_effect, Mapping) else min_effect
        for item in items:
            if isinstance(item, str):
                name, sep, text = item.partition("=")
                try:
                    if not sep or not name:
                        raise ValueError
                    value = float(text)
                except ValueError:
                    raise DetectionConfigError(f"expected METRIC=VALUE, got {item!r}") from None
            else:
                name, value = item
            config.min_effect[name] = float(value)
        if slice_depth is not None or max_slices is not None or full_slices:
            default = config.slices
            config.slices = SliceConfig(
                depth=default.depth if slice_depth is None else slice_depth,
                max_slices=default.max_slices if max_slices is None else max_slices,
                full=full_slices,
            )
        return config.validate()
