"""Who may do what: the one access policy for ingest (HTTP and gRPC), the API and /metrics.

The rule, which fails closed: with no token configured at all, everything is open (a local
install). Once any token of any kind is configured, every route except ``/healthz`` (and
the data-free page shells and static files) needs a token of its scope; a scope that ends up
with no token is closed to everyone, never open. :meth:`prefixscope.config.Settings.validate`
refuses the combinations that would close a scope by accident.

Scopes and the tokens they accept:

* ``ingest`` (``POST /v1/traces``, gRPC ``Export``): ``--token``;
* ``write`` (``/api`` writes): ``--write-token``, or ``--token`` when no write token is set;
* ``read`` (``/api`` reads): ``--read-token`` and every write token;
* ``metrics`` (``GET /metrics``): the read tokens, or nobody's when ``--metrics-public``.

A token valid for another scope gets 403 (authenticated, not allowed); a missing, malformed
or unknown token gets 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from .config import Settings


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read the API"
    WRITE = "write to the API"
    METRICS = "read metrics"


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


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    ingest: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    metrics_public: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(
            ingest=tuple(settings.tokens),
            read_only=tuple(settings.read_tokens),
            write=tuple(settings.write_tokens or settings.tokens),
            metrics_public=settings.metrics_public,
        )

    @property
    def enabled(self) -> bool:
        """True once any token is configured: from then on nothing but /healthz is open."""
        return bool(self.ingest or self.read_only or self.write)

    def allowed(self, scope: Scope) -> tuple[str, ...]:
        if scope is Scope.INGEST:
            return self.ingest
        if scope is Scope.WRITE:
            return self.write
        return (*self.read_only, *self.write)  # READ and METRICS

    def is_open(self, scope: Scope) -> bool:
        return not self.enabled or (scope is Scope.METRICS and self.metrics_public)

    def check(self, headers: Mapping[str, str], scope: Scope) -> None:
        """Return if the request may act in ``scope``; raise Unauthorized/Forbidden otherwise."""
        if self.is_open(scope):
            return
        token = bearer_token(headers)
        if token is None:
            raise Unauthorized(f"{scope} requires 'Authorization: Bearer <token>'")
        allowed = self.allowed(scope)
        if allowed and _matches(token, allowed):
            return
        if _matches(token, (*self.ingest, *self.read_only, *self.write)):
            raise Forbidden(f"this token may not {scope}")
        raise Unauthorized(f"invalid token for {scope}")
