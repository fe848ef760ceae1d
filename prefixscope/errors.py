"""Errors classified once, and their one mapping to HTTP and gRPC status.

Handlers raise these; they never pick status codes themselves. ``retryable`` errors tell
the client to come back (429/503 + Retry-After, RESOURCE_EXHAUSTED/UNAVAILABLE); permanent
ones say what is wrong with the request (4xx, INVALID_ARGUMENT, ...).
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class PrefixScopeError(Exception):
    """Base class: an error with a client-facing message and a status."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    retryable: ClassVar[bool] = False
    #: short machine-readable error type for JSON bodies
    kind: ClassVar[str] = "internal"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is not None:
            return {"Retry-After": str(max(1, round(self.retry_after_s)))}
        return {}


# -- permanent: the request is wrong --------------------------------------------------------
class BadRequest(PrefixScopeError):
    http_status, grpc_code, kind = 400, grpc.StatusCode.INVALID_ARGUMENT, "bad_request"


class Unauthorized(PrefixScopeError):
    http_status, grpc_code, kind = 401, grpc.StatusCode.UNAUTHENTICATED, "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(PrefixScopeError):
    http_status, grpc_code, kind = 403, grpc.StatusCode.PERMISSION_DENIED, "forbidden"


class NotFound(PrefixScopeError):
    http_status, grpc_code, kind = 404, grpc.StatusCode.NOT_FOUND, "not_found"


class NotAcceptable(PrefixScopeError):
    """No representation the client accepts (``Accept`` / ``format=``): 406."""

    http_status, grpc_code, kind = 406, grpc.StatusCode.INVALID_ARGUMENT, "not_acceptable"


class PayloadTooLarge(PrefixScopeError):
    http_status, grpc_code, kind = 413, grpc.StatusCode.RESOURCE_EXHAUSTED, "payload_too_large"


class UnsupportedMediaType(PrefixScopeError):
    http_status, grpc_code, kind = 415, grpc.StatusCode.INVALID_ARGUMENT, "unsupported_media_type"


class Unprocessable(PrefixScopeError):
    http_status, grpc_code, kind = 422, grpc.StatusCode.INVALID_ARGUMENT, "unprocessable"


class QueryError(PrefixScopeError):
    """User SQL is malformed, forbidden or failed (400)."""

    http_status, grpc_code, kind = 400, grpc.StatusCode.INVALID_ARGUMENT, "query_error"

    def __init__(self, message: str, *, code: str = "query_error", position: int | None = None):
        super().__init__(message)
        self.code = code
        self.position = position


class QueryTimeout(QueryError):
    http_status, kind = 408, "query_timeout"

    def __init__(self, message: str):
        super().__init__(message, code="timeout")


# -- retryable: come back later -------------------------------------------------------------
class Overloaded(PrefixScopeError):
    http_status, grpc_code, retryable, kind = (
        429,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        True,
        "overloaded",
    )


class Unavailable(PrefixScopeError):
    """Storage cannot commit right now (disk full, read-only, shutting down)."""

    http_status, grpc_code, retryable, kind = 503, grpc.StatusCode.UNAVAILABLE, True, "unavailable"


def http_error_body(err: PrefixScopeError) -> dict[str, object]:
    body: dict[str, object] = {"error": err.kind, "message": err.message}
    if isinstance(err, QueryError):
        body["code"] = err.code
        if err.position is not None:
            body["position"] = err.position
    return body
