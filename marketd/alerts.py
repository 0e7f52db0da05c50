"""Failure-rate alerts (the seed's "Monitoring Alerts").

After every scheduler run, each provider's attempts are added to a sliding window of
``alerts.window_seconds``: jobs that completed, and jobs that failed or were scheduled for a retry
(a transient error is a failed attempt too). Jobs deferred for budget, 429 or credentials are not
attempts. When the window holds at least ``min_jobs`` attempts and the failed share reaches
``failure_rate_threshold``, an incident opens: one ``provider_failure_rate_high`` error event,
a banner on the status page, and one JSON POST to ``webhook_url``. It closes (an info event,
``provider_failure_rate_recovered``) when the share falls below the threshold again. The window
lives in memory: a restart starts a fresh one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from marketd.clock import Clock, iso
from marketd.config import AlertsConfig
from marketd.scheduler import RunSummary

log = structlog.get_logger(__name__)

WEBHOOK_TIMEOUT_S = 5.0


@dataclass
class Incident:
    provider: str
    started_at: float
    failure_rate: float
    failed: int
    attempts: int

    def as_dict(self, cfg: AlertsConfig) -> dict[str, Any]:
        return {
            "alert": "provider_failure_rate_high",
            "status": "firing",
            "provider": self.provider,
            "failure_rate": round(self.failure_rate, 4),
            "failed": self.failed,
            "attempts": self.attempts,
            "threshold": cfg.failure_rate_threshold,
            "window_seconds": cfg.window_seconds,
            "started_at": iso(self.started_at),
        }


class FailureAlerts:
    """Watches run summaries; ``active`` holds the open incidents by provider."""

    def __init__(self, cfg: AlertsConfig, clock: Clock,
                 session: Callable[[], aiohttp.ClientSession | None]) -> None:
        self.cfg = cfg
        self.clock = clock
        self._session = session
        self._window: dict[str, deque[tuple[float, int, int]]] = {}
        self.active: dict[str, Incident] = {}
        self.webhooks_sent = 0

    def rate(self, provider: str, now: float) -> tuple[int, int]:
        """``(failed, attempts)`` in the window ending at ``now``."""
        window = self._window.get(provider, deque())
        while window and window[0][0] < now - self.cfg.window_seconds:
            window.popleft()
        failed = sum(b for _, _, b in window)
        return failed, failed + sum(g for _, g, _ in window)

    async def on_run(self, summary: RunSummary) -> None:
        now = self.clock.now()
        for provider, stats in summary.providers.items():
            good = int(stats.get("succeeded", 0))
            bad = int(stats.get("failed", 0)) + int(stats.get("retried", 0))
            if good or bad:
                self._window.setdefault(provider, deque()).append((now, good, bad))
        for provider in sorted(set(self._window) | set(self.active)):
            await self._evaluate(provider, now)

    async def _evaluate(self, provider: str, now: float) -> None:
        failed, attempts = self.rate(provider, now)
        share = failed / attempts if attempts else 0.0
        high = attempts >= self.cfg.min_jobs and share >= self.cfg.failure_rate_threshold
        incident = self.active.get(provider)
        if high and incident is None:
            incident = Incident(provider, now, share, failed, attempts)
            self.active[provider] = incident
            log.error("provider_failure_rate_high", provider=provider,
                      failure_rate=round(share, 4), failed=failed, attempts=attempts,
                      threshold=self.cfg.failure_rate_threshold,
                      window_s=self.cfg.window_seconds)
            await self._post(incident)
        elif high and incident is not None:
            incident.failure_rate, incident.failed, incident.attempts = share, failed, attempts
        elif incident is not None and attempts and share < self.cfg.failure_rate_threshold:
            del self.active[provider]
            log.info("provider_failure_rate_recovered", provider=provider,
                     failure_rate=round(share, 4), attempts=attempts,
                     incident_s=round(now - incident.started_at, 1))

    async def _post(self, incident: Incident) -> None:
        url = self.cfg.webhook_url
        session = self._session()
        if not url or session is None or session.closed:
            return
        try:
            async with session.post(url, json=incident.as_dict(self.cfg),
                                    timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S),
                                    allow_redirects=False) as resp:
                if resp.status >= 300:
                    log.warning("alert_webhook_refused", provider=incident.provider,
                                status=resp.status)
                    return
            self.webhooks_sent += 1
            log.info("alert_webhook_sent", provider=incident.provider)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning("alert_webhook_failed", provider=incident.provider,
                        error=f"{type(exc).__name__}: {exc}")
