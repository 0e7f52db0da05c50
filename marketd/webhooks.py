"""Price-change webhooks: the daemon's sender of the durable outbox.

A write that stores a changed price (store.history) also writes, in the same transaction, a
``price_changed`` row to ``market_webhook_outbox`` when ``[webhooks] price_changed_url`` is
set; a batch never waits for a receiver. This sender claims due rows (leased, so a crash
mid-delivery sends them again after the lease, and two daemons never send one at once),
POSTs each body with ``X-Marketd-Signature: sha256=<hex HMAC-SHA256 of the body keyed with
webhooks.secret>``, and settles it: delivered on 2xx; otherwise due again after a backoff
(``retry_base_seconds * 2^attempts`` with jitter, capped by ``retry_max_seconds``), and given
up (status dead, shown on the page) once it has failed for ``give_up_hours``. At least once:
a receiver may see a delivery twice (``X-Marketd-Delivery`` names it) and should dedupe.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
from contextlib import suppress
from typing import Any

import aiohttp
import structlog

from marketd.clock import Clock, parse_iso
from marketd.config_data import WebhooksConfig
from marketd.store import Store

log = structlog.get_logger(__name__)

LEASE_S = 120.0
BATCH = 20
POLL_S = 1.0


def signature(secret: str, body: bytes) -> str:
    """``X-Marketd-Signature``'s value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: compare the header with the body's own signature in constant
    time."""
    return hmac.compare_digest(signature(secret, body), header)


class WebhookSender:
    """Sends due outbox rows; :meth:`deliver_due` is one pass, :meth:`start` loops."""

    def __init__(self, store: Store, cfg: WebhooksConfig, clock: Clock,
                 session: aiohttp.ClientSession, *, rng: random.Random | None = None) -> None:
        self.store, self.cfg, self.clock, self.session = store, cfg, clock, session
        self.rng = rng or random.Random()
        self.task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                n = await self.deliver_due()
            except Exception:
                log.exception("webhook_pass_failed")
                n = 0
            if n < BATCH:
                await asyncio.sleep(POLL_S)

    async def deliver_due(self) -> int:
        """Claim due deliveries and send them (concurrently); returns how many were tried."""
        rows = await self.store.claim_deliveries(BATCH, LEASE_S)
        if rows:
            await asyncio.gather(*(self._deliver(r) for r in rows))
        return len(rows)

    async def _deliver(self, row: dict[str, Any]) -> None:
        body = str(row["body"]).encode()
        headers = {"Content-Type": "application/json",
                   "X-Marketd-Event": str(row["event"]),
                   "X-Marketd-Delivery": str(row["id"]),
                   "X-Marketd-Signature": signature(self.cfg.secret, body)}
        error: str | None = None
        try:
            async with self.session.post(
                    self.cfg.price_changed_url, data=body, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s)) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        if error is None:
            self.sent += 1
            await self.store.finish_delivery(int(row["id"]), ok=True)
            return
        self.failed += 1
        attempts = int(row["attempts"]) + 1
        now = self.clock.now()
        created = parse_iso(row["created_at"]) or now
        give_up = now - created >= self.cfg.give_up_hours * 3600
        delay = min(self.cfg.retry_max_seconds,
                    self.cfg.retry_base_seconds * 2 ** min(attempts - 1, 30))
        delay *= 0.5 + self.rng.random() / 2
        log.warning("webhook_delivery_failed", delivery=row["id"], attempts=attempts,
                    error=error, given_up=give_up)
        await self.store.finish_delivery(int(row["id"]), ok=False, error=error,
                                         next_attempt_at=now + delay, give_up=give_up)
