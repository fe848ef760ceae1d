"""``GET /docs``: the OpenAPI surface as a server-rendered page (no CDN, no JavaScript).

FastAPI's Swagger UI loads its JavaScript from a CDN, which a self-hosted, possibly offline
install cannot rely on. This page renders the same ``app.openapi()`` document locally. It
takes effect when the app is built with ``docs_url=None`` and ``openapi_url=None`` (otherwise
FastAPI's routes win): both ``/docs`` and ``/openapi.json`` are served here, in the read
scope like every other route once tokens are set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from .web import SECURITY_HEADERS, environment

METHODS = ("get", "post", "put", "patch", "delete")


def describe(schema: dict[str, Any]) -> str:
    """A short human-readable type: ``string``, ``ScoreIn | list[ScoreIn]``, ``int | null``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(describe(s) for s in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list[{describe(schema.get('items', {}))}]"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"dict[str, {describe(extra) if isinstance(extra, dict) else 'any'}]"
    return str(kind)


def constraints(schema: dict[str, Any]) -> str:
    parts = [
        f"{k}={schema[k]}"
        for k in (
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "pattern",
            "default",
        )
        if k in schema
    ]
    for sub in schema.get("anyOf", []):
        if sub.get("type") != "null":
            parts.extend(constraints(sub).split("; ") if constraints(sub) else [])
    return "; ".join(parts)


def docs_context(spec: dict[str, Any]) -> dict[str, Any]:
    operations = []
    for path, ops in spec.get("paths", {}).items():
        for method in METHODS:
            op = ops.get(method)
            if op is None:
                continue
            params = [
                {
                    "name": p["name"],
                    "in": p["in"],
                    "required": p.get("required", False),
                    "type": describe(p.get("schema", {})),
                    "extra": constraints(p.get("schema", {})),
                }
                for p in op.get("parameters", [])
            ]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "anchor": f"{method}-{path}".replace("/", "-").strip("-"),
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "params": params,
                    "body": describe(body["schema"]) if body else None,
                    "responses": [
                        (code, r.get("description", ""))
                        for code, r in sorted(op.get("responses", {}).items())
                    ],
                }
            )
    schemas = []
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        required = set(schema.get("required", []))
        fields = [
            (
                f"{field}{' *' if field in required else ''}",
                describe(sub) + (f" ({constraints(sub)})" if constraints(sub) else ""),
            )
            for field, sub in schema.get("properties", {}).items()
        ]
        schemas.append((name, fields))
    return {"spec": spec, "operations": operations, "schemas": schemas}


def docs_routes(read_scope: Callable[..., None]) -> APIRouter:
    """``/docs`` and ``/openapi.json``, behind ``read_scope`` (open when no token is set)."""
    router = APIRouter(dependencies=[Depends(read_scope)])

    @router.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        spec = request.app.openapi()
        html = environment().get_template("docs.html").render(**docs_context(spec))
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    return router
