"""What the API is handed by the server that mounts it (the seam between server and API)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from prefixscope.auth import AccessPolicy
from prefixscope.collector.metrics.variants import VariantMetrics
from prefixscope.collector.storage.store import Store
from prefixscope.config import Settings
from prefixscope.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ApiContext:
    settings: Settings
    store: Store
    metrics: Metrics
    #: per-variant Prometheus series (feedback writes add thumbs-down); None in tests
    variant_metrics: VariantMetrics | None = None
    #: Shutdown hooks registered by the API (webhook worker); run by :meth:`close`.
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def access(self) -> AccessPolicy:
        """Who may read and write through /api (the rule is in :mod:`prefixscope.auth`)."""
        return AccessPolicy.from_settings(self.settings)

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
