"""Alert webhooks: background delivery with retries and exponential backoff.

Every configured URL receives one POST per alert event (``new``, ``updated``, ``resolved``)
with the alert object, a Slack-compatible ``text`` field whose telemetry values are inert
(escaped, in code spans they cannot close) and those values raw in ``fields``.
:meth:`WebhookDispatcher.notify` only enqueues (bounded; overflow is dropped and counted), so
detection never waits on a receiver. A worker thread delivers: 2xx is success; connection
errors, timeouts, 408, 429 and 5xx are retried with exponential backoff (``Retry-After`` is
honoured, capped); any other status is a permanent failure. Every outcome is logged and
counted in ``prefixscope_webhook_deliveries{outcome}``.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import random
import threading
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from prefixscope.metrics import Metrics

from .models import Alert

log = logging.getLogger(__name__)

EVENTS = ("new", "updated", "resolved")
_RETRY_STATUS = {408, 425, 429}


@dataclass(order=True, slots=True)
class _Delivery:
    due: float
    seq: int
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    attempt: int = field(default=1, compare=False)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def alert_url(alert_id: str, public_url: str) -> str:
    """The alert page: absolute with ``--public-url``, else the server-relative path."""
    path = f"/alerts/{quote(alert_id, safe='')}"
    return public_url.rstrip("/") + path if public_url else path


#: the longest telemetry value quoted in the text (the ``fields`` carry it whole)
MAX_TEXT_VALUE_CHARS = 200
#: a backtick would close the code span around a value: this look-alike (U+02CB) cannot
_BACKTICK_STANDIN = "\u02cb"


def slack_escape(text: str) -> str:
    """Slack's control characters as entities: ``<!channel>``, ``<@U1>`` and
    ``<http://x|label>`` are inert once ``<`` and ``>`` are escaped (``&`` first)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(value: object) -> str:
    """A telemetry value as an inline code span that it can neither close nor leave: Slack's
    markup escaped, backticks and line breaks replaced, Markdown inert inside the span."""
    text = str(value)
    if len(text) > MAX_TEXT_VALUE_CHARS:
        text = text[: MAX_TEXT_VALUE_CHARS - 1] + "\u2026"
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)
    text = slack_escape(text.replace("`", _BACKTICK_STANDIN))
    return f"`{text}`" if text.strip() else "`\u2205`"


def _variant(alert: Alert) -> str:
    variant = alert.prefix_id or "base"
    return variant + f"@{alert.prefix_version}" if alert.prefix_version else variant


def slack_text(event: str, alert: Alert, url: str | None = None) -> str:
    """The alert as Slack ``mrkdwn``: every value that came from telemetry or a user (variant,
    metric, baseline, route, cohort, ids) is in a code span (:func:`code`); the raw values go
    in the payload's ``fields``."""
    cohort = ", ".join(f"{code(k)}={code(v)}" for k, v in sorted(alert.cohort.items()))
    head = {"new": "New regression", "updated": "Regression updated", "resolved": "Resolved"}
    icon = {"new": ":rotating_light:", "updated": ":warning:", "resolved": ":white_check_mark:"}
    severity = code(alert.severity) if alert.severity else "n/a"
    parts = [
        f"{icon.get(event, '')} *{head.get(event, event)}* [{severity}]: "
        f"{code(_variant(alert))} {code(alert.metric)} {_fmt(alert.baseline_value)} → "
        f"{_fmt(alert.value)} (Δ {_fmt(alert.delta)}, CI [{_fmt(alert.ci_low)}, "
        f"{_fmt(alert.ci_high)}], q={_fmt(alert.q_value)}, n={alert.n} vs {alert.n_baseline}) "
        f"vs {code(alert.baseline or 'n/a')}",
        f"cohort: {cohort or 'all traffic'}"
        + (f"; route: {code(alert.route)}" if alert.route else ""),
        f"status: {code(alert.status)}; alert id: {code(alert.id)}",
    ]
    if alert.example_trace_ids:
        parts.append("example traces: " + ", ".join(code(t) for t in alert.example_trace_ids[:3]))
    if url:
        parts.append(f"evidence: {slack_escape(url)}")
    return "\n".join(p.strip() for p in parts)


def fields(alert: Alert) -> dict[str, Any]:
    """The values the text quotes, raw, for receivers that render their own message."""
    return {
        "variant": _variant(alert),
        "prefix_id": alert.prefix_id,
        "prefix_version": alert.prefix_version,
        "metric": alert.metric,
        "baseline": alert.baseline,
        "route": alert.route,
        "cohort": dict(alert.cohort),
        "severity": alert.severity,
        "status": alert.status,
        "alert_id": alert.id,
        "example_trace_ids": list(alert.example_trace_ids[:3]),
    }


def payload(event: str, alert: Alert, public_url: str = "") -> dict[str, Any]:
    url = alert_url(alert.id, public_url)
    return {
        "event": f"alert.{event}",
        "sent_at": dt.datetime.now(dt.UTC).isoformat(),
        "text": slack_text(event, alert, url),
        "fields": fields(alert),
        "url": url,
        "alert": alert.model_dump(mode="json"),
    }


class WebhookDispatcher:
    def __init__(
        self,
        urls: Iterable[str],
        metrics: Metrics | None = None,
        *,
        max_attempts: int = 5,
        base_delay_s: float = 0.5,
        max_delay_s: float = 60.0,
        timeout_s: float = 5.0,
        queue_max: int = 10_000,
        public_url: str = "",
    ) -> None:
        self.urls = list(urls)
        self.public_url = public_url
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self.queue_max = queue_max
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._inflight = 0

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    # -- producer side: never blocks --------------------------------------------------------
    def notify(self, event: str, alerts: Iterable[Alert]) -> int:
        """Queue one delivery per (url, alert); returns how many were queued."""
        if event not in EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        if not self.urls:
            return 0
        queued = 0
        with self._cond:
            if self._closed:
                return 0
            for alert in alerts:
                body = orjson.dumps(payload(event, alert, self.public_url))
                for url in self.urls:
                    if len(self._heap) >= self.queue_max:
                        self._count("dropped")
                        log.warning(
                            "webhook queue full; dropped %s event for %s", event, safe_target(url)
                        )
                        continue
                    heapq.heappush(
                        self._heap, _Delivery(time.monotonic(), next(self._seq), url, body)
                    )
                    queued += 1
            self._ensure_worker()
            self._cond.notify_all()
        return queued

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="prefixscope-webhooks", daemon=True
            )
            self._thread.start()

    # -- worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                with self._cond:
                    while not self._closed:
                        now = time.monotonic()
                        if self._heap and self._heap[0].due <= now:
                            break
                        wait = (self._heap[0].due - now) if self._heap else None
                        self._cond.wait(wait)
                    if self._closed:
                        return
                    item = heapq.heappop(self._heap)
                    self._inflight += 1
                try:
                    self._attempt(client, item)
                finally:
                    with self._cond:
                        self._inflight -= 1
                        self._cond.notify_all()

    def _attempt(self, client: httpx.Client, item: _Delivery) -> None:
        target = safe_target(item.url)
        retry_after: float | None = None
        try:
            resp = client.post(
                item.url, content=item.body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {str(exc).replace(item.url, target)}"
        else:
            if 200 <= resp.status_code < 300:
                self._count("delivered")
                return
            reason = f"HTTP {resp.status_code}"
            if resp.status_code not in _RETRY_STATUS and resp.status_code < 500:
                self._count("failed")
                log.error("webhook %s refused the alert (%s); not retrying", target, reason)
                return
            retry_after = _retry_after(resp.headers.get("retry-after"))
        if item.attempt >= self.max_attempts:
            self._count("failed")
            log.error("webhook %s failed after %d attempts (%s)", target, item.attempt, reason)
            return
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** (item.attempt - 1))
        delay *= random.uniform(0.8, 1.2)  # jitter: receivers recovering are not stampeded
        if retry_after is not None:
            delay = min(self.max_delay_s, max(delay, retry_after))
        self._count("retried")
        log.warning(
            "webhook %s attempt %d failed (%s); retrying in %.2fs",
            target,
            item.attempt,
            reason,
            delay,
        )
        with self._cond:
            heapq.heappush(
                self._heap,
                _Delivery(
                    time.monotonic() + delay, next(self._seq), item.url, item.body, item.attempt + 1
                ),
            )
            self._cond.notify_all()

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(outcome=outcome).inc()

    # -- lifecycle -----------------------------------------------------------------------------
    def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or in flight (tests, shutdown); True if drained."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Try to deliver what is due within ``timeout``, then stop the worker."""
        self.drain(timeout)
        with self._cond:
            self._closed = True
            pending = len(self._heap)
            self._heap.clear()
            self._cond.notify_all()
        if pending:
            log.warning("webhooks: %d deliveries abandoned at shutdown", pending)
            for _ in range(pending):
                self._count("dropped")
        if self._thread is not None:
            self._thread.join(timeout)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def safe_target(url: str) -> str:
    """What logs may say of a webhook URL: scheme and host only. Slack-style URLs carry
    their secret in the path (and others in the query or user info)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"
