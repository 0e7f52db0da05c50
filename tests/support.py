"""Test helpers shared by the suites: a scripted provider that spends budget like a real client,
and a config builder. The provider is faked at the seam the issue names (given the jobs of one
batch, fetch their prices); the store, budget, worker and scheduler are the real ones."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from marketd.config import Config, parse_config
from marketd.errors import BudgetExhausted, MarketdError
from marketd.models import Job, Price, dedupe_key, size_key
from marketd.providers.base import FetchResult, Provider, ProviderContext

Answer = Callable[[str, Sequence[Job]], FetchResult | MarketdError]


def make_config(tmp_path: Any, **sections: Any) -> Config:
    data: dict[str, Any] = {"database": {"path": str(tmp_path / "marketd.db")},
                            "server": {"port": 0}}
    for key, value in sections.items():
        if key == "providers":
            data["providers"] = value
        else:
            data.setdefault(key, {}).update(value)
    return parse_config(data, env={})


class ScriptedProvider(Provider):
    """Answers each group from a script: a queue of answers, then ``default``.

    Every group costs ``calls_per_group`` budget tokens, spent before 'sending' as a real
    client does; ``seen`` records (sku, [sizes]) per group.
    """

    name = "scripted"

    def __init__(self, ctx: ProviderContext, *, calls_per_group: int = 1) -> None:
        super().__init__(ctx)
        self.script: list[Answer] = []
        self.default: Answer = ok_answer
        self.calls_per_group = calls_per_group
        self.seen: list[tuple[str, list[str | None]]] = []
        self.hook: Callable[[], Any] | None = None

    async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
        for _ in range(self.calls_per_group):
            await self.ctx.budget.spend()
        self.seen.append((sku, [j.size for j in jobs]))
        if self.hook is not None:
            await self.hook()
        answer = self.script.pop(0) if self.script else self.default
        result = answer(sku, jobs)
        if isinstance(result, MarketdError):
            raise result
        return result


def price_for(job: Job, ask: int | None = 9600, now: float = 0.0) -> Price:
    return Price(job.provider, job.sku, job.size_key, "GBP", ask, ask and ask - 500, None, now)


def ok_answer(sku: str, jobs: Sequence[Job]) -> FetchResult:
    return FetchResult(outcomes={j.id: price_for(j, 9600, 1.0) for j in jobs})


def raising(exc: MarketdError) -> Answer:
    return lambda sku, jobs: exc


def scripted_factory(registry: dict[str, ScriptedProvider], **kw: Any) -> Any:
    """A client factory for Daemon.create that keeps the instances in ``registry``."""

    def make(ctx: ProviderContext) -> Provider:
        p = ScriptedProvider(ctx, **kw)
        p.name = ctx.config.name  # type: ignore[misc]
        registry[ctx.config.name] = p
        return p

    return make


class CountingBudget:
    """A provider's budget for client tests: records every spend; raises BudgetExhausted once
    ``allow`` spends were made."""

    def __init__(self, allow: int | None = None, provider: str = "test") -> None:
        self.spent = 0
        self.allow = allow
        self.provider = provider

    async def spend(self) -> None:
        if self.allow is not None and self.spent >= self.allow:
            raise BudgetExhausted(self.provider, retry_at=1_767_229_200.0)
        self.spent += 1


def make_job(provider: str, size: str | None, system: str = "UK", sku: str = "DD1391-100",
             job_id: str | None = None) -> Job:
    """A claimed (running) job as the worker hands it to a client."""
    return Job(id=job_id or uuid.uuid4().hex, user_id=None, provider=provider, sku=sku,
               size=size, size_system=system, priority=100, status="running",
               error_message=None, retry_count=0, started_at=None, completed_at=None,
               dedupe_key=dedupe_key(provider, sku, size_key(size, system)),
               created_at="2026-01-01T00:00:00.000Z", next_attempt_at=None)


BENCH_EXTRA = ("huey", "matplotlib", "pyinstrument")


def require_bench_extra() -> None:
    """Skip a bench test when the bench extra is missing; fail instead under
    MARKETD_REQUIRE_SERVICES=1 (what .ci/run sets: CI must run them)."""
    import importlib.util
    import os

    import pytest

    missing = [m for m in BENCH_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"the bench extra is not installed (missing {', '.join(missing)})"
        if os.environ.get("MARKETD_REQUIRE_SERVICES") == "1":
            pytest.fail(reason + " (MARKETD_REQUIRE_SERVICES=1): pip install '.[bench]'")
        pytest.skip(reason + ": pip install '.[bench]'")
