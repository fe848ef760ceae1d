"""Reading DuckDB's parse tree (``json_serialize_sql``): a call's arguments, a constant's
kind and text, the plain type of a cast, the expressions under a node, every node below one.
Shared by the sandbox's policy and its two size bounds (:mod:`.sql_policy`,
:mod:`.sql_sizes`, :mod:`.sql_bounds`)."""

from __future__ import annotations

from typing import Any


def args(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for arg in node.get("arguments") or node.get("children") or []:
        expr = arg.get("expression") if isinstance(arg, dict) and "expression" in arg else arg
        if isinstance(expr, dict):
            out.append(expr)
    return out


def constant(expr: dict[str, Any] | None) -> tuple[str, str] | None:
    if not isinstance(expr, dict) or expr.get("class") != "CONSTANT":
        return None
    lit = expr.get("literal") or {}
    return str(lit.get("kind", "")), str(lit.get("text", ""))


def int_constant(expr: dict[str, Any] | None) -> int | None:
    const = constant(expr)
    if const is None or const[0] not in ("INTEGER", "BIGINT", "HUGEINT", "DECIMAL", "DOUBLE"):
        return None
    try:
        return int(float(const[1]))
    except ValueError:
        return None


def walk_children(expr: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key, value in expr.items():
        if key in ("order_bys", "filter", "query_location"):
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict) and "class" in item:
                out.append(item)
            elif isinstance(item, dict) and isinstance(item.get("expression"), dict):
                out.append(item["expression"])
    return out


def walk(obj: Any) -> Any:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def cast_type(expr: dict[str, Any]) -> str:
    """The plain type a CAST node casts to (upper case), or "" for a nested or sized one."""
    type_expr = expr.get("type_expr") or {}
    name = str(type_expr.get("type_name") or "").upper()
    return name if name in ("DECIMAL", "NUMERIC") or not type_expr.get("children") else ""
