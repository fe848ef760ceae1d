"""What the API is handed by the server that mounts it (the seam between server and API)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from prefixscope.collector.store import Store

from prefixscope.config import Settings
from prefixscope.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ApiContext:
    settings: Settings
    store: Store
    metrics: Metrics
    #: Shutdown hooks registered by the API (webhook worker); run by :meth:`close`.
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def write_tokens(self) -> list[str]:
        """Tokens allowed to write through /api (scores, feedback, runs, acks, registry)."""
        return self.settings.write_tokens or self.settings.tokens

    @property
    def read_tokens(self) -> list[str]:
        """Tokens allowed to read /api; a write token can also read."""
        if not (self.settings.read_tokens or self.write_tokens):
            return []
        return [*self.settings.read_tokens, *self.write_tokens]

    def on_close(self, hook: Callable[[], None]) -> None:
        self._closers.append(hook)

    def close(self) -> None:
        """Stop the API's background work (call before closing the store). Idempotent."""
        while self._closers:
            hook = self._closers.pop()
            try:
                hook()
            except Exception:
                log.exception("API shutdown hook failed")
