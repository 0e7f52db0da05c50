"""The HTTP API, tested from INTERFACE.md §4 and §6 against a real aiohttp server on loopback,
a real SQLite file, a FakeClock and scripted providers behind the provider seam."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.daemon import Daemon
from marketd.errors import NotFound
from marketd.models import Job
from marketd.providers.base import FetchResult
from marketd.web import create_app
from tests.support import ScriptedProvider, make_config, price_for, raising, scripted_factory

API_TOKEN = "test-api-token"
CRON_SECRET = "test-cron-secret"


@dataclass
class Api:
    daemon: Daemon
    client: TestClient[Any, Any]
    registry: dict[str, ScriptedProvider]
    clock: FakeClock

    async def post(self, path: str, body: Any = None, *, status: int | None = None,
                   headers: dict[str, str] | None = None) -> Any:
        resp = await self.client.post(path, json=body, headers=headers)
        data = await resp.json()
        if status is not None:
            assert resp.status == status, data
        return data

    async def get(self, path: str, *, status: int = 200) -> Any:
        resp = await self.client.get(path)
        data = await resp.json()
        assert resp.status == status, data
        return data

    async def enqueue(self, body: Any, *, status: int = 202) -> list[dict[str, Any]]:
        data = await self.post("/enqueue", body, status=status)
        jobs: list[dict[str, Any]] = data["jobs"]
        return jobs

    async def total_jobs(self) -> int:
        counts = await self.daemon.store.job_counts()
        return sum(n for by_status in counts.values() for n in by_status.values())


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakeApi]:
    """Build a daemon (config sections as keyword arguments) behind a real loopback server."""
    made: list[Api] = []

    async def make(**sections: Any) -> Api:
        # a manual enqueue wakes the scheduler after manual_wake_ms of real time; keep that out
        # of the way so every run in these tests is one the test asked for
        sections["scheduler"] = {"manual_wake_ms": 60000, **sections.get("scheduler", {})}
        config = make_config(tmp_path / f"d{len(made)}", **sections)
        registry: dict[str, ScriptedProvider] = {}
        factory = scripted_factory(registry)
        daemon = await create_daemon(config, clock=clock,
                                     clients={"stockx": factory, "alias": factory,
                                              "ebay": factory})
        client = TestClient(TestServer(create_app(daemon), host="127.0.0.1"))
        api = Api(daemon, client, registry, clock)
        made.append(api)
        await client.start_server()
        return api

    yield make
    for api in reversed(made):
        await api.client.close()
        await api.daemon.close()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


def fresh_answer(clock: FakeClock, ask: int | None = 9600) -> Callable[[str, Sequence[Job]], Any]:
    """A provider answer whose prices are fetched 'now' (the default answer dates them 1970)."""
    return lambda sku, jobs: FetchResult(
        outcomes={j.id: price_for(j, ask, clock.now()) for j in jobs})


# ---- POST /enqueue ---------------------------------------------------------------------------


async def test_enqueue_single_job_answers_202_with_job(api: Api) -> None:
    """One job answers 202 with id, dedupe_key, status, priority and deduplicated."""
    resp = await api.client.post("/enqueue", json={"provider": "stockx", "sku": "DD1391-100",
                                                   "size": "10"})
    assert resp.status == 202
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert list(body) == ["jobs"]
    [job] = body["jobs"]
    assert set(job) == {"id", "dedupe_key", "status", "priority", "deduplicated"}
    assert isinstance(job["id"], str) and job["id"]
    assert job["dedupe_key"] == "stockx|DD1391-100|10"
    assert job["status"] == "pending"
    assert job["priority"] == 100
    assert job["deduplicated"] is False
    stored = await api.daemon.store.get_job(job["id"])
    assert stored is not None and stored.dedupe_key == "stockx|DD1391-100|10"


async def test_enqueue_normalises_sku_and_provider_case(api: Api) -> None:
    """`dd1391-100` on `StockX` and `DD1391-100` on `stockx` are one dedupe key."""
    [a] = await api.enqueue({"provider": "StockX", "sku": "dd1391-100", "size": "10"})
    [b] = await api.enqueue({"provider": "stockx", "sku": "DD1391-100", "size": "10"})
    assert a["dedupe_key"] == b["dedupe_key"] == "stockx|DD1391-100|10"
    assert a["id"] == b["id"]
    assert await api.total_jobs() == 1


async def test_duplicate_enqueue_returns_same_job_and_raises_priority(api: Api) -> None:
    """A duplicate returns the existing id, deduplicated true, priority raised to the higher."""
    job = {"provider": "stockx", "sku": "DD1391-100", "size": "10"}
    [first] = await api.enqueue({**job, "priority": 120})
    [higher] = await api.enqueue({**job, "priority": 180})
    assert higher["id"] == first["id"]
    assert higher["deduplicated"] is True
    assert higher["priority"] == 180
    [lower] = await api.enqueue({**job, "priority": 10})
    assert lower["id"] == first["id"] and lower["deduplicated"] is True
    assert lower["priority"] == 180  # never lowered
    stored = await api.daemon.store.get_job(first["id"])
    assert stored is not None and stored.priority == 180
    assert await api.total_jobs() == 1


async def test_enqueue_jobs_batch_answers_in_order(api: Api) -> None:
    """`{"jobs": [...]}` answers one entry per job, in the order given."""
    batch = [{"provider": "ebay", "sku": "ZZ-9", "size": "9"},
             {"provider": "stockx", "sku": "AA-1", "size": "11"},
             {"provider": "alias", "sku": "MM-5", "size": "7.5", "priority": "hot"}]
    jobs = await api.enqueue({"jobs": batch})
    assert [j["dedupe_key"] for j in jobs] == ["ebay|ZZ-9|9", "stockx|AA-1|11", "alias|MM-5|7.5"]
    assert [j["priority"] for j in jobs] == [100, 100, 150]
    assert len({j["id"] for j in jobs}) == 3
    assert await api.total_jobs() == 3


async def test_enqueue_items_shape_uses_size_uk_and_default_priority(api: Api) -> None:
    """`items` with `size_uk` (enqueueForItems) enqueues each item at background priority."""
    jobs = await api.enqueue({"items": [{"sku": "DD1391-100", "size_uk": "9"},
                                        {"sku": "DD1391-100", "size_uk": "10.5"}],
                              "provider": "alias"})
    assert [j["dedupe_key"] for j in jobs] == ["alias|DD1391-100|9", "alias|DD1391-100|10.5"]
    assert all(j["priority"] == 100 and j["status"] == "pending" for j in jobs)


async def test_enqueue_items_shape_takes_given_priority(api: Api) -> None:
    """`items` with an outer `priority` gives every item that priority."""
    jobs = await api.enqueue({"items": [{"sku": "AB-1", "size_uk": "8"}, {"sku": "AB-2"}],
                              "provider": "stockx", "priority": 150})
    assert [j["priority"] for j in jobs] == [150, 150]
    assert jobs[1]["dedupe_key"] == "stockx|AB-2|"


async def test_enqueue_refresh_shape_is_manual_priority(api: Api) -> None:
    """`refresh` (enqueueRefresh) enqueues at priority 200."""
    jobs = await api.enqueue({"refresh": [{"sku": "DD1391-100", "size": "10"},
                                          {"sku": "DD1391-101", "size": "11"}],
                              "provider": "stockx"})
    assert [j["priority"] for j in jobs] == [200, 200]
    assert [j["dedupe_key"] for j in jobs] == ["stockx|DD1391-100|10", "stockx|DD1391-101|11"]


@pytest.mark.parametrize(("name", "value"), [("manual", 200), ("hot", 150),
                                             ("background", 100), ("MANUAL", 200)])
async def test_enqueue_priority_names(api: Api, name: str, value: int) -> None:
    """Priority names manual, hot and background map to 200, 150 and 100."""
    [job] = await api.enqueue({"provider": "stockx", "sku": "DD1391-100", "priority": name})
    assert job["priority"] == value


async def test_enqueue_eu_size_system_prefixes_key(api: Api) -> None:
    """`size_system` EU gives the key `stockx|SKU|EU 40`, distinct from UK 40."""
    [eu] = await api.enqueue({"provider": "stockx", "sku": "DD1391-100", "size": "40",
                              "size_system": "eu"})
    [uk] = await api.enqueue({"provider": "stockx", "sku": "DD1391-100", "size": "40"})
    assert eu["dedupe_key"] == "stockx|DD1391-100|EU 40"
    assert uk["dedupe_key"] == "stockx|DD1391-100|40"
    assert eu["id"] != uk["id"]


async def test_enqueue_null_size_is_allowed(api: Api) -> None:
    """A size-less product (size null or absent) is one job with an empty size in its key."""
    [a] = await api.enqueue({"provider": "ebay", "sku": "BOX-LOGO", "size": None})
    [b] = await api.enqueue({"provider": "ebay", "sku": "BOX-LOGO"})
    assert a["dedupe_key"] == "ebay|BOX-LOGO|"
    assert b["id"] == a["id"] and b["deduplicated"] is True


async def test_fresh_price_answers_background_enqueue(api: Api) -> None:
    """With a fresh stored price a background enqueue answers `fresh` and creates no job."""
    api.registry["stockx"].default = fresh_answer(api.clock)
    job = {"provider": "stockx", "sku": "DD1391-100", "size": "10"}
    await api.enqueue(job)
    await api.daemon.scheduler.run_once("test")
    assert await api.total_jobs() == 1
    api.clock.advance(60)
    [again] = await api.enqueue({**job, "priority": "background"})
    assert again["status"] == "fresh"
    assert again["dedupe_key"] == "stockx|DD1391-100|10"
    assert await api.total_jobs() == 1
    assert await api.daemon.store.list_jobs(status="pending") == []


async def test_fresh_price_does_not_stop_manual_enqueue(api: Api) -> None:
    """With a fresh stored price a manual enqueue still creates a pending job."""
    api.registry["stockx"].default = fresh_answer(api.clock)
    job = {"provider": "stockx", "sku": "DD1391-100", "size": "10"}
    await api.enqueue(job)
    await api.daemon.scheduler.run_once("test")
    api.clock.advance(60)
    [manual] = await api.enqueue({**job, "priority": "manual"})
    assert manual["status"] == "pending" and manual["id"]
    assert manual["deduplicated"] is False
    assert await api.total_jobs() == 2


# ---- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", API_TOKEN, "Bearer ",
                                  f"Basic {API_TOKEN}"])
async def test_enqueue_without_right_bearer_is_401(make_api: MakeApi, auth: str | None) -> None:
    """With api_token set, a missing or wrong Bearer token gets 401 and stores nothing."""
    api = await make_api(security={"api_token": API_TOKEN})
    headers = {"Authorization": auth} if auth is not None else None
    resp = await api.client.post("/enqueue", json={"provider": "stockx", "sku": "DD1391-100"},
                                 headers=headers)
    assert resp.status == 401
    assert "error" in await resp.json()
    assert await api.total_jobs() == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_enqueue_with_right_bearer_is_202(make_api: MakeApi, scheme: str) -> None:
    """With api_token set, the right Bearer token gets 202 (the scheme is case-insensitive)."""
    api = await make_api(security={"api_token": API_TOKEN})
    data = await api.post("/enqueue", {"provider": "stockx", "sku": "DD1391-100"}, status=202,
                          headers={"Authorization": f"{scheme} {API_TOKEN}"})
    assert data["jobs"][0]["status"] == "pending"
    assert await api.total_jobs() == 1


@pytest.mark.parametrize("path", ["/trigger", "/api/market/scheduler/run", "/reset-failed"])
@pytest.mark.parametrize("secret", [None, "wrong", ""])
async def test_cron_endpoints_need_secret(make_api: MakeApi, path: str,
                                          secret: str | None) -> None:
    """With cron_secret set, /trigger, its alias and /reset-failed refuse a missing/wrong one."""
    api = await make_api(security={"cron_secret": CRON_SECRET})
    await api.enqueue({"provider": "stockx", "sku": "DD1391-100"})
    headers = {"x-cron-secret": secret} if secret is not None else None
    resp = await api.client.post(path, headers=headers)
    assert resp.status == 401
    assert "error" in await resp.json()
    assert await api.daemon.store.recent_runs() == []
    assert (await api.daemon.store.job_counts())["stockx"] == {"pending": 1}


@pytest.mark.parametrize("path", ["/trigger", "/api/market/scheduler/run"])
async def test_trigger_with_secret_runs_and_summarises(make_api: MakeApi, path: str) -> None:
    """With the right secret a trigger answers a JSON summary and processes pending jobs."""
    api = await make_api(security={"cron_secret": CRON_SECRET})
    await api.enqueue({"jobs": [{"provider": "stockx", "sku": "DD1391-100", "size": "10"},
                                {"provider": "alias", "sku": "DD1391-100", "size": "10"}]})
    data = await api.post(path, status=200, headers={"x-cron-secret": CRON_SECRET})
    assert {"selected", "succeeded", "failed", "deferred", "providers"} <= set(data)
    assert (data["selected"], data["succeeded"], data["failed"], data["deferred"]) == (2, 2, 0, 0)
    assert {"stockx", "alias", "ebay"} <= set(data["providers"])
    jobs = (await api.get("/jobs"))["jobs"]
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    assert len(await api.daemon.store.recent_runs()) == 1


async def test_get_endpoints_need_no_secret(make_api: MakeApi) -> None:
    """With both secrets set, the read-only endpoints still answer without them."""
    api = await make_api(security={"cron_secret": CRON_SECRET, "api_token": API_TOKEN})
    for path in ("/status", "/jobs", "/prices"):
        await api.get(path)
    resp = await api.client.get("/")
    assert resp.status == 200


# ---- POST /reset-failed ----------------------------------------------------------------------


async def _fail_everything(api: Api) -> None:
    for name in ("stockx", "alias"):
        api.registry[name].default = raising(NotFound(name, f"not found on {name}"))
    await api.enqueue({"jobs": [{"provider": "stockx", "sku": "GONE-1"},
                                {"provider": "alias", "sku": "GONE-2"},
                                {"provider": "alias", "sku": "GONE-3"}]})
    await api.daemon.scheduler.run_once("test")
    assert len(await api.daemon.store.list_jobs(status="failed")) == 3


async def test_reset_failed_moves_failed_to_pending(api: Api) -> None:
    """POST /reset-failed moves every failed job back to pending."""
    await _fail_everything(api)
    await api.post("/reset-failed", status=200)
    jobs = (await api.get("/jobs"))["jobs"]
    assert sorted(j["status"] for j in jobs) == ["pending"] * 3
    assert all(j["retry_count"] == 0 for j in jobs)


async def test_reset_failed_for_one_provider(api: Api) -> None:
    """`{"provider": "alias"}` resets only Alias's failed jobs."""
    await _fail_everything(api)
    await api.post("/reset-failed", {"provider": "alias"}, status=200)
    counts = await api.daemon.store.job_counts()
    assert counts["alias"] == {"pending": 2}
    assert counts["stockx"] == {"failed": 1}


# ---- GET /status, /jobs, /prices -------------------------------------------------------------


async def test_status_shape(api: Api) -> None:
    """GET /status has budgets per provider, jobs by provider and status, and recent runs."""
    await api.enqueue({"jobs": [{"provider": "stockx", "sku": "DD1391-100", "size": "10"},
                                {"provider": "ebay", "sku": "DD1391-100", "size": "10"}]})
    await api.daemon.scheduler.run_once("test")
    await api.enqueue({"provider": "alias", "sku": "AB-1"})
    data = await api.get("/status")
    assert set(data["budgets"]) == {"stockx", "alias", "ebay"}
    for name, limit in (("stockx", 100), ("alias", 200), ("ebay", 150)):
        budget = data["budgets"][name]
        assert budget["rate_limit"] == limit
        assert isinstance(budget["limits"], list) and budget["limits"]
        assert budget["used"] == (1 if name != "alias" else 0)
    by_provider = data["jobs"]["by_provider"]
    assert by_provider["stockx"]["completed"] == 1
    assert by_provider["ebay"]["completed"] == 1
    assert by_provider["alias"]["pending"] == 1
    assert set(by_provider["alias"]) >= {"pending", "running", "completed", "failed"}
    [run] = data["recent_runs"]
    assert run["selected"] == 2 and run["succeeded"] == 2


async def test_concurrent_status_requests_share_one_count(api: Api) -> None:
    """Job counts asked for while one runs are that count (one count at a time, however many
    clients poll); a count asked for after it is a new one, which sees later jobs."""
    await api.enqueue({"provider": "alias", "sku": "AB-1"})
    first, second = await asyncio.gather(api.daemon.job_counts(), api.daemon.job_counts())
    assert first is second and first["alias"]["pending"] == 1
    await api.enqueue({"provider": "alias", "sku": "AB-2"})
    third = await api.daemon.job_counts()
    assert third is not first and third["alias"]["pending"] == 2
    statuses = await asyncio.gather(*(api.get("/status") for _ in range(20)))
    assert {s["jobs"]["by_provider"]["alias"]["pending"] for s in statuses} == {2}
    # a caller that goes away does not cancel the count the others share
    gone = asyncio.ensure_future(api.daemon.job_counts())
    stays = asyncio.ensure_future(api.daemon.job_counts())
    await asyncio.sleep(0)
    gone.cancel()
    assert (await stays)["alias"]["pending"] == 2


async def test_jobs_newest_first(api: Api) -> None:
    """GET /jobs lists jobs newest first."""
    for sku in ("OLD-1", "MID-2", "NEW-3"):
        await api.enqueue({"provider": "stockx", "sku": sku})
        api.clock.advance(1)
    jobs = (await api.get("/jobs"))["jobs"]
    assert [j["sku"] for j in jobs] == ["NEW-3", "MID-2", "OLD-1"]


async def test_jobs_filters_status_provider_and_limit(api: Api) -> None:
    """GET /jobs filters by status and provider and honours limit."""
    api.registry["ebay"].default = raising(NotFound("ebay", "not found on ebay"))
    await api.enqueue({"jobs": [{"provider": "ebay", "sku": "GONE-1"},
                                {"provider": "alias", "sku": "AB-1"}]})
    await api.daemon.scheduler.run_once("test")
    for i in range(3):
        api.clock.advance(1)
        await api.enqueue({"provider": "alias", "sku": f"NEW-{i}"})
    failed = (await api.get("/jobs?status=failed"))["jobs"]
    assert [(j["provider"], j["sku"]) for j in failed] == [("ebay", "GONE-1")]
    alias = (await api.get("/jobs?provider=ALIAS"))["jobs"]
    assert [j["sku"] for j in alias] == ["NEW-2", "NEW-1", "NEW-0", "AB-1"]
    page = await api.get("/jobs?provider=alias&status=pending&limit=2")
    assert [j["sku"] for j in page["jobs"]] == ["NEW-2", "NEW-1"]
    # more follow: the answer says where the next page starts, and the last page says none
    assert page["next_offset"] == 2
    assert page["next"] == "/jobs?provider=alias&status=pending&limit=2&offset=2"
    rest = await api.get(page["next"])
    assert [j["sku"] for j in rest["jobs"]] == ["NEW-0"]
    assert rest["next_offset"] is None and rest["next"] is None
    everything = await api.get("/jobs?provider=alias&limit=4")
    assert len(everything["jobs"]) == 4 and everything["next_offset"] is None


async def test_jobs_bad_status_is_400(api: Api) -> None:
    """GET /jobs?status=bogus answers 400 naming the field `status`."""
    data = await api.get("/jobs?status=bogus", status=400)
    assert data["field"] == "status" and data["error"]


async def test_prices_shape_and_formats(api: Api) -> None:
    """GET /prices: decimal-string amounts or null, fetched_at ISO-8601 UTC."""
    api.registry["stockx"].default = fresh_answer(api.clock, 9600)
    api.registry["alias"].default = fresh_answer(api.clock, None)
    await api.enqueue({"jobs": [{"provider": "stockx", "sku": "DD1391-100", "size": "10"},
                                {"provider": "alias", "sku": "DD1391-100", "size": "10"}]})
    await api.daemon.scheduler.run_once("test")
    prices = (await api.get("/prices"))["prices"]
    by_provider = {p["provider"]: p for p in prices}
    assert set(by_provider) == {"stockx", "alias"}
    stockx = by_provider["stockx"]
    # the contract's fields, then the catalog's and the provider's other amounts (issue 15)
    assert set(stockx) == {"provider", "sku", "size", "currency", "lowest_ask", "highest_bid",
                           "last_sale", "fetched_at", "title", "brand", "colourway",
                           "image_url", "extra"}
    assert (stockx["sku"], stockx["size"], stockx["currency"]) == ("DD1391-100", "10", "GBP")
    assert (stockx["lowest_ask"], stockx["highest_bid"], stockx["last_sale"]) == \
        ("96.00", "91.00", None)
    alias = by_provider["alias"]
    assert (alias["lowest_ask"], alias["highest_bid"], alias["last_sale"]) == (None, None, None)
    fetched = datetime.fromisoformat(stockx["fetched_at"].replace("Z", "+00:00"))
    offset = fetched.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert fetched == datetime.fromtimestamp(api.clock.now(), UTC)


async def test_prices_filters(api: Api) -> None:
    """GET /prices filters by provider, sku (any case) and size (with size_system)."""
    for name in ("stockx", "alias"):
        api.registry[name].default = fresh_answer(api.clock)
    await api.enqueue({"jobs": [{"provider": "stockx", "sku": "DD1391-100", "size": "9"},
                                {"provider": "stockx", "sku": "DD1391-100", "size": "10"},
                                {"provider": "stockx", "sku": "DD1391-100", "size": "40",
                                 "size_system": "EU"},
                                {"provider": "alias", "sku": "DD1391-100", "size": "10"},
                                {"provider": "stockx", "sku": "AB-1", "size": "8"}]})
    await api.daemon.scheduler.run_once("test")

    async def keys(query: str) -> set[tuple[str, str, str | None]]:
        prices = (await api.get(f"/prices?{query}"))["prices"]
        return {(p["provider"], p["sku"], p["size"]) for p in prices}

    assert len(await keys("")) == 5
    assert await keys("provider=alias") == {("alias", "DD1391-100", "10")}
    assert await keys("sku=ab-1") == {("stockx", "AB-1", "8")}
    assert await keys("sku=DD1391-100&size=10") == {("stockx", "DD1391-100", "10"),
                                                     ("alias", "DD1391-100", "10")}
    assert await keys("provider=stockx&sku=DD1391-100&size=9") == {
        ("stockx", "DD1391-100", "9")}
    assert await keys("size=40&size_system=EU") == {("stockx", "DD1391-100", "EU 40")}


# ---- health, page, unknown routes ------------------------------------------------------------


async def test_healthz_200_when_scheduler_started(api: Api) -> None:
    """GET /healthz answers 200 {"ok": true} when the scheduler runs and the database answers."""
    scheduler = api.daemon.scheduler
    scheduler.start()
    try:
        data = await api.get("/healthz", status=200)
        assert data["ok"] is True
    finally:
        # with a grace period: the start-up run finishes instead of being cancelled mid-write
        await scheduler.stop(api.daemon.config.scheduler.shutdown_grace_seconds)


async def test_healthz_503_after_scheduler_stopped(api: Api) -> None:
    """GET /healthz answers 503 once the scheduler has been stopped."""
    scheduler = api.daemon.scheduler
    scheduler.start()
    await scheduler.stop(api.daemon.config.scheduler.shutdown_grace_seconds)
    data = await api.get("/healthz", status=503)
    assert data["ok"] is False


async def test_healthz_503_when_scheduler_not_started(api: Api) -> None:
    """GET /healthz answers 503 with ok false when the scheduler is not running."""
    data = await api.get("/healthz", status=503)
    assert data["ok"] is False


async def test_index_is_html_with_providers(api: Api) -> None:
    """GET / answers an HTML page naming every provider."""
    resp = await api.client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    assert "<html" in html.lower()
    for name in ("stockx", "alias", "ebay"):
        assert name in html


async def test_unknown_path_is_404_json(api: Api) -> None:
    """An unknown path answers 404 as JSON, not HTML."""
    for method, path in (("GET", "/nope"), ("POST", "/enqueue/extra"), ("GET", "/../etc/passwd")):
        resp = await api.client.request(method, path)
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert "error" in await resp.json()


async def test_wrong_method_is_405_json(api: Api) -> None:
    """A known path with the wrong method answers 405 as JSON, not HTML."""
    for method, path in (("GET", "/enqueue"), ("DELETE", "/enqueue"), ("PUT", "/trigger"),
                         ("POST", "/status"), ("GET", "/reset-failed")):
        resp = await api.client.request(method, path)
        assert resp.status == 405, (method, path)
        assert resp.headers.get("Allow"), (method, path)  # HTTP requires it on 405
        assert resp.content_type == "application/json"
        assert "error" in await resp.json()
