"""Where the analytics cube's SQL runs: DuckDB or Spark SQL, over the same three tables.

The cube (:mod:`.cube`) is the only engine-specific part of analytics: a few SQL statements
producing per-cell sufficient statistics. They are written once; the spellings that differ come
from the engine's :class:`~.dialect.Dialect`. Everything downstream (metrics, tests, BH, alerts)
is shared numpy code on the resulting :class:`~.cube.Cube`, so both engines give the same
alerts on the same data.

An :class:`Engine` sees tables ``spans``, ``scores`` and ``feedback`` (DESIGN.md columns) and
``requests_base`` (one row per request: ``collector/spans/requests.py``), the relation analytics
counts:

* :class:`DuckDBEngine` wraps a DuckDB connection: the embedded store (``Store.cursor()``), or
  :meth:`DuckDBEngine.over_lake`, an in-memory DuckDB with views over a Parquet lake;
* :class:`SparkEngine` wraps a ``SparkSession``; :meth:`SparkEngine.over_lake` registers temp
  views over the lake.

Lake views dedupe on each table's key (a lake holds duplicates until ``prefixscope lake
compact`` runs), except in partitions that compaction left as one file
(:func:`~prefixscope.collector.storage.tables.published_files`); scores and feedback keep
each id's first copy across partitions (:mod:`.lake_reads`); a missing ``scores``/``feedback``
table reads as empty. Over a lake the requests are resolved when the engine opens, with the
same function the embedded store's resolver runs
(:func:`~prefixscope.collector.spans.requests.resolve`
over whole traces: DuckDB in chunks of traces, Spark per partition of traces), and the
variant attribution rule (``storage/views.py``) is applied to them in SQL: every engine counts
the same requests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import pyarrow as pa

from prefixscope.collector.spans.model import PREFIXES_SCHEMA, SPAN_ARROW_SCHEMA
from prefixscope.collector.spans.request_columns import (
    REQUEST_COLUMN_NAMES,
    REQUEST_SCHEMA,
    SKELETON_COLUMNS,
)
from prefixscope.collector.spans.requests import resolve as resolve_requests
from prefixscope.collector.storage import request_store, request_views
from prefixscope.collector.storage.dialect import DUCKDB, SPARK, Dialect
from prefixscope.collector.storage.fs import is_local, open_fs
from prefixscope.collector.storage.tables import LAKE_TABLES, published_files
from prefixscope.collector.storage.views import mapped_select, served_override_sql
from prefixscope.config import ServedModel

from .lake_reads import duckdb_select, spark_frame

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass(frozen=True, slots=True)
class Shared:
    """A relation several statements read: a CTE repeated in each (DuckDB) or a cached
    temp view (Spark). :meth:`sql` prefixes a statement with what it needs."""

    name: str
    cte: str = ""
    params: list[Any] = field(default_factory=list)

    def sql(self, statement: str) -> str:
        return f"WITH {self.cte}\n{statement}" if self.cte else statement


class Engine(Protocol):
    name: str
    dialect: Dialect
    #: a ``log_events`` table (GenAI log events) exists: the embedded store's; a lake has none
    has_log_events: bool

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """Run one query; the whole (small) result as an Arrow table."""

    def shared(self, name: str, sql: str, params: Sequence[Any]) -> Any:
        """Context manager yielding a :class:`Shared` relation ``name`` = ``sql``."""


#: a shared relation of this many rows or fewer is computed once into a temp table that its
#: statements read (the cube's four scans: 81 -> 49 ms at 9,000 requests), a bigger one once
#: per statement, so that its rows never sit in memory all at once
SHARE_IN_MEMORY_ROWS = 250_000


class DuckDBEngine:
    """DuckDB: the embedded store, a DuckDB file, or views over a Parquet lake.

    A :meth:`shared` relation is a temp table of the connection (each reader's cursor has its
    own) when it is small or :attr:`materialize` says so, else a CTE each statement repeats."""

    name = "duckdb"
    dialect: Dialect = DUCKDB

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        materialize: bool = False,
        has_log_events: bool = True,
    ) -> None:
        self.con = con
        self.has_log_events = has_log_events
        #: shared relations become temp tables (worth it when reading them is costly, as
        #: through the lake's deduplicating views; only on a connection of our own)
        self.materialize = materialize

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        return self.con.sql(sql, params=list(params) or None).to_arrow_table()

    @contextmanager
    def shared(self, name: str, sql: str, params: Sequence[Any]) -> Iterator[Shared]:
        if not (self.materialize or self._small(sql, params)):
            yield Shared(name, f"{name} AS ({sql})", list(params))
            return
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}", list(params)).fetchall()
        try:
            yield Shared(name)
        finally:
            self.con.execute(f"DROP TABLE IF EXISTS {name}").fetchall()

    def _small(self, sql: str, params: Sequence[Any]) -> bool:
        """Whether ``sql`` has :data:`SHARE_IN_MEMORY_ROWS` rows at most (the count stops
        past that)."""
        bound = f"SELECT 1 FROM ({sql}) LIMIT {SHARE_IN_MEMORY_ROWS + 1}"
        rows = self.con.execute(f"SELECT count(*) FROM ({bound})", list(params)).fetchall()
        return int(rows[0][0]) <= SHARE_IN_MEMORY_ROWS

    @classmethod
    def over_lake(
        cls,
        lake_url: str,
        *,
        storage_options: dict[str, Any] | None = None,
        served: Sequence[ServedModel] = (),
    ) -> DuckDBEngine:
        """In-memory DuckDB with deduplicating views over the lake (local or fsspec URL);
        ``served``: a mapping for this engine only (:func:`lake_mapping`)."""
        fs, root = open_fs(lake_url, storage_options)
        con = duckdb.connect()
        prefix = ""
        if not is_local(fs):
            con.register_filesystem(fs)
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            prefix = f"{protocol}://"
        for spec in SOURCE_TABLES:
            cols = ", ".join(spec.schema.names)
            clean, dirty = published_files(fs, root, spec.name)
            parts = [
                duckdb_select(con, spec, [prefix + f for f in files], dedupe=dedupe)
                for files, dedupe in ((clean, False), (dirty, True))
                if files
            ]
            if not parts:
                con.register(f"_empty_{spec.name}", spec.schema.empty_table())
                parts.append(f"SELECT {cols} FROM _empty_{spec.name}")
            body = " UNION ALL ".join(parts)
            con.execute(f"CREATE VIEW {RAW_VIEWS.get(spec.name, spec.name)} AS {body}").fetchall()
        for name, sql in lake_mapping(DUCKDB, served):
            con.execute(f"CREATE VIEW {name} AS {sql}").fetchall()
        mapping = _mapping_used(lambda q: con.sql(q).fetchall()[0][0], served)
        con.execute(f"CREATE VIEW spans AS {_mapped_spans(DUCKDB, mapping)}").fetchall()
        _resolve_duckdb(con, mapping)
        return cls(con, materialize=True, has_log_events=False)


#: the lake tables engines read: what collectors and evaluator jobs write (requests are
#: resolved from the spans, not read from the embedded server's cold ``requests`` files)
SOURCE_TABLES = tuple(t for name, t in LAKE_TABLES.items() if name != "requests")
#: lake tables read under another name: the views of those names are derived from them
#: (``spans`` with the attribution applied, ``prefixes`` as each variant's latest row), as in
#: the embedded store
RAW_VIEWS = {"spans": "span_rows", "prefixes": "prefix_history"}
#: the mapping relation of a run with its own ``--served-model`` declarations
RUN_MAPPING = "run_served_models"


def lake_mapping(dialect: Dialect, served: Sequence[ServedModel]) -> list[tuple[str, str]]:
    """Views over the raw lake tables, in order: ``prefixes`` (each variant's latest
    registration) and, with ``served``, :data:`RUN_MAPPING` (the lake's mapping with those
    names standing for their variants over all time, ``views.served_override_sql``)."""
    cols = ", ".join(n for n in PREFIXES_SCHEMA.names if n != "id")
    views = [
        (
            "prefixes",
            f"SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY prefix_id "
            "ORDER BY updated_at DESC, id DESC) AS _k FROM prefix_history) WHERE _k = 1",
        )
    ]
    if served:
        decl = [(sm.name, sm.prefix_id, sm.version) for sm in served]
        views.append((RUN_MAPPING, served_override_sql(decl, dialect)))
    return views


def _mapping_used(scalar: Any, served: Sequence[ServedModel]) -> str | None:
    """The mapping relation the views apply (None when it is empty: no join at all)."""
    name = RUN_MAPPING if served else "served_models"
    return name if int(scalar(f"SELECT count(*) FROM {name}")) else None


def _mapped_spans(dialect: Dialect, mapping: str | None) -> str:
    return mapped_select("span_rows", SPAN_ARROW_SCHEMA.names, dialect, mapping=mapping)


#: spans resolved per chunk of traces (bounds the memory of resolving a large lake)
RESOLVE_SPANS_PER_CHUNK = 2_000_000


def _resolve_duckdb(con: duckdb.DuckDBPyConnection, mapping: str | None) -> None:
    """``request_rows`` (a table) resolved from the lake's spans, chunked by trace hash, and the
    ``requests_base`` / ``requests`` views over it."""
    rows = con.execute("SELECT count(*) FROM span_rows").fetchall()
    chunks = max(1, -(-int(rows[0][0]) // RESOLVE_SPANS_PER_CHUNK))
    skeleton = ", ".join(SKELETON_COLUMNS)
    parts = []
    for k in range(chunks):
        spans = con.sql(
            f"SELECT {skeleton} FROM span_rows WHERE hash(trace_id) % {chunks} = {k}"
        ).to_arrow_table()
        parts.append(resolve_requests(spans))
    table = pa.concat_tables(parts) if parts else REQUEST_SCHEMA.empty_table()
    con.register("_resolved_requests", table)
    try:
        con.execute(
            f"CREATE TABLE {request_store.ROWS} AS SELECT * FROM _resolved_requests"
        ).fetchall()
    finally:
        con.unregister("_resolved_requests")
    base = mapped_select(request_store.ROWS, REQUEST_COLUMN_NAMES, mapping=mapping)
    con.execute(f"CREATE VIEW {request_store.BASE_VIEW} AS {base}").fetchall()
    con.execute(f"CREATE VIEW {request_store.VIEW} AS {request_views.ANNOTATED}").fetchall()


def as_engine(source: duckdb.DuckDBPyConnection | Engine) -> Engine:
    """An :class:`Engine` for a DuckDB connection (or the engine itself)."""
    if isinstance(source, duckdb.DuckDBPyConnection):
        return DuckDBEngine(source)
    return source


def spark_session(
    master: str = "local[2]",
    *,
    driver_memory: str = "2g",
    app_name: str = "prefixscope-analytics",
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """A SparkSession set up for analytics (UTC session time zone, no UI, few partitions).

    On a cluster pass its master URL (``spark://…``, ``yarn``, ``k8s://…``); settings in
    ``conf`` override the defaults. An already running session is reused as it is.
    """
    from pyspark.sql import SparkSession

    # the Python workers resolve requests with this package (mapInArrow): unless told
    # otherwise (PYSPARK_PYTHON) they run this interpreter, not the bare ``python3`` on PATH,
    # which may lack it. On a cluster, install prefixscope where the workers run and point
    # PYSPARK_PYTHON at that interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {
        "spark.driver.memory": driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.session.timeZone": "UTC",
        **(conf or {}),
    }
    builder = SparkSession.builder.master(master).appName(app_name)
    for k, v in settings.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql import types as T

    def one(t: pa.DataType) -> Any:
        if pa.types.is_string(t):
            return T.StringType()
        if pa.types.is_float64(t):
            return T.DoubleType()
        if pa.types.is_int64(t):
            return T.LongType()
        if pa.types.is_timestamp(t):
            return T.TimestampNTZType() if t.tz is None else T.TimestampType()
        if pa.types.is_boolean(t):
            return T.BooleanType()
        if pa.types.is_list(t):
            return T.ArrayType(one(t.value_type))
        raise TypeError(f"no Spark type for {t}")

    return T.StructType([T.StructField(f.name, one(f.type), True) for f in schema])


def _spark_param(value: Any) -> Any:
    # naive datetimes are UTC here; PySpark would read them in the local time zone
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class SparkEngine:
    """Spark SQL through a SparkSession (``local[N]`` or any cluster).

    The session time zone must be UTC (:func:`spark_session` sets it): span times are UTC.
    """

    name = "spark"
    dialect: Dialect = SPARK
    has_log_events = False

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        tz = spark.conf.get("spark.sql.session.timeZone")
        if tz not in ("UTC", "Etc/UTC", "GMT", "Z", "+00:00"):
            raise ValueError(f"set spark.sql.session.timeZone=UTC (it is {tz!r})")

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        args = [_spark_param(p) for p in params]
        return self.spark.sql(sql, args=args or None).toArrow()

    @contextmanager
    def shared(self, name: str, sql: str, params: Sequence[Any]) -> Iterator[Shared]:
        from pyspark import StorageLevel

        df = self.spark.sql(sql, args=[_spark_param(p) for p in params] or None)
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        df.createOrReplaceTempView(name)
        try:
            yield Shared(name)
        finally:
            self.spark.catalog.dropTempView(name)
            df.unpersist()

    @classmethod
    def over_lake(
        cls,
        spark: SparkSession,
        lake_url: str,
        *,
        storage_options: dict[str, Any] | None = None,
        served: Sequence[ServedModel] = (),
    ) -> SparkEngine:
        """Temp views ``spans``/``scores``/``feedback`` over the lake, deduplicated on their
        keys. ``s3://`` is read as ``s3a://`` (the cluster needs hadoop-aws and credentials).
        ``served``: a mapping for this engine only (:func:`lake_mapping`)."""
        fs, root = open_fs(lake_url, storage_options)
        scheme = "" if is_local(fs) else "s3a://"
        for spec in SOURCE_TABLES:
            clean, dirty = published_files(fs, root, spec.name)
            base = f"{scheme}{root}/{spec.name}"
            df = spark.createDataFrame([], _spark_schema(spec.schema))
            for files, dedupe in ((clean, False), (dirty, True)):
                if files:
                    listed = [scheme + f for f in files]
                    df = df.unionByName(spark_frame(spark, spec, base, listed, dedupe=dedupe))
            df.createOrReplaceTempView(RAW_VIEWS.get(spec.name, spec.name))
        for name, sql in lake_mapping(SPARK, served):
            spark.sql(sql).createOrReplaceTempView(name)
        mapping = _mapping_used(lambda q: spark.sql(q).collect()[0][0], served)
        spark.sql(_mapped_spans(SPARK, mapping)).createOrReplaceTempView("spans")
        _resolve_spark(spark, mapping)
        return cls(spark)


def _resolve_in_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: a partition holds whole traces (the spans were repartitioned
    by trace id), resolved together."""
    table = pa.Table.from_batches(list(batches))
    if table.num_rows:
        yield from resolve_requests(table).to_batches()


def _resolve_spark(spark: SparkSession, mapping: str | None) -> None:
    """``request_rows`` resolved from the lake's spans, partition by partition of traces
    (``mapInArrow``: the same function as every other engine), cached, and the
    ``requests_base`` view over it."""
    from pyspark.sql import functions as F

    spans = spark.table("span_rows").select(*SKELETON_COLUMNS)
    parts = max(1, spark.sparkContext.defaultParallelism)
    resolved = spans.repartition(parts, F.col("trace_id")).mapInArrow(
        _resolve_in_partition, _spark_schema(REQUEST_SCHEMA)
    )
    from pyspark import StorageLevel

    resolved.persist(StorageLevel.MEMORY_AND_DISK).createOrReplaceTempView(request_store.ROWS)
    base = mapped_select(request_store.ROWS, REQUEST_COLUMN_NAMES, SPARK, mapping=mapping)
    spark.sql(base).createOrReplaceTempView(request_store.BASE_VIEW)
