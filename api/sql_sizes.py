"""Static size bounds of the SQL sandbox: what one row of a query can build.

DuckDB builds a vector of 2,048 values in one allocation before any interrupt is checked,
so neither the time limit nor the memory watchdog can stop one huge value. Two estimates,
from the parse tree (``json_serialize_sql``), refuse such queries before they run
(``value_too_large``):

* value-enlarging calls (``repeat``, ``lpad``, ``list_resize``, ``range`` as a value, format
  widths, ...), resolved through ``duckdb_functions()`` so aliases are caught, need constant
  sizes whose product over nested calls, times the references that could repeat the value,
  stays within :data:`MAX_AMPLIFIED_BYTES` per row;
* every other expression (concatenation, lists, structs, JSON, ``hex``, ``replace``, ...)
  is bounded from its inputs' bounds by :mod:`.sql_bounds`, with the names and constants
  below (which columns are small, which calls concatenate or truncate).
"""

from __future__ import annotations

import re
from typing import Any

from prefixscope.errors import QueryError

from . import sql_tree as parse_tree

#: What one query may add, summed over every value-enlarging call (bytes per row). DuckDB
#: builds a vector of 2,048 values in one allocation before any interrupt is checked, so this
#: bounds that allocation (2,048 x 64 KiB = 128 MiB); the watchdog bounds the rest.
MAX_AMPLIFIED_BYTES = 64 * 1024
#: Functions whose result can be much larger than their inputs, by canonical name (aliases are
#: resolved through ``duckdb_functions()``).
AMPLIFIERS = frozenset(
    {
        "repeat",
        "lpad",
        "rpad",
        "list_resize",
        "range",
        "generate_series",
        "bar",
        "printf",
        "format",
        "equi_width_bins",
    }
)
#: Aggregates that build one value from many rows: unbounded as an amplifier's input.
BUILDING_AGGREGATES = frozenset(
    {
        "string_agg",
        "list",
        "array_agg",
        "histogram",
        "group_concat",
        "listagg",
        "json_group_array",
        "json_group_object",
        "map_agg",
    }
)
_UNBOUNDED = float("inf")


class _Amplification:
    """Estimates, per row, how many bytes the value-enlarging calls of one query make."""

    def __init__(self, canonical: dict[str, str]) -> None:
        self.canonical = canonical
        self.total = 0.0

    def name(self, node: dict[str, Any]) -> str:
        raw = str(node.get("function_name", "")).lower()
        return self.canonical.get(raw, raw)

    def size(self, expr: dict[str, Any]) -> float:
        """Upper estimate of one value's bytes; records every amplifier's size in ``total``."""
        cls = expr.get("class")
        if cls == "CONSTANT":
            const = parse_tree.constant(expr)
            return float(len(const[1])) if const and const[0] == "STRING" else 16.0
        if cls == "SUBQUERY":
            return _UNBOUNDED  # may hold an aggregate of any size
        if cls == "LAMBDA":
            return self.size(expr["expr"]) if isinstance(expr.get("expr"), dict) else 16.0
        if cls != "FUNCTION":  # operators, casts, CASE, column refs, ...: their parts add up
            return sum((self.size(c) for c in parse_tree.walk_children(expr)), 16.0)
        name = self.name(expr)
        args = parse_tree.args(expr)
        if name in BUILDING_AGGREGATES:
            for a in args:
                self.size(a)
            return _UNBOUNDED
        if name in AMPLIFIERS:
            result = self._amplifier(name, args)
            self.total += result
            return result
        if any(a.get("class") == "LAMBDA" for a in args):  # list_transform(l, x -> ...)
            lists = [self.size(a) for a in args if a.get("class") != "LAMBDA"]
            bodies = [self.size(a) for a in args if a.get("class") == "LAMBDA"]
            return max(lists, default=16.0) / 8.0 * max(bodies, default=16.0)
        return sum((self.size(a) for a in args), 16.0)

    def _count(self, name: str, expr: dict[str, Any] | None) -> int:
        count = parse_tree.int_constant(expr)
        if count is None:
            raise QueryError(
                f"{name}() needs a constant size argument here (a computed size could be any size)",
                code="value_too_large",
            )
        return abs(count)

    def _amplifier(self, name: str, args: list[dict[str, Any]]) -> float:
        if name == "repeat":
            inner = self.size(args[0]) if args else 16.0
            count = self._count(name, args[1] if len(args) > 1 else None)
            return inner * count if count > 1 else inner
        if name in ("lpad", "rpad"):
            for a in args:
                self.size(a)
            return 4.0 * self._count(name, args[1] if len(args) > 1 else None)
        if name == "list_resize":
            fill = self.size(args[2]) if len(args) > 2 else 16.0
            if args:
                self.size(args[0])
            return max(16.0, fill) * self._count(name, args[1] if len(args) > 1 else None)
        if name in ("range", "generate_series"):
            nums = [parse_tree.int_constant(a) for a in args]
            ints = [n for n in nums if n is not None]
            if not ints or len(ints) != len(nums):
                self._count(name, None)  # raises: a computed size could be any size
            start, stop, step = (0, ints[0], 1) if len(ints) == 1 else (*ints[:2], 1)
            if len(ints) > 2:
                step = ints[2] or 1
            return 8.0 * (abs(stop - start) // abs(step) + 1)
        if name == "equi_width_bins":
            for a in args:
                self.size(a)
            return 8.0 * self._count(name, args[2] if len(args) > 2 else None)
        if name == "bar":
            width = self._count(name, args[3]) if len(args) > 3 else 80
            return 4.0 * width
        # printf / format: the widths and precisions of a constant format string
        const = parse_tree.constant(args[0]) if args else None
        if const is None or const[0] != "STRING":
            raise QueryError(f"{name}() needs a constant format string", code="value_too_large")
        widths = [int(w) for w in re.findall(r"\d+", const[1])] or [0]
        rest = sum((self.size(a) for a in args[1:]), 0.0)
        return float(len(const[1])) + rest + 4.0 * max(widths)


def check_amplification(nodes: list[dict[str, Any]], canonical: dict[str, str]) -> None:
    """Refuse a query whose value-enlarging calls could make one vector too large to hold."""
    amp = _Amplification(canonical)
    roots = [
        n
        for n in nodes
        if n.get("class") == "FUNCTION" and amp.name(n) in AMPLIFIERS | BUILDING_AGGREGATES
    ]
    if not any(amp.name(n) in AMPLIFIERS for n in roots):
        return
    # estimate from the outermost amplifying calls (nested ones are counted inside them)
    inner = {
        id(c) for n in roots for c in parse_tree.walk(parse_tree.args(n)) if isinstance(c, dict)
    }
    for node in roots:
        if id(node) not in inner:
            amp.size(node)
    refs = sum(1 for n in nodes if n.get("class") == "COLUMN_REF")
    total = amp.total * (1 + refs)  # a CTE's large value can be referenced many times
    if total > MAX_AMPLIFIED_BYTES:
        raise QueryError(
            "the query builds values of up to "
            + ("an unbounded size" if total == _UNBOUNDED else f"~{int(total):,} bytes")
            + f" per row (repeat/lpad/rpad/list_resize/range/format widths; at most "
            f"{MAX_AMPLIFIED_BYTES:,} bytes per row, counting every reference): such values "
            "are built 2,048 rows at a time in one allocation",
            code="value_too_large",
        )


#: What the concatenations of one query may build, summed over every one (intermediate
#: results of a chain included), bytes per row: 2,048 rows x 128 KiB = 256 MiB per vector,
#: the default --sql-memory-mb.
MAX_CONCAT_BYTES = 128 * 1024
#: Calls whose result holds all of their (non-format) arguments, by canonical name.
CONCATENATORS = frozenset(
    {
        "||",
        "concat",
        "concat_ws",
        "list_concat",
        "list_append",
        "list_prepend",
        "printf",
        "format",
    }
)
#: Aggregates that concatenate one argument over many rows: each vector adds 2,048 of it
#: (the memory watchdog sees the growth between vectors), so the argument must be bounded.
CONCAT_AGGREGATES = frozenset({"string_agg", "group_concat", "listagg"})
#: String functions whose result is at most a constant length (argument index of it).
TRUNCATORS = {"left": 1, "right": 1, "substring": 2, "substr": 2, "prefix": 1}
#: Columns that hold a few bytes: ids, numbers, times, enumerations.
SMALL_COLUMNS = frozenset(
    {
        "trace_id", "span_id", "parent_span_id", "id", "kind", "status_code", "start_time",
        "end_time", "time", "created_at", "ingested_at", "duration_ms", "latency_ms",
        "ttft_ms", "input_tokens", "output_tokens", "cached_tokens", "value", "error", "n",
        "ingest_batch", "severity", "status", "direction", "p_value", "q_value", "delta",
    }
)  # fmt: skip
#: Columns that hold one attribute value (at most ``--max-attribute-bytes`` each, as the
#: decoders truncate them) or a short API field. A span's ``name``, ``status_message`` and
#: scope are not attributes and are not truncated: they have no bound here.
ATTRIBUTE_COLUMNS = frozenset(
    {
        "service_name", "base_model", "request_model", "response_model", "prefix_id",
        "prefix_version", "prefix_type", "route", "prompt_version", "session_id",
        "fallback_reason", "label", "source", "metric", "baseline",
    }
)  # fmt: skip
_SMALL = 64.0
#: Types whose text is a few bytes: a cast to one is bounded whatever its input
#: (``'r' || i::BIGINT`` over a table function's column).
FIXED_WIDTH_TYPES = frozenset(
    {
        "TINYINT", "SMALLINT", "INTEGER", "INT", "INT4", "BIGINT", "INT8", "HUGEINT",
        "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "REAL", "DOUBLE",
        "DECIMAL", "NUMERIC", "BOOLEAN", "BOOL", "DATE", "TIME", "TIMESTAMP", "TIMESTAMPTZ",
        "TIMESTAMP WITH TIME ZONE", "INTERVAL", "UUID",
    }
)  # fmt: skip
