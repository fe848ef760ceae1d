"""The errors of :mod:`prefixscope.client`: one :class:`ClientError` subclass per kind of
answer, built from the server's JSON error body (``message``, ``error``, ``code``,
``position``) and its ``Retry-After``."""

from __future__ import annotations

import json
from email.message import Message
from typing import Any


class ClientError(Exception):
    """The server refused or failed a request, or could not be reached.

    ``status``: the HTTP status (None without an answer); ``kind``: the server's error type
    (``query_error``, ``unauthorized``, ...); ``code``/``position``: which SQL defence
    answered and where in the query; ``retry_after``: seconds the server asked to wait."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        kind: str | None = None,
        code: str | None = None,
        position: int | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind
        self.code = code
        self.position = position
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.status else self.message


class AuthError(ClientError):
    """401 (no or unknown token) or 403 (a token of another scope)."""


class InvalidRequest(ClientError):
    """The request is wrong (400, 406, 413, 415, 422): the message says what."""


class BadQuery(InvalidRequest):
    """The SQL was refused or failed (``code``: ``syntax_error``, ``forbidden``, ...)."""


class QueryTimeout(BadQuery):
    """The query ran past the server's time limit (408)."""


class NotFound(ClientError):
    """404: no such alert, prefix or trace."""


class Unavailable(ClientError):
    """429 or 503: come back after ``retry_after`` seconds."""


class ServerError(ClientError):
    """Another 5xx."""


class TransportError(ClientError):
    """No answer: the server could not be reached or the connection broke."""


class ClientTimeout(TransportError):
    """No answer within the client's ``timeout``."""


class ResultTruncated(UserWarning):
    """A SQL answer was cut by a server limit (rows or bytes)."""


def error_class(status: int, kind: str | None) -> type[ClientError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFound
    if status == 408:
        return QueryTimeout
    if status in (429, 503):
        return Unavailable
    if status >= 500:
        return ServerError
    if kind == "query_error":
        return BadQuery
    return InvalidRequest


def error_from_answer(status: int, headers: Message, raw: bytes) -> ClientError:
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        message, kind = str(body["message"]), body.get("error")
        code, position = body.get("code"), body.get("position")
    else:
        message, kind, code, position = (
            raw.decode("utf-8", "replace")[:500].strip(),
            None,
            None,
            None,
        )
    retry = headers.get("Retry-After")
    try:
        retry_after = float(retry) if retry is not None else None
    except ValueError:
        retry_after = None
    cls = error_class(status, kind)
    return cls(
        message or f"HTTP {status}",
        status=status,
        kind=kind,
        code=code,
        position=position,
        retry_after=retry_after,
        body=body,
    )
