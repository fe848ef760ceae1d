"""PrefixScope analytics: evaluators, golden-dataset replay, scorecards, regression alerts.

Every analysis takes a DuckDB connection (``Store.cursor()``, a plain DuckDB file, or an
in-memory DuckDB with views named ``spans``/``scores``/``feedback`` over the Parquet lake).
Heavy modules (embedding model, replay) are imported lazily by their functions.
"""

from __future__ import annotations

from .alerts import ack_alert, detect_and_alert, list_alerts, save_alerts
from .cube import Cube, build_cube
from .detection import Comparison, DetectionConfig, DetectionResult, run_detection
from .evaluators import (
    EvalResult,
    Evaluator,
    EvaluatorProtocol,
    FunctionEvaluator,
    JSONValidation,
    LLMJudge,
    Refusal,
    TaskCompletion,
)
from .gate import GateResult, RoutingAdvice, gate, routing_advice
from .scorecard import MetricValue, Scorecard, ScorecardRow, scorecard
from .views import combinations, compliance, flicker, switch_latency

__all__ = [
    "Comparison",
    "Cube",
    "DetectionConfig",
    "DetectionResult",
    "EvalResult",
    "Evaluator",
    "EvaluatorProtocol",
    "FunctionEvaluator",
    "GateResult",
    "JSONValidation",
    "LLMJudge",
    "MetricValue",
    "Refusal",
    "RoutingAdvice",
    "Scorecard",
    "ScorecardRow",
    "TaskCompletion",
    "ack_alert",
    "build_cube",
    "combinations",
    "compliance",
    "detect_and_alert",
    "flicker",
    "gate",
    "list_alerts",
    "routing_advice",
    "run_detection",
    "save_alerts",
    "scorecard",
    "switch_latency",
]
