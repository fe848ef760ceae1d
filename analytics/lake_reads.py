"""One lake table as a deduplicated relation, on DuckDB and on Spark.

The engines (:mod:`.engines`) read each lake table from its published files
(:func:`~prefixscope.collector.storage.tables.published_files`): *clean* files as they are,
*dirty* ones deduplicated on the table's key. Where a key's copies share a date partition
(spans) any copy will do (they are the same record): ``DISTINCT ON`` / ``dropDuplicates``.
Where they may not (scores and feedback: ``LakeTable.stable_partition``), every file is dirty
and each key keeps its first copy (``tables.FIRST_COPY``: by file name, path, row), the copy
``prefixscope lake compact`` keeps, on both engines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb

from prefixscope.collector.storage.tables import LakeTable, sql_type

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_select(
    con: duckdb.DuckDBPyConnection, spec: LakeTable, files: list[str], *, dedupe: bool
) -> str:
    """A DuckDB ``SELECT`` of ``spec``'s columns from ``files`` (full URLs), deduplicated on
    the key when ``dedupe``."""
    listed = "[" + ", ".join(_quote(f) for f in files) + "]"
    first_copy = dedupe and not spec.stable_partition
    extra = ", filename = true, file_row_number = true" if first_copy else ""
    source = f"read_parquet({listed}, hive_partitioning = true, union_by_name = true{extra})"
    cols = _duckdb_columns(con, source, spec)
    if not dedupe:
        return f"SELECT {cols} FROM {source}"
    key = ", ".join(spec.key)
    if not first_copy:
        return f"SELECT DISTINCT ON ({key}) {cols} FROM {source}"
    return (
        f"SELECT {cols} FROM {source} QUALIFY row_number() OVER (PARTITION BY {key} "
        "ORDER BY parse_filename(filename), filename, file_row_number) = 1"
    )


def _duckdb_columns(con: duckdb.DuckDBPyConnection, source: str, spec: LakeTable) -> str:
    """The table's columns; a column no file has (files older than the column) reads as NULL."""
    have = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    return ", ".join(
        f.name if f.name in have else f"NULL::{sql_type(f.type)} AS {f.name}" for f in spec.schema
    )


def spark_frame(
    spark: SparkSession, spec: LakeTable, base: str, files: list[str], *, dedupe: bool
) -> DataFrame:
    """A Spark DataFrame of ``spec``'s columns from ``files`` (``base``: the table's folder,
    for the ``date`` partition), deduplicated on the key when ``dedupe``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = spark.read.option("basePath", base).option("mergeSchema", "true").parquet(*files)
    if dedupe and spec.stable_partition:
        return conform(df, spec).dropDuplicates(list(spec.key))
    if dedupe:
        order = [F.col(f"_metadata.{c}") for c in ("file_name", "file_path", "row_index")]
        first = F.row_number().over(Window.partitionBy(*spec.key).orderBy(*order))
        df = df.withColumn("_copy", first).filter(F.col("_copy") == 1)
    return conform(df, spec)


def conform(df: DataFrame, spec: LakeTable) -> DataFrame:
    """The table's columns in order (drops the ``date`` partition column); a column the files
    lack (written before it was added) reads as NULL."""
    from pyspark.sql import functions as F

    have = set(df.columns)
    cols: list[Any] = [
        F.col(f.name) if f.name in have else F.lit(None).cast(sql_type(f.type)).alias(f.name)
        for f in spec.schema
    ]
    return df.select(*cols)
