"""What the API is handed by the server that mounts it (the seam between server and API)."""

from __future__ import annotations

from dataclasses import dataclass

from prefixscope.collector.store import Store
from prefixscope.config import Settings
from prefixscope.metrics import Metrics


@dataclass(slots=True)
class ApiContext:
    settings: Settings
    store: Store
    metrics: Metrics

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
