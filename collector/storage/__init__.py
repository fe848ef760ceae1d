"""Where spans, scores and feedback live: the DuckDB hot tier, the Parquet lake, and what moves
rows between them.

* ``store`` — the DuckDB file and its connections; ``schema`` — its migrations.
* ``tables`` — every lake table's columns, key and partition column, and a writer for any of
  them; ``fs`` — the one atomic publish (hidden name, fsync, rename) every writer uses.
* ``sinks`` — the writer's one sink interface: the DuckDB hot tier or the lake alone
  (``--store lake``); ``dedupe`` — the retry window in front of the DuckDB sink.
* ``lake`` — the embedded server's lake roll and tier moves; ``tiers`` — the one ``spans``
  view across both tiers; ``tier_compact`` — merging the cold tier's files.
* ``compact`` — ``prefixscope lake compact`` for a collector-written lake;
  ``retention`` — dropping whole partitions past ``--retention``.
"""
