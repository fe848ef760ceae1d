"""Bearer-token checks shared by ingest (HTTP and gRPC) and the API."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from .errors import Forbidden, Unauthorized


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    value = headers.get("authorization") or headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _matches(token: str, allowed: Iterable[str]) -> bool:
    ok = False
    for candidate in allowed:  # compare against every token: no early exit timing leak
        ok |= hmac.compare_digest(token.encode(), candidate.encode())
    return ok


def check_token(
    headers: Mapping[str, str],
    allowed: list[str],
    *,
    denied: list[str] | None = None,
    scope: str = "ingest",
) -> None:
    """Raise Unauthorized unless the request carries one of ``allowed`` (no-op when empty).

    ``denied`` are tokens that are valid elsewhere but lack this scope: they get 403.
    """
    if not allowed:
        return
    token = bearer_token(headers)
    if token is None:
        raise Unauthorized(f"{scope} requires 'Authorization: Bearer <token>'")
    if _matches(token, allowed):
        return
    if denied and _matches(token, denied):
        raise Forbidden(f"this token may not {scope}")
    raise Unauthorized(f"invalid token for {scope}")
