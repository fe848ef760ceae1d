"""PrefixScope analytics: evaluators, golden-dataset replay, scorecards, regression alerts.

Every analysis takes a DuckDB connection (``Store.cursor()``, a plain DuckDB file, or an
in-memory DuckDB with views named ``spans``/``scores``/``feedback`` over the Parquet lake).
Scorecards, detection and alerts also take an :class:`Engine` (:mod:`.engines`): DuckDB or
Spark over a Parquet lake, running the same cube SQL.
Heavy modules (embedding model, replay) are imported lazily by their functions.
"""

from __future__ import annotations

from .alerts import ack_alert, alert_objects, detect_and_alert, list_alerts, save_alerts
from .comparison import Comparison, DetectionResult
from .cube import Cube, build_cube
from .detection import run_detection
from .detection_config import DetectionConfig
from .engines import DuckDBEngine, Engine, SparkEngine, spark_session
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
    "DuckDBEngine",
    "Engine",
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
    "SparkEngine",
    "TaskCompletion",
    "ack_alert",
    "alert_objects",
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
    "spark_session",
    "switch_latency",
]
