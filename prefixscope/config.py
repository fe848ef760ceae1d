"""Settings for ``prefixscope serve`` and friends.

Sources, lowest to highest precedence: defaults, a TOML config file (``--config`` or
``PREFIXSCOPE_CONFIG``), environment variables ``PREFIXSCOPE_<FIELD>`` (upper case), then
command-line flags. :meth:`Settings.validate` runs at start-up: a bad setting fails there,
never later. Only the CLI entry point exits the process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from prefixscope import durations

ENV_PREFIX = "PREFIXSCOPE_"


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range."""


def duration(text: str, what: str = "duration") -> dt.timedelta:
    """``30s``, ``5m``, ``12h``, ``30d``, ``12w`` as a timedelta (ConfigError otherwise)."""
    try:
        return durations.parse(text)
    except durations.DurationError as exc:
        raise ConfigError(f"{what} {exc}") from exc


_SERVED_RE = re.compile(r"^([^=\s]+)=([^@=\s]+)(?:@([^@=\s]+))?$")


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One ``--served-model``: a served model name and the variant it stands for."""

    name: str
    prefix_id: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ServedModel:
        """``NAME=PREFIX_ID[@VERSION]``, e.g. ``cardiology=cardiology@3``."""
        m = _SERVED_RE.match(text.strip())
        if not m:
            raise ValueError(
                f"--served-model {text!r}: expected NAME=PREFIX_ID[@VERSION], "
                "e.g. cardiology=cardiology@3"
            )
        return cls(m.group(1), m.group(2), m.group(3))


@dataclass(slots=True)
class Settings:
    data_dir: Path = field(
        default=Path("prefixscope-data"),
        metadata={
            "help": "Data directory: ``prefixscope.duckdb`` and ``lake/`` live here (and "
            "``cache/``: analytics parts kept between runs, safe to delete)."
        },
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind HTTP and gRPC to."})
    http_port: int = field(
        default=4318, metadata={"help": "OTLP/HTTP, API, dashboard and metrics port."}
    )
    grpc_port: int = field(default=4317, metadata={"help": "OTLP/gRPC port (0 disables gRPC)."})
    tokens: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Bearer tokens for OTLP ingest; they also write to /api when no "
            "--write-token is set. Once any token is set, every route but /healthz needs one."
        },
    )
    read_tokens: list[str] = field(
        default_factory=list,
        metadata={"help": "Bearer tokens that may only read /api (and /metrics)."},
    )
    write_tokens: list[str] = field(
        default_factory=list,
        metadata={"help": "Bearer tokens that may read and write /api (default: --token)."},
    )
    metrics_public: bool = field(
        default=False,
        metadata={"help": "Serve /metrics without a token even when tokens are set."},
    )
    max_body_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata={"help": "Largest request body accepted on the wire, bytes (413 above)."},
    )
    max_decompressed_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata={
            "help": "Largest body after gzip decompression, bytes "
            "(413 above; never inflated whole)."
        },
    )
    max_attribute_bytes: int = field(
        default=32 * 1024,
        metadata={
            "help": "Largest single attribute value kept, in characters; "
            "longer values are truncated and counted."
        },
    )
    queue_max_spans: int = field(
        default=200_000,
        metadata={
            "help": "Spans waiting to be committed before ingest answers 429 / RESOURCE_EXHAUSTED."
        },
    )
    checkpoint_wal_mb: int = field(
        default=512,
        metadata={
            "help": "Write-ahead log size (MB) at which DuckDB checkpoints into the database "
            "file. Rows appended since the last checkpoint stay in memory until it runs, so "
            "this trades server RSS for fewer, larger checkpoints (128 cut the soak's rate by "
            "a quarter and tripled its p99); the price of a large WAL is a longer replay "
            "after a crash (see docs/benchmarks/soak.md)."
        },
    )
    store_memory_mb: int = field(
        default=1024,
        metadata={
            "help": "Memory budget of the embedded store, MB. DuckDB's memory limit is half "
            "of it (its cached table blocks, rows not yet checkpointed and query state; "
            "queries spill to disk or fail with a clear error beyond it); a quarter bounds the "
            "dedupe window (14 bytes a key); the rest is the writer's queue and the lake "
            "roll's buffers. The server's resident set stays below this + 400 MB "
            "(bench/soak.py)."
        },
    )
    commit_linger_ms: float = field(
        default=20.0,
        metadata={
            "help": "Longest the writer waits for requests still being decoded before it "
            "commits a small group (0: commit at once). Bigger groups cost less per span."
        },
    )
    batch_max_spans: int = field(
        default=50_000, metadata={"help": "Most spans written in one group commit."}
    )
    logs_max_inflight: int = field(
        default=2,
        metadata={
            "help": "OTLP log exports (/v1/logs, gRPC LogsService) decoded or committed at once, "
            "in threads of their own; more answer 429 / RESOURCE_EXHAUSTED with Retry-After "
            "before the body is read. Trace ingest has its own budget and never waits for logs."
        },
    )
    logs_batch_max_records: int = field(
        default=10_000,
        metadata={
            "help": "Most GenAI log records written in one commit: a big export goes to the "
            "writer in slices of this size, one at a time, and span groups are committed "
            "between them."
        },
    )
    retry_after_s: int = field(
        default=1, metadata={"help": "Seconds a client is told to wait in Retry-After when shed."}
    )
    store: str = field(
        default="duckdb",
        metadata={
            "help": "Storage mode: 'duckdb' (embedded store + API + dashboard) or 'lake' "
            "(stateless collector writing Parquet segments to --lake-path; ingest only)."
        },
    )
    lake_path: str = field(
        default="",
        metadata={
            "help": "Lake location for --store lake: a directory or s3://bucket/prefix "
            "(default: <data-dir>/lake). S3-compatible endpoint: PREFIXSCOPE_S3_ENDPOINT_URL."
        },
    )
    decoder: str = field(
        default="auto",
        metadata={
            "help": "OTLP protobuf decoder: native (compiled, about 10x faster), python (the "
            "reference), or auto (native when it was built at install time, else python). "
            "/healthz and prefixscope_decoder_info say which one runs."
        },
    )
    workers: int = field(
        default=1,
        metadata={
            "help": "OTLP decode worker processes (0: decode in threads of the server "
            "process). One per spare core; the server process keeps one core for HTTP, the "
            "API and the DuckDB writer."
        },
    )
    lake_roll_interval_s: float = field(
        default=30.0,
        metadata={"help": "Seconds between Parquet lake rolls (0 disables the lake roll)."},
    )
    lake_roll_rows: int = field(
        default=1_000_000,
        metadata={
            "help": "Also roll as soon as this many spans were committed since the last roll, "
            "before the interval ends (0: by the interval only). Under heavy ingest every roll "
            "is then about this size instead of one burst per interval."
        },
    )
    lake_row_group_rows: int = field(
        default=1_000_000, metadata={"help": "Rows per Parquet row group in the lake."}
    )
    sql_timeout_s: float = field(
        default=10.0, metadata={"help": "Seconds a sandboxed SQL query may run."}
    )
    sql_memory_mb: int = field(
        default=256,
        metadata={
            "help": "Memory that sandboxed SQL queries may add to the server's resident set, "
            "MB; a query that grows it further is interrupted (400 memory_limit)."
        },
    )
    sql_max_result_mb: int = field(
        default=32,
        metadata={"help": "Most bytes of rows one SQL answer carries (``truncated`` beyond)."},
    )
    sql_max_rows: int = field(
        default=10_000,
        metadata={"help": "Most rows a sandboxed SQL query returns (``truncated: true`` beyond)."},
    )
    sql_export_max_rows: int = field(
        default=1_000_000,
        metadata={
            "help": "Most rows of a SQL answer in Arrow, Parquet, CSV or NDJSON (header "
            "X-PrefixScope-Truncated: true beyond); the JSON answer keeps --sql-max-rows."
        },
    )
    sql_export_max_mb: int = field(
        default=0,
        metadata={
            "help": "Most Arrow bytes of a SQL answer in Arrow, Parquet, CSV or NDJSON, MB "
            "(truncated beyond; 0: half of --sql-memory-mb). The server holds the answer while "
            "it is sent, so this must stay below --sql-memory-mb."
        },
    )
    webhook_urls: list[str] = field(
        default_factory=list, metadata={"help": "URLs that receive alert webhooks."}
    )
    detect_interval_s: float = field(
        default=0.0,
        metadata={
            "help": "Seconds between automatic regression-detection runs (0: only on demand)."
        },
    )
    detect_sequential: str = field(
        default="windows",
        metadata={
            "help": "How periodic detection keeps false alerts rare across its repeated runs: "
            "'windows' (each run tests the latest completed --detect-window of traffic with "
            "fixed-horizon tests, so re-runs repeat the same answer) or 'msprt' (always-valid "
            "tests over all the data, a growing window, with running-minimum p-values: alerts "
            "at any time, needs ~2x the data)."
        },
    )
    detect_window: str = field(
        default="1d",
        metadata={
            "help": "Periodic detection with 'windows': the evaluation window length "
            "(aligned to UTC), e.g. 1h, 1d, 7d. Not used by 'msprt', which needs a growing "
            "window."
        },
    )
    variant_metrics_max_series: int = field(
        default=500,
        metadata={
            "help": "Most (prefix_id, prefix_version, route) label sets in the per-variant "
            '/metrics series; later ones are counted under prefix_id="other".'
        },
    )
    retention: str = field(
        default="",
        metadata={
            "help": "Drop data older than this everywhere, e.g. 30d (empty: keep everything): "
            "whole lake date partitions of spans, scores and feedback, and the store's rows; "
            "applied after each lake roll."
        },
    )
    hot_retention: str = field(
        default="2d",
        metadata={
            "help": "How long spans stay in the DuckDB hot tier, e.g. 2d (empty: forever). "
            "Older spans that the lake roll has copied are then read from the Parquet lake "
            "(the cold tier); the spans table covers both. Needs the lake roll."
        },
    )
    dedupe_window: str = field(
        default="15m",
        metadata={
            "help": "A retried export within this time of the first delivery is never stored "
            "twice: spans stay in the hot tier at least this long after they arrive "
            "(OTel SDKs retry for about a minute, a Collector's queue for 5 minutes). Its keys "
            "take at most a quarter of --store-memory-mb: at a higher rate it covers less, "
            "and prefixscope_dedupe_window_seconds says how much."
        },
    )
    request_settle: str = field(
        default="10s",
        metadata={
            "help": "A trace's requests are resolved once it has received no span for this "
            "long (its spans come from several exporters, children first). Analytics and SQL "
            "resolve everything committed before they read; this only paces the background "
            "work and the per-variant /metrics series."
        },
    )
    request_lookback: str = field(
        default="2m",
        metadata={
            "help": "A span joins the spans of its trace that arrived up to this long before "
            "it; a span later than that is resolved with the part of its trace in reach."
        },
    )
    public_url: str = field(
        default="",
        metadata={
            "help": "The server's URL as users reach it (e.g. https://prefixscope.example), so "
            "alert webhooks can link to the alert page (empty: a relative link)."
        },
    )
    served_models: list[str] = field(
        default_factory=list,
        metadata={
            "help": "NAME=PREFIX_ID[@VERSION]: spans without prefix.id whose request (else "
            "response) model is NAME are read as that variant, earlier spans included (as "
            "the registry's served_model_names; base model and type come from the "
            "registration)."
        },
    )
    evaluate_every: str = field(
        default="",
        metadata={
            "help": "Run online evaluation of stored traffic this often, e.g. 5m (empty: "
            "never). Each run scores the spans that arrived since the last one."
        },
    )
    evaluators: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Evaluators of the periodic online evaluation, e.g. "
            "JSONValidation,Refusal (comma-separated or repeated)."
        },
    )
    evaluate_sample: float = field(
        default=1.0,
        metadata={
            "help": "Fraction of spans the periodic online evaluation scores (0..1; a span is "
            "in or out by a hash of its id, so re-runs score the same spans)."
        },
    )
    log_level: str = field(default="info", metadata={"help": "Log level."})

    def validate(self) -> Settings:
        for name in ("http_port", "grpc_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be 0..65535, got {port}")
        positive = (
            "max_body_bytes",
            "max_decompressed_bytes",
            "max_attribute_bytes",
            "queue_max_spans",
            "batch_max_spans",
            "checkpoint_wal_mb",
            "lake_row_group_rows",
            "sql_max_rows",
            "store_memory_mb",
            "sql_memory_mb",
            "sql_max_result_mb",
            "logs_max_inflight",
            "logs_batch_max_records",
            "sql_export_max_rows",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.variant_metrics_max_series < 0:
            raise ConfigError("variant_metrics_max_series must be >= 0")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.decoder not in ("auto", "native", "python"):
            raise ConfigError(f"decoder must be auto, native or python, got {self.decoder!r}")
        if self.sql_timeout_s <= 0:
            raise ConfigError("sql_timeout_s must be > 0")
        if self.sql_export_max_mb < 0:
            raise ConfigError(f"sql_export_max_mb must be >= 0, got {self.sql_export_max_mb}")
        if self.sql_export_max_mb >= self.sql_memory_mb:
            raise ConfigError(
                f"sql_export_max_mb ({self.sql_export_max_mb}) must be below sql_memory_mb "
                f"({self.sql_memory_mb}): an export is held in memory while it is sent, and a "
                "query that grows the server by sql_memory_mb is interrupted"
            )
        if self.lake_roll_interval_s < 0 or self.detect_interval_s < 0:
            raise ConfigError("intervals must be >= 0")
        if self.lake_roll_rows < 0:
            raise ConfigError(f"lake_roll_rows must be >= 0, got {self.lake_roll_rows}")
        if self.detect_sequential not in ("windows", "msprt"):
            raise ConfigError(
                f"detect_sequential must be 'windows' or 'msprt', got {self.detect_sequential!r}"
            )
        if not re.fullmatch(r"\d+(\.\d+)?[smhdw]", self.detect_window.strip()):
            raise ConfigError(
                f"detect_window must be like 1h, 1d or 7d, got {self.detect_window!r}"
            )
        if self.max_decompressed_bytes < self.max_body_bytes:
            raise ConfigError("max_decompressed_bytes must be >= max_body_bytes")
        if self.retention:
            duration(self.retention, "retention")
        if self.hot_retention:
            duration(self.hot_retention, "hot_retention")
        duration(self.dedupe_window, "dedupe_window")
        duration(self.request_settle, "request_settle")
        if duration(self.request_lookback, "request_lookback") <= dt.timedelta(0):
            raise ConfigError("request_lookback must be > 0")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"public_url must be http(s): {self.public_url!r}")
        for url in self.webhook_urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"webhook URL must be http(s): {url!r}")
        if self.store not in ("duckdb", "lake"):
            raise ConfigError(f"store must be 'duckdb' or 'lake', got {self.store!r}")
        for text in self.served_models:
            try:
                ServedModel.parse(text)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self.evaluators = [e.strip() for v in self.evaluators for e in v.split(",") if e.strip()]
        if self.evaluate_every:
            duration(self.evaluate_every, "evaluate_every")
            if not self.evaluators:
                raise ConfigError("evaluate_every needs --evaluators, e.g. JSONValidation,Refusal")
        if not 0 < self.evaluate_sample <= 1:
            raise ConfigError(f"evaluate_sample must be in (0, 1], got {self.evaluate_sample}")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"log_level must be debug/info/warning/error, got {self.log_level}")
        self._validate_tokens()
        return self

    def _validate_tokens(self) -> None:
        """Refuse token combinations a user could misread (see :mod:`prefixscope.auth`)."""
        groups = {"token": self.tokens, "read_token": self.read_tokens}
        groups["write_token"] = self.write_tokens
        for name, values in groups.items():
            if any(not v.strip() for v in values):
                raise ConfigError(f"{name}: an empty token is not allowed")
        if (self.read_tokens or self.write_tokens) and not self.tokens:
            raise ConfigError(
                "read/write tokens are set but no ingest token (--token): ingest would be "
                "closed to everyone. Set --token too (it also writes to /api unless "
                "--write-token is given)."
            )
        if set(self.read_tokens) & set(self.write_tokens or self.tokens):
            raise ConfigError(
                "a token is both a read-only token and a write token; give each scope its own"
            )

    @property
    def sql_export_bytes(self) -> int:
        """The export byte cap in force (``sql_export_max_mb``, else half the SQL memory)."""
        return (self.sql_export_max_mb or self.sql_memory_mb // 2) * 2**20

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def help_for(cls, name: str) -> str:
        return str(next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"])

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        env: dict[str, str] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Settings:
        """Defaults < config file < environment < overrides (CLI flags), then validate."""
        env = dict(os.environ) if env is None else env
        values: dict[str, Any] = {}
        path = config_file or env.get(ENV_PREFIX + "CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    data = tomllib.load(fh)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from exc
            data = data.get("prefixscope", data)
            for key, value in data.items():
                key = key.replace("-", "_")
                if key not in cls.field_names():
                    raise ConfigError(f"unknown setting {key!r} in {path}")
                values[key] = value
        for name in cls.field_names():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
        hints = get_type_hints(cls)
        kwargs = {name: _coerce(name, hints[name], value) for name, value in values.items()}
        return cls(**kwargs).validate()


def _coerce(name: str, hint: Any, value: Any) -> Any:
    try:
        if hint is Path:
            return Path(value)
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
        if hint is bool:
            if isinstance(value, str):
                return value.strip().lower() in {"1", "true", "yes", "on"}
            return bool(value)
        if hint == list[str]:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot read {value!r} as {hint}") from exc
