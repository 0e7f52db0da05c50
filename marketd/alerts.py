"""Failure-rate alerts (the seed's "Monitoring Alerts").

After every scheduler run, each provider's attempts are added to a sliding window of
``alerts.window_seconds``: jobs that completed, and jobs that failed or were scheduled for a retry
(a transient error is a failed attempt too). Jobs deferred for budget, 429 or credentials are not
attempts. When the window holds at least ``min_jobs`` attempts and the failed share reaches
``failure_rate_threshold``, an incident opens: one ``provider_failure_rate_high`` error event,
a banner on the status page, and one JSON POST to ``webhook_url``. It closes (an info event,
``provider_failure_rate_recovered``) when the share falls below the threshold again. The window
lives in memory: a restart starts a fresh one.

**Pauses people hear about.** A provider paused for refused credentials or for its daily quota
defers its jobs (they are not failures), so prices would just go stale: after every run, a
lane paused for either opens a pause incident (one ``provider_paused`` error event, a banner,
one JSON POST to ``webhook_url`` with the provider, the reason, until when and which
credential to check), and the incident resolves (an info event and a ``"status":
"resolved"`` POST) once the provider's calls go through again. A pause renewed while the
incident is open (refused again when the pause ends) is the same incident. A pause restored
at start-up counts as already announced.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from marketd.clock import Clock, iso
from marketd.config import AlertsConfig
from marketd.scheduler import RunSummary
from marketd.worker import Lane

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


@dataclass
class PauseIncident:
    provider: str
    reason: str  # credentials_refused or daily_quota
    message: str
    paused_until: float
    credential: str | None
    started_at: float

    def as_dict(self, status: str = "firing",
                resolved_at: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alert": "provider_paused", "status": status, "provider": self.provider,
            "reason": self.reason, "message": self.message,
            "paused_until": iso(self.paused_until), "check": self.credential,
            "started_at": iso(self.started_at)}
        if resolved_at is not None:
            out["resolved_at"] = iso(resolved_at)
        return out


def pause_kind(lane: Lane) -> str | None:
    """What a lane's pause is worth an alert for: refused credentials, a daily quota."""
    if lane.credential:
        return "credentials_refused"
    if (lane.pause_reason or "").startswith("quota_exhausted"):
        return "daily_quota"
    return None


class FailureAlerts:
    """Watches run summaries; ``active`` holds the open failure-rate incidents by provider,
    ``pauses`` the open pause incidents (given the lanes)."""

    def __init__(self, cfg: AlertsConfig, clock: Clock,
                 session: Callable[[], aiohttp.ClientSession | None],
                 lanes: Mapping[str, Lane] | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self._session = session
        self._window: dict[str, deque[tuple[float, int, int]]] = {}
        self.active: dict[str, Incident] = {}
        self.webhooks_sent = 0
        self.lanes = dict(lanes or {})
        self.pauses: dict[str, PauseIncident] = {}
        now = clock.now()
        for lane in self.lanes.values():  # restored at start-up: announced before the restart
            if lane.paused(now) and (kind := pause_kind(lane)):
                self.pauses[lane.name] = self._pause_incident(lane, kind, now)

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
        for name in sorted(self.lanes):
            await self._evaluate_pause(self.lanes[name], summary.providers.get(name, {}), now)

    def _pause_incident(self, lane: Lane, kind: str, now: float) -> PauseIncident:
        return PauseIncident(lane.name, kind, lane.pause_reason or "", lane.paused_until or now,
                             lane.credential, now)

    async def _evaluate_pause(self, lane: Lane, stats: Mapping[str, Any], now: float) -> None:
        incident = self.pauses.get(lane.name)
        kind = pause_kind(lane) if lane.paused(now) else None
        if kind is not None:
            if incident is None:
                incident = self.pauses[lane.name] = self._pause_incident(lane, kind, now)
                log.error("provider_paused", provider=lane.name, reason=kind,
                          paused_until=iso(incident.paused_until), check=lane.credential,
                          message=incident.message)
                await self._send(incident.as_dict(), lane.name)
            else:  # renewed: the same incident, until when it now lasts
                incident.paused_until = lane.paused_until or now
            return
        # calls went through again: a batch that spent calls and left the provider unpaused
        if incident is not None and int(stats.get("calls", 0)) > 0 and not lane.paused(now):
            del self.pauses[lane.name]
            log.info("provider_pause_resolved", provider=lane.name, reason=incident.reason,
                     incident_s=round(now - incident.started_at, 1))
            await self._send(incident.as_dict("resolved", now), lane.name)

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
        await self._send(incident.as_dict(self.cfg), incident.provider)

    async def _send(self, payload: dict[str, Any], provider: str) -> None:
        url = self.cfg.webhook_url
        session = self._session()
        if not url or session is None or session.closed:
            return
        try:
            async with session.post(url, json=payload,
                                    timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S),
                                    allow_redirects=False) as resp:
                if resp.status >= 300:
                    log.warning("alert_webhook_refused", provider=provider,
                                alert=payload.get("alert"), status=resp.status)
                    return
            self.webhooks_sent += 1
            log.info("alert_webhook_sent", provider=provider, alert=payload.get("alert"),
                     status=payload.get("status"))
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning("alert_webhook_failed", provider=provider, alert=payload.get("alert"),
                        error=f"{type(exc).__name__}: {exc}")
