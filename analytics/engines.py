"""Where the analytics cube's SQL runs: DuckDB or Spark SQL, over the same three tables.

The cube (:mod:`.cube`) is the only engine-specific part of analytics: a few SQL statements
producing per-cell sufficient statistics. They are written once; the spellings that differ come
from the engine's :class:`~.dialect.Dialect`. Everything downstream (metrics, tests, BH, alerts)
is shared numpy code on the resulting :class:`~.cube.Cube`, so both engines give the same
alerts on the same data.

An :class:`Engine` sees tables ``spans``, ``scores`` and ``feedback`` (DESIGN.md columns):

* :class:`DuckDBEngine` wraps a DuckDB connection: the embedded store (``Store.cursor()``), or
  :meth:`DuckDBEngine.over_lake`, an in-memory DuckDB with views over a Parquet lake;
* :class:`SparkEngine` wraps a ``SparkSession``; :meth:`SparkEngine.over_lake` registers temp
  views over the lake.

Lake views dedupe on each table's key (a lake holds duplicates until ``prefixscope lake
compact`` runs), except in partitions that compaction left as one file
(:func:`~prefixscope.collector.storage.tables.published_files`); a missing ``scores``/``feedback``
table reads as empty.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import pyarrow as pa

from prefixscope.collector.storage.fs import is_local, open_fs
from prefixscope.collector.storage.tables import LAKE_TABLES, LakeTable, published_files, sql_type

from .dialect import DUCKDB, SPARK, Dialect

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


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

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """Run one query; the whole (small) result as an Arrow table."""

    def shared(self, name: str, sql: str, params: Sequence[Any]) -> Any:
        """Context manager yielding a :class:`Shared` relation ``name`` = ``sql``."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DuckDBEngine:
    """DuckDB: the embedded store, a DuckDB file, or views over a Parquet lake."""

    name = "duckdb"
    dialect: Dialect = DUCKDB

    def __init__(self, con: duckdb.DuckDBPyConnection, *, materialize: bool = False) -> None:
        self.con = con
        #: shared relations become temp tables (worth it when reading them is costly, as
        #: through the lake's deduplicating views; only on a connection of our own)
        self.materialize = materialize

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        return self.con.sql(sql, params=list(params) or None).to_arrow_table()

    @contextmanager
    def shared(self, name: str, sql: str, params: Sequence[Any]) -> Iterator[Shared]:
        if not self.materialize:
            yield Shared(name, f"{name} AS ({sql})", list(params))
            return
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}", list(params)).fetchall()
        try:
            yield Shared(name)
        finally:
            self.con.execute(f"DROP TABLE IF EXISTS {name}").fetchall()

    @classmethod
    def over_lake(
        cls, lake_url: str, *, storage_options: dict[str, Any] | None = None
    ) -> DuckDBEngine:
        """In-memory DuckDB with deduplicating views over the lake (local or fsspec URL)."""
        fs, root = open_fs(lake_url, storage_options)
        con = duckdb.connect()
        prefix = ""
        if not is_local(fs):
            con.register_filesystem(fs)
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            prefix = f"{protocol}://"
        for spec in LAKE_TABLES.values():
            cols = ", ".join(spec.schema.names)
            clean, dirty = published_files(fs, root, spec.name)
            parts = []
            for files, dedupe in ((clean, False), (dirty, True)):
                if not files:
                    continue
                listed = "[" + ", ".join(_quote(prefix + f) for f in files) + "]"
                distinct = f"DISTINCT ON ({', '.join(spec.key)}) " if dedupe else ""
                source = f"read_parquet({listed}, hive_partitioning = true, union_by_name = true)"
                parts.append(f"SELECT {distinct}{_lake_columns(con, source, spec)} FROM {source}")
            if not parts:
                con.register(f"_empty_{spec.name}", spec.schema.empty_table())
                parts.append(f"SELECT {cols} FROM _empty_{spec.name}")
            body = " UNION ALL ".join(parts)
            con.execute(f"CREATE VIEW {spec.name} AS {body}").fetchall()
        return cls(con, materialize=True)


def _lake_columns(con: duckdb.DuckDBPyConnection, source: str, spec: LakeTable) -> str:
    """The table's columns; a column no file has (files older than the column) reads as NULL."""
    have = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    return ", ".join(
        f.name if f.name in have else f"NULL::{sql_type(f.type)} AS {f.name}" for f in spec.schema
    )


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
    ) -> SparkEngine:
        """Temp views ``spans``/``scores``/``feedback`` over the lake, deduplicated on their
        keys. ``s3://`` is read as ``s3a://`` (the cluster needs hadoop-aws and credentials)."""
        fs, root = open_fs(lake_url, storage_options)
        scheme = "" if is_local(fs) else "s3a://"
        for spec in LAKE_TABLES.values():
            clean, dirty = published_files(fs, root, spec.name)
            base = f"{scheme}{root}/{spec.name}"
            df = spark.createDataFrame([], _spark_schema(spec.schema))
            for files, dedupe in ((clean, False), (dirty, True)):
                if files:
                    part = (
                        spark.read.option("basePath", base)
                        .option("mergeSchema", "true")
                        .parquet(*(scheme + f for f in files))
                    )
                    part = _conform(part, spec)
                    df = df.unionByName(part.dropDuplicates(list(spec.key)) if dedupe else part)
            df.createOrReplaceTempView(spec.name)
        return cls(spark)


def _conform(df: DataFrame, spec: LakeTable) -> DataFrame:
    """The table's columns in order (drops the ``date`` partition column); a column the files
    lack (written before it was added) reads as NULL."""
    from pyspark.sql import functions as F

    have = set(df.columns)
    return df.select(
        *(
            F.col(f.name) if f.name in have else F.lit(None).cast(sql_type(f.type)).alias(f.name)
            for f in spec.schema
        )
    )
