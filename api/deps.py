"""Per-process API state and the FastAPI dependencies every route uses (auth, body size)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prefixscope.auth import AccessPolicy, Scope
from prefixscope.config import Settings
from prefixscope.errors import BadRequest, PayloadTooLarge

from .context import ApiContext
from .sql_sandbox import SqlSandbox
from .webhooks import WebhookDispatcher

log = logging.getLogger(__name__)

#: Shown in OpenAPI (/docs "Authorize"); the check itself is prefixscope.auth.AccessPolicy.
bearer_scheme = HTTPBearer(auto_error=False, description="API token (read or write scope)")


@dataclass(slots=True)
class ApiState:
    """What the routes share: the context plus the sandbox and the webhook dispatcher."""

    ctx: ApiContext
    sandbox: SqlSandbox = field(init=False)
    webhooks: WebhookDispatcher = field(init=False)

    def __post_init__(self) -> None:
        s = self.ctx.settings
        self.sandbox = SqlSandbox(
            self.ctx.store,
            timeout_s=s.sql_timeout_s,
            max_rows=s.sql_max_rows,
            memory_budget_bytes=s.sql_memory_mb * 2**20,
            max_result_bytes=s.sql_max_result_mb * 2**20,
            attribute_bytes=s.max_attribute_bytes,
            metrics=self.ctx.metrics,
        )
        self.webhooks = WebhookDispatcher(s.webhook_urls, self.ctx.metrics, public_url=s.public_url)
        self.ctx.on_close(self.webhooks.close)

    # -- dependencies ----------------------------------------------------------------------------
    def require_read(self) -> Callable[..., None]:
        return Guards(self.ctx.settings).require_read()

    def require_write(self) -> Callable[..., None]:
        return Guards(self.ctx.settings).require_write()


@dataclass(frozen=True, slots=True)
class Guards:
    """The auth and body-size dependencies of ``/api`` routes, from the settings alone: the
    embedded server's API and a lake collector's (``lake_routes.py``) use the same ones."""

    settings: Settings

    def require_read(self) -> Callable[..., None]:
        access = AccessPolicy.from_settings(self.settings)

        def read_scope(
            request: Request,
            _creds: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
        ) -> None:
            access.check(request.headers, Scope.READ)

        return read_scope

    def require_write(self) -> Callable[..., None]:
        access = AccessPolicy.from_settings(self.settings)
        limit = self.settings.max_body_bytes

        def write_scope(
            request: Request,
            _creds: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
        ) -> None:
            access.check(request.headers, Scope.WRITE)
            declared = request.headers.get("content-length")
            if declared is not None:
                if not declared.isdigit():
                    raise BadRequest("invalid Content-Length header")
                if int(declared) > limit:
                    raise PayloadTooLarge(f"body of {declared} bytes exceeds {limit} bytes")

        return write_scope
