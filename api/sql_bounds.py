"""How large a value each expression of a query can build, per row (``value_too_large``).

DuckDB builds a vector of 2,048 values in one allocation before any interrupt is checked,
so a value much larger than what the row read cannot be stopped once it is being built.
Every expression is bounded from its inputs' bounds, whatever the function; the rule for a
function nobody listed is the default, not a pass:

* a bound is ``fixed`` bytes plus ``copies`` of a value of no known size (a JSON document,
  a span's ``name``, a file's ``content``, a subquery, an alias, an aggregate's result);
* a constant is its length, a column of ids, numbers or times 64 bytes, a column of one
  attribute value ``--max-attribute-bytes``; a call that returns a number, time or boolean
  (``duckdb_functions()``), a cast to one, a comparison: 64 bytes;
* any other call, operator or cast is bounded by the sum of its arguments' bounds (constant
  arguments count only for calls that build from them: lists, structs, maps, JSON,
  concatenation), times the call's expansion factor (:data:`EXPANSION`: ``hex`` 2x,
  ``to_base64`` 4/3x, JSON 6x for escapes, ``string_split`` 17x for the 16-byte entry of each
  piece, ...); ``replace`` and the separators of ``array_to_string``/``list_aggregate`` by
  their constants; a choice (``CASE``, ``coalesce``, ``greatest``) is its largest branch and
  a part (``x[1]``, ``x.k``) its whole; a lambda multiplies its list by its body;
* a value may hold at most one copy of a value of no known size (``hex(content)`` or
  ``[a, a]`` could not), and a concatenation (``||``, ``concat``, ``string_agg``, ...) none;
  an aggregate that builds (``string_agg``, ``list``, ...) is refused as a window function
  (each row would hold its whole window);
* every call that combines sized arguments or expands one counts, and so does every call
  that reads such a built value (``array_to_string([a, b])`` holds the list and the string):
  the intermediate results of a chain included, their sum must stay within
  :data:`MAX_CONCAT_BYTES` per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefixscope.errors import QueryError

from . import sql_tree as parse_tree
from .sql_sizes import (
    ATTRIBUTE_COLUMNS,
    BUILDING_AGGREGATES,
    CONCAT_AGGREGATES,
    CONCATENATORS,
    FIXED_WIDTH_TYPES,
    MAX_CONCAT_BYTES,
    SMALL_COLUMNS,
    TRUNCATORS,
)

_SMALL = 64.0
_INF = float("inf")
#: What a call's result can be, relative to the sum of its arguments (bytes out per byte in).
EXPANSION = {
    "hex": 2.0, "to_hex": 2.0, "bin": 8.0, "to_binary": 8.0, "to_base64": 4 / 3,
    "url_encode": 3.0, "regexp_escape": 2.0, "translate": 4.0, "nfc_normalize": 3.0,
    "to_json": 6.0, "array_to_json": 6.0, "row_to_json": 6.0, "json_quote": 6.0,
    "json_array": 6.0, "json_object": 6.0, "json_structure": 6.0, "json_normalize": 6.0,
    # a list of pieces: each piece is a 16-byte entry besides its bytes
    "string_split": 17.0, "string_split_regex": 17.0, "regexp_extract_all": 17.0,
    "parse_path": 17.0, "json_keys": 17.0,
    # indentation or a statement's tree: many times the input
    "json_pretty": _INF, "json_serialize_sql": _INF, "json_serialize_plan": _INF,
    "json_deserialize_sql": _INF,
}  # fmt: skip
#: Calls whose result is one of their arguments: the largest one bounds it.
CHOICES = frozenset({"greatest", "least", "if", "ifnull", "nullif", "coalesce", "switch"})
#: Calls whose result is a fixed-size digest or name, whatever the input.
DIGESTS = frozenset({"md5", "sha1", "sha256", "hash", "typeof", "pg_typeof", "dayname"})
#: Calls whose constant arguments are part of what they build (not a path or a flag).
BUILDERS = CONCATENATORS | frozenset(
    {"list_value", "array_value", "struct_pack", "row", "map", "struct_insert", "json_array",
     "json_object", "list_zip", "map_from_entries", "union_value"}
)  # fmt: skip
#: Builders whose result is a list, struct or map (its text has quotes and escapes).
COMPOSITES = BUILDERS - CONCATENATORS - {"json_array", "json_object"} | {
    "list_concat",
    "list_append",
    "list_prepend",
}
#: Calls that join a list's items with a separator: (index of the separator argument).
SEPARATED = {"array_to_string": 1, "list_string_agg": 1, "list_aggregate": 2}
#: Operators whose result is a part of their first operand.
PART_OPERATORS = frozenset({"ARRAY_EXTRACT", "ARRAY_SLICE", "STRUCT_EXTRACT", "OPERATOR_NOT"})
#: Expression classes whose result is a boolean.
PREDICATES = frozenset({"COMPARISON", "CONJUNCTION", "BETWEEN"})


@dataclass(frozen=True)
class Bound:
    """At most ``fixed`` bytes plus ``copies`` values of no known size; ``built`` when a call
    of the query made it (then every call reading it makes another such value, counted)."""

    fixed: float = 0.0
    copies: float = 0.0
    built: bool = False

    def __add__(self, other: Bound) -> Bound:
        return Bound(
            self.fixed + other.fixed, self.copies + other.copies, self.built or other.built
        )

    def times(self, factor: float) -> Bound:
        """The bound scaled (an empty part stays empty, an infinite factor included)."""
        return Bound(
            self.fixed * factor if self.fixed else 0.0,
            self.copies * factor if self.copies else 0.0,
            self.built,
        )

    def join(self, other: Bound) -> Bound:
        return Bound(
            max(self.fixed, other.fixed), max(self.copies, other.copies), self.built or other.built
        )


_SMALL_BOUND = Bound(_SMALL)


class _Bounds:
    """Bounds every expression of one query; refuses the first that builds too much."""

    def __init__(
        self,
        canonical: dict[str, str],
        attribute_bytes: int,
        names: _Names,
        fixed_results: frozenset[str],
    ) -> None:
        self.canonical = canonical
        self.attribute_bytes = float(attribute_bytes)
        #: names the query gives to values: a reference to one is that value, not the
        #: stored column of the name
        self.names = names
        #: a lambda's parameters while its body is bounded: an item of its list
        self.params: dict[str, Bound] = {}
        self._resolving: set[str] = set()
        self.fixed_results = fixed_results
        self.total = 0.0
        self.unbounded: list[str] = []  # what holds no known size, for the message
        self._memo: dict[int, Bound] = {}

    def name(self, node: dict[str, Any]) -> str:
        raw = str(node.get("function_name", "")).lower()
        return self.canonical.get(raw, raw)

    def label(self, node: dict[str, Any]) -> str:
        """How a message names the call: ``hex()``, or an operator as written (``||``)."""
        name = self.name(node)
        return name if node.get("is_operator") else f"{name}()"

    def size(self, expr: dict[str, Any]) -> Bound:
        key = id(expr)
        if key not in self._memo:
            self._memo[key] = self._size(expr)
        return self._memo[key]

    def _size(self, expr: dict[str, Any]) -> Bound:
        cls = expr.get("class")
        if cls == "CONSTANT":
            const = parse_tree.constant(expr)
            return Bound(float(len(const[1].encode())) if const and const[0] == "STRING" else 16)
        if cls == "COLUMN_REF":
            return self._column(expr)
        if cls in ("SUBQUERY", "STAR"):
            self.unbounded.append("a subquery" if cls == "SUBQUERY" else "*")
            return Bound(copies=1.0)
        if cls == "LAMBDA":  # its parameters are names, not values
            body = expr.get("expr")
            return self.size(body) if isinstance(body, dict) else _SMALL_BOUND
        if cls in ("FUNCTION", "WINDOW"):
            return self._call(expr)
        children = parse_tree.walk_children(expr)
        parts = [self.size(c) for c in children]
        if cls == "CAST":
            if parse_tree.cast_type(expr) in FIXED_WIDTH_TYPES:
                return _SMALL_BOUND  # a number, time or id reads as a few bytes
            child = children[0] if children else {}
            # a built list, struct or map reads with quotes and escapes: up to twice its bytes
            built = child.get("class") == "FUNCTION" and self.name(child) in COMPOSITES
            factor = 2.0 if built else 1.0
            return self._result("a cast", sum(parts, Bound()), factor, expand=factor > 1)
        if cls in PREDICATES or expr.get("type") in ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL"):
            return _SMALL_BOUND
        if str(expr.get("type", "")).startswith("COMPARE_"):  # IN, NOT IN
            return _SMALL_BOUND
        if cls == "CASE":
            branches = [c["then_expr"] for c in expr.get("case_checks", []) if "then_expr" in c]
            branches += [expr["else_expr"]] if isinstance(expr.get("else_expr"), dict) else []
            return _largest(self.size(b) for b in branches)
        if expr.get("type") == "OPERATOR_COALESCE":
            return _largest(parts)
        if expr.get("type") in PART_OPERATORS:
            return parts[0] if parts else _SMALL_BOUND
        return sum(parts, Bound())  # anything else: at most its parts together

    def _call(self, expr: dict[str, Any]) -> Bound:
        name = self.name(expr)
        args = (
            parse_tree.args(expr)
            if expr.get("class") == "FUNCTION"
            else parse_tree.walk_children(expr)
        )
        items = _largest(self.size(a) for a in args if a.get("class") != "LAMBDA")
        for a in args:  # x -> ...: x is an item of the list (or the accumulator, its whole)
            if a.get("class") == "LAMBDA":
                self.params.update((p, items) for p in _param_names(a))
        sizes = [self.size(a) for a in args]
        if name in CONCAT_AGGREGATES or name in BUILDING_AGGREGATES:
            if expr.get("class") == "WINDOW":
                raise QueryError(
                    f"{name}() OVER (...) builds, for every row, a value of up to its whole "
                    "window (with the default frame, every earlier row's), 2,048 rows in one "
                    "allocation: aggregate with GROUP BY instead",
                    code="value_too_large",
                )
            if name in CONCAT_AGGREGATES and sizes and sizes[0].copies:
                self._refuse_unbounded(name)
            self.unbounded.append(f"{name}()")
            return Bound(copies=1.0)  # grows between vectors, where the watchdog sees it
        if name in self.fixed_results or name in DIGESTS:
            return _SMALL_BOUND
        if name in TRUNCATORS:
            index = TRUNCATORS[name]
            count = parse_tree.int_constant(args[index]) if len(args) > index else None
            return Bound(4.0 * abs(count)) if count is not None else sizes[0] if sizes else Bound()
        if name in CHOICES:
            return _largest(sizes)
        lambdas = [s for a, s in zip(args, sizes, strict=True) if a.get("class") == "LAMBDA"]
        if lambdas:  # list_transform(l, x -> body): each item becomes a body
            lists = sum((s for a, s in zip(args, sizes, strict=True) if a.get("class") != "LAMBDA"),
                        Bound())  # fmt: skip
            body = lambdas[0]
            factor = max(1.0, body.copies + body.fixed / 16.0)
            return self._result(f"{name}()", lists, factor, expand=factor > 1)
        if name == "replace" and len(args) == 3:
            return self._replace(args, sizes)
        if name == "regexp_replace" and len(args) >= 3:
            return self._regexp_replace(args, sizes)
        if name in SEPARATED and len(args) > SEPARATED[name]:
            sep = sizes[SEPARATED[name]]
            if sep.copies:
                return self._result(f"{name}()", sizes[0], _INF)
            factor = max(1.0, sep.fixed / 16.0)  # an item is a 16-byte entry at least
            return self._result(f"{name}()", sizes[0], factor, expand=factor > 1)
        if name in BUILDERS:
            content = [s + Bound(16.0) for s in sizes]  # each item is an entry of its own
            combined = sum(content, Bound())
        else:  # the default: what the call reads, not its paths, flags or counts
            content = [s for a, s in zip(args, sizes, strict=True) if a.get("class") != "CONSTANT"]
            combined = sum(content, Bound())
        factor = EXPANSION.get(name, 1.0)
        sized = sum(1 for s in content if s.fixed or s.copies)
        return self._result(self.label(expr), combined, factor, expand=factor > 1 or sized > 1,
                            concat=name in CONCATENATORS)  # fmt: skip

    def _replace(self, args: list[dict[str, Any]], sizes: list[Bound]) -> Bound:
        pattern, repl = parse_tree.constant(args[1]), sizes[2]
        if repl.copies:
            return self._result("replace()", sizes[0], _INF)
        # each match of at least len(pattern) bytes becomes the replacement
        width = max(1, len(pattern[1].encode())) if pattern else 1
        factor = max(1.0, repl.fixed / width)
        return self._result("replace()", sizes[0], factor, expand=factor > 1)

    def _regexp_replace(self, args: list[dict[str, Any]], sizes: list[Bound]) -> Bound:
        repl = sizes[2]
        if repl.copies:
            return self._result("regexp_replace()", sizes[0], _INF)
        options = parse_tree.constant(args[3]) if len(args) > 3 else None
        every = options is not None and "g" in options[1]
        if not every:  # one match: the replacement once, each back-reference a copy at most
            refs = 1.0 + _constant_text(args[2]).count("\\")
            return self._result("regexp_replace()", sizes[0].times(refs) + repl, 1.0,
                                expand=refs > 1)  # fmt: skip
        # every match, empty ones included (one per byte): the replacement per byte
        factor = 1.0 + repl.fixed
        return self._result("regexp_replace()", sizes[0], factor, expand=factor > 1)

    def _result(
        self, what: str, bound: Bound, factor: float, *, expand: bool = True, concat: bool = False
    ) -> Bound:
        """The call's bound; refuses it, or counts it when it builds (combines or expands)."""
        out = bound.times(factor)
        if concat and out.copies:
            self._refuse_unbounded(what)
        if out.copies > 1.0:
            names = ", ".join(sorted({n for n in self.unbounded if n})) or "a value"
            copies = "any number of" if out.copies == _INF else f"{out.copies:.3g}"
            raise QueryError(
                f"{what} builds a value of up to {copies} times a value of no known size "
                f"({names}): one such value per row, 2,048 rows in one allocation, could be "
                "any size. Build from bounded parts instead, e.g. left(x, 1000)",
                code="value_too_large",
            )
        if expand or bound.built:  # it builds, or reads what a call built: a new value
            out = Bound(out.fixed, out.copies, built=True)
            self.total += out.fixed
            if self.total > MAX_CONCAT_BYTES:
                raise QueryError(
                    f"{what}: the query's built values come to ~{self.total:,.0f} bytes per "
                    f"row (at most {MAX_CONCAT_BYTES:,}, every intermediate result counted; a "
                    f"column of one attribute counts {self.attribute_bytes:,.0f}, "
                    "--max-attribute-bytes): such values are built 2,048 rows at a time in "
                    "one allocation",
                    code="value_too_large",
                )
        return out

    def _refuse_unbounded(self, what: str) -> None:
        names = ", ".join(sorted({n for n in self.unbounded if n})) or "a subquery or aggregate"
        raise QueryError(
            f"{what} concatenates values of no known size ({names}): a JSON document, a "
            "file's content or an alias can be any size, and a concatenation builds 2,048 "
            "rows of it in one allocation. Concatenate bounded parts instead, e.g. "
            "left(x, 1000)",
            code="value_too_large",
        )

    def _column(self, expr: dict[str, Any]) -> Bound:
        names = expr.get("column_names") or [""]
        column = str(names[-1]).lower()
        if column in self.params:
            return self.params[column]
        own = (
            _SMALL_BOUND
            if column in SMALL_COLUMNS
            else Bound(self.attribute_bytes)
            if column in ATTRIBUTE_COLUMNS
            else None
        )
        defs = [d for d in self.names.defs.get(column, []) if d is not expr]
        if column not in self.names.opaque and column not in self._resolving and (defs or own):
            # a name the query gives to a value is that value (or the stored column of the
            # name, in another scope); a cycle or a column list it cannot place has no bound
            self._resolving.add(column)
            try:
                return _largest([self.size(d) for d in defs] + ([own] if own else []))
            finally:
                self._resolving.discard(column)
        self.unbounded.append(column)
        return Bound(copies=1.0)


def _param_names(lam: dict[str, Any]) -> list[str]:
    return [
        str(n.get("column_names", [""])[-1]).lower()
        for n in parse_tree.walk(lam.get("lhs"))
        if n.get("class") == "COLUMN_REF"
    ]


def _largest(bounds: Any) -> Bound:
    out = Bound()
    for b in bounds:
        out = out.join(b)
    return out


def _constant_text(expr: dict[str, Any]) -> str:
    const = parse_tree.constant(expr)
    return const[1] if const else "\\" * 8


@dataclass
class _Names:
    """The names a query gives: to expressions (``x AS name``, struct keys), each with its
    definitions, and to columns it cannot place (a subquery's or table function's column
    list, a CTE's column names)."""

    defs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    opaque: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, nodes: list[dict[str, Any]]) -> _Names:
        out = cls()
        for node in nodes:
            alias = node.get("alias")
            if isinstance(alias, str) and alias and "class" in node:
                out.defs.setdefault(alias.lower(), []).append(node)
            for key in ("column_name_alias", "aliases"):
                names = node.get(key)
                if isinstance(names, list):
                    out.opaque.update(str(n).lower() for n in names if isinstance(n, str))
        return out


def check_bounds(
    nodes: list[dict[str, Any]],
    canonical: dict[str, str],
    attribute_bytes: int,
    fixed_results: frozenset[str],
) -> None:
    """Refuse a query one of whose expressions could build too much in one vector."""
    bounds = _Bounds(canonical, attribute_bytes, _Names.of(nodes), fixed_results)
    # a lambda's parameters ((x, y) -> ... parses them as row(x, y)) are names, not values
    params = {
        id(p) for n in nodes if n.get("class") == "LAMBDA" for p in parse_tree.walk(n.get("lhs"))
    }
    for node in nodes:
        if "class" in node and node.get("class") != "TYPE" and id(node) not in params:
            bounds.size(node)
