"""The few SQL spellings that differ between the engines (DuckDB and Spark SQL).

The cube's statements (:mod:`.cube`) are written once; where DuckDB and Spark SQL spell a
function differently, they ask a :class:`Dialect`. Everything else they use is common to both
(``count(*) FILTER (WHERE …)``, ``GROUP BY ALL``, ``coalesce``/``nullif``, ``ln``/``floor``,
``IS NOT DISTINCT FROM``, positional ``?`` parameters), and the Spark test runs them all.

Callers validate JSON keys (:func:`.query.json_path`) before passing them here.
"""

from __future__ import annotations

from collections.abc import Sequence


class Dialect:
    """DuckDB's spellings (the default engine)."""

    name = "duckdb"

    def hash(self, exprs: Sequence[str]) -> str:
        """A 64-bit hash of a tuple of values (NULLs included) identifying a cube cell."""
        return f"hash({', '.join(exprs) or 'NULL'})"

    def json_string(self, column: str, key: str) -> str:
        """The top-level (possibly dotted) ``key`` of a JSON object column, as text."""
        return f"json_extract_string({column}, '$.\"{key}\"')"

    def json_key_count(self, column: str) -> str:
        """Number of top-level keys of a JSON object column."""
        return f"len(json_keys({column}))"

    def max_by(self, value: str, order: Sequence[str]) -> str:
        """``value`` of the row with the largest ``order`` tuple (ties broken by later items)."""
        key = order[0] if len(order) == 1 else f"({', '.join(order)})"
        return f"arg_max({value}, {key})"

    def cast_string(self, expr: str) -> str:
        return f"CAST({expr} AS VARCHAR)"

    def split_part(self, expr: str, sep: str, index: int) -> str:
        """The ``index``-th (1-based) part of ``expr`` split on ``sep`` ('' when absent)."""
        return f"split_part({expr}, '{sep}', {index})"

    def after_first(self, expr: str, sep: str) -> str:
        """What follows the first ``sep`` in ``expr`` ('' when there is none)."""
        pos = f"strpos({expr}, '{sep}')"
        return f"CASE WHEN {pos} > 0 THEN substr({expr}, {pos} + 1) ELSE '' END"

    def list_contains(self, list_expr: str, value: str) -> str:
        return f"list_contains({list_expr}, {value})"

    def any_value(self, expr: str) -> str:
        return f"any_value({expr})"

    def md5(self, expr: str) -> str:
        """The MD5 of a string, as 32 lower-case hex digits."""
        return f"md5({expr})"

    def hex_prefix_int(self, hex_expr: str, digits: int) -> str:
        """The first ``digits`` (at most 15) hex digits of ``hex_expr`` as a BIGINT."""
        return f"CAST('0x' || substr({hex_expr}, 1, {digits}) AS BIGINT)"

    def collect_list(self, expr: str, order: str | None = None) -> str:
        """The group's values of ``expr`` as a list (in ``order``'s order, when given)."""
        return f"list({expr} ORDER BY {order})" if order else f"list({expr})"

    def id_key(self, expr: str, bits: int) -> str:
        """A trace (``bits`` 128) or span (64) id as a compact join and grouping key.

        DuckDB reads the hex id as an unsigned integer: a hash join then holds 16 or 8 bytes
        per key instead of a string, which at millions of scores is the difference between
        joining in memory and spilling to disk. It is exact because every writer stores ids
        as lower-case hex of their full width (the OTLP decoders from bytes, the API's
        validators, the evaluator runner from stored spans), so two stored ids are equal as
        numbers exactly when they are equal as strings. A value that is not hex becomes NULL
        and matches nothing, as it matched no stored span before."""
        kind = {128: "UHUGEINT", 64: "UBIGINT"}[bits]
        return f"TRY_CAST('0x' || {expr} AS {kind})"


class SparkDialect(Dialect):
    """Spark SQL (3.4+; tested with 4.x)."""

    name = "spark"

    def hash(self, exprs: Sequence[str]) -> str:
        if not exprs:
            return "CAST(0 AS BIGINT)"
        # xxhash64 skips NULL arguments, so (NULL, 'a') and ('a', NULL) would collide: hash the
        # NULL pattern too. (The result is a signed BIGINT; the cube reads it as unsigned.)
        nulls = ", ".join(f"{e} IS NULL" for e in exprs)
        return f"xxhash64({', '.join(exprs)}, {nulls})"

    def json_string(self, column: str, key: str) -> str:
        return f"get_json_object({column}, '$[\\'{key}\\']')"

    def json_key_count(self, column: str) -> str:
        return f"size(json_object_keys({column}))"

    def max_by(self, value: str, order: Sequence[str]) -> str:
        key = order[0] if len(order) == 1 else f"struct({', '.join(order)})"
        return f"max_by({value}, {key})"

    def cast_string(self, expr: str) -> str:
        return f"CAST({expr} AS STRING)"

    def split_part(self, expr: str, sep: str, index: int) -> str:
        return f"coalesce(split_part({expr}, '{sep}', {index}), '')"

    def after_first(self, expr: str, sep: str) -> str:
        return (
            f"CASE WHEN instr({expr}, '{sep}') > 0 "
            f"THEN substr({expr}, instr({expr}, '{sep}') + 1) ELSE '' END"
        )

    def list_contains(self, list_expr: str, value: str) -> str:
        return f"array_contains({list_expr}, {value})"

    def any_value(self, expr: str) -> str:
        return f"first({expr})"

    def hex_prefix_int(self, hex_expr: str, digits: int) -> str:
        return f"CAST(conv(substr({hex_expr}, 1, {digits}), 16, 10) AS BIGINT)"

    def collect_list(self, expr: str, order: str | None = None) -> str:
        if order is None:
            return f"collect_list({expr})"
        return f"transform(array_sort(collect_list(struct({order}, {expr}))), x -> x.col2)"

    def id_key(self, expr: str, bits: int) -> str:
        # Spark shuffles both sides of a join by key and spills per partition: the string
        # itself is the key
        return expr


DUCKDB = Dialect()
SPARK = SparkDialect()
