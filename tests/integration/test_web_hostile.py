"""Hostile input to the HTTP API: every bad request gets a 4xx JSON answer naming the field and
changes nothing; no input ever gets a 500 (INTERFACE.md §4). A real loopback server, a real
SQLite file, a FakeClock and scripted providers; nothing of marketd is mocked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.daemon import Daemon
from marketd.errors import NotFound
from marketd.web import create_app
from tests.support import ScriptedProvider, make_config, raising, scripted_factory

MIB = 1024 * 1024
GOOD = {"provider": "stockx", "sku": "DD1391-100", "size": "10"}


@dataclass
class Api:
    daemon: Daemon
    client: TestClient[Any, Any]
    registry: dict[str, ScriptedProvider]

    async def rows(self) -> int:
        counts = await self.daemon.store.job_counts()
        return sum(n for by_status in counts.values() for n in by_status.values())


async def start(tmp_path: Path, clock: FakeClock) -> Api:
    config = make_config(tmp_path, scheduler={"manual_wake_ms": 60000})
    registry: dict[str, ScriptedProvider] = {}
    factory = scripted_factory(registry)
    daemon = await create_daemon(config, clock=clock,
                                 clients={"stockx": factory, "alias": factory, "ebay": factory})
    client = TestClient(TestServer(create_app(daemon), host="127.0.0.1"))
    try:
        await client.start_server()
    except BaseException:
        await daemon.close()
        raise
    return Api(daemon, client, registry)


async def stop(api: Api) -> None:
    await api.client.close()
    await api.daemon.close()


@pytest.fixture
async def api(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Api]:
    a = await start(tmp_path, clock)
    # one existing job, so that "changes nothing" also covers raising its priority
    resp = await a.client.post("/enqueue", json={**GOOD, "priority": 100})
    assert resp.status == 202
    yield a
    await stop(a)


async def snapshot(api: Api) -> list[tuple[str, str, int, str]]:
    jobs = await api.daemon.store.list_jobs(limit=1000)
    return sorted((j.id, j.dedupe_key, j.priority, j.status) for j in jobs)


async def post_raw(api: Api, body: bytes | str) -> tuple[int, Any]:
    resp = await api.client.post("/enqueue", data=body,
                                 headers={"Content-Type": "application/json"})
    text = await resp.text()
    assert resp.content_type == "application/json", text[:200]
    return resp.status, json.loads(text)


def job(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict(GOOD)
    for key, value in over.items():
        if value is _DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


_DROP = object()
NESTED = "[" * 100_000 + "]" * 100_000

BAD_BODIES: list[tuple[str, str | bytes, str | tuple[str, ...] | None]] = [
    # (id, body, expected field or the acceptable fields)
    ("malformed", '{"provider": "stockx", "sku":', None),
    ("trailing-garbage", json.dumps(GOOD) + "}", None),
    ("single-quotes", "{'provider': 'stockx', 'sku': 'X'}", None),
    ("array", json.dumps([GOOD]), None),
    ("empty-array", "[]", None),
    ("number", "42", None),
    ("string", '"stockx"', None),
    ("null", "null", None),
    ("true", "true", None),
    ("empty", "", None),
    ("whitespace-only", " \n\t ", None),
    ("bad-utf8", b'{"provider": "stockx", "sku": "\xff\xfe"}', None),
    ("top-nan", "NaN", None),
    ("nested-lists", NESTED, None),
    ("nested-objects", '{"a":' * 100_000 + "1" + "}" * 100_000, None),
    ("nested-in-value", json.dumps(GOOD)[:-1] + ', "size_system": ' + NESTED + "}", None),
    ("huge-int", json.dumps(GOOD)[:-1] + ', "priority": ' + "9" * 5000 + "}", None),
    ("unknown-provider", json.dumps(job(provider="nike")), "provider"),
    ("provider-null", json.dumps(job(provider=None)), "provider"),
    ("provider-missing", json.dumps(job(provider=_DROP)), "provider"),
    ("provider-number", json.dumps(job(provider=1)), "provider"),
    ("sku-empty", json.dumps(job(sku="")), "sku"),
    ("sku-whitespace", json.dumps(job(sku=" \t\n ")), "sku"),
    ("sku-65", json.dumps(job(sku="A" * 65)), "sku"),
    ("sku-65-after-trim", json.dumps(job(sku=" " + "A" * 65 + " ")), "sku"),
    ("sku-script", json.dumps(job(sku="<script>alert(1)</script>")), "sku"),
    ("sku-semicolon", json.dumps(job(sku="DD1391-100; DROP TABLE market_jobs")), "sku"),
    ("sku-quote", json.dumps(job(sku="DD1391'--")), "sku"),
    ("sku-accent", json.dumps(job(sku="DD1391-100é")), "sku"),
    ("sku-fullwidth", json.dumps(job(sku="ＤＤ1391-100")), "sku"),
    ("sku-unicode-hyphen", json.dumps(job(sku="DD1391\u2010100")), "sku"),
    ("sku-emoji", json.dumps(job(sku="DD1391-100\U0001f45f")), "sku"),
    ("sku-nul", json.dumps(job(sku="DD1391\u0000100")), "sku"),
    ("sku-number", json.dumps(job(sku=1391100)), "sku"),
    ("sku-null", json.dumps(job(sku=None)), "sku"),
    ("sku-missing", json.dumps(job(sku=_DROP)), "sku"),
    ("sku-list", json.dumps(job(sku=["DD1391-100"])), "sku"),
    ("size-abc", json.dumps(job(size="abc")), "size"),
    ("size-quarter", json.dumps(job(size="10.25")), "size"),
    ("size-negative", json.dumps(job(size="-1")), "size"),
    ("size-17-chars", json.dumps(job(size="1" * 17)), "size"),
    ("size-true", json.dumps(job(size=True)), "size"),
    ("size-object", json.dumps(job(size={})), "size"),
    ("size-list", json.dumps(job(size=["10"])), "size"),
    ("size-empty", json.dumps(job(size="")), "size"),
    ("size-two-suffixes", json.dumps(job(size="10 W W")), "size"),
    ("size-three-digits", json.dumps(job(size="100")), "size"),
    ("size-float-quarter", json.dumps(job(size=10.25)), "size"),
    ("size-nan", '{"provider": "stockx", "sku": "X", "size": NaN}', "size"),
    ("size-infinity", '{"provider": "stockx", "sku": "X", "size": Infinity}', "size"),
    ("size-minus-infinity", '{"provider": "stockx", "sku": "X", "size": -Infinity}', "size"),
    ("size-system-jp", json.dumps(job(size_system="JP")), "size_system"),
    ("size-system-number", json.dumps(job(size_system=1)), "size_system"),
    ("priority-negative", json.dumps(job(priority=-1)), "priority"),
    ("priority-1001", json.dumps(job(priority=1001)), "priority"),
    ("priority-name", json.dumps(job(priority="urgent")), "priority"),
    ("priority-true", json.dumps(job(priority=True)), "priority"),
    ("priority-float", json.dumps(job(priority=1.5)), "priority"),
    ("priority-string-negative", json.dumps(job(priority="-1")), "priority"),
    ("priority-list", json.dumps(job(priority=[200])), "priority"),
    ("priority-nan", '{"provider": "stockx", "sku": "X", "priority": NaN}', "priority"),
    ("priority-infinity", '{"provider": "stockx", "sku": "X", "priority": Infinity}',
     "priority"),
    ("priority-1e400", '{"provider": "stockx", "sku": "X", "priority": 1e400}', "priority"),
    ("user-id-number", json.dumps(job(user_id=5)), "user_id"),
    ("user-id-empty", json.dumps(job(user_id="")), "user_id"),
    ("user-id-129", json.dumps(job(user_id="u" * 129)), "user_id"),
    ("unknown-key", json.dumps(job(colour="white")), "colour"),
    ("unknown-key-proto", json.dumps(job(__proto__={})), "__proto__"),
    ("jobs-1001", json.dumps({"jobs": [job(sku=f"SKU-{i}") for i in range(1001)]}), "jobs"),
    ("jobs-empty", json.dumps({"jobs": []}), "jobs"),
    ("jobs-not-list", json.dumps({"jobs": GOOD}), "jobs"),
    ("jobs-item-3-size", json.dumps({"jobs": [job(sku=f"NEW-{i}") for i in range(3)]
                                     + [job(sku="NEW-3", size="abc")]}), "jobs[3].size"),
    ("jobs-item-1-provider", json.dumps({"jobs": [job(sku="NEW-0"), job(provider="x")]}),
     "jobs[1].provider"),
    ("jobs-item-2-not-object", json.dumps({"jobs": [job(sku="NEW-0"), job(sku="NEW-1"), 7]}),
     "jobs[2]"),
    ("jobs-item-0-unknown-key", json.dumps({"jobs": [job(evil=1)]}), "jobs[0].evil"),
    ("jobs-extra-key", json.dumps({"jobs": [job(sku="NEW-0")], "provider": "stockx"}),
     "provider"),
    ("items-bad-size-uk", json.dumps({"items": [{"sku": "NEW-0", "size_uk": "9"},
                                                {"sku": "NEW-1", "size_uk": "nine"}],
                                      "provider": "stockx"}), "items[1].size_uk"),
    ("items-no-provider", json.dumps({"items": [{"sku": "NEW-0", "size_uk": "9"}]}),
     ("items[0].provider", "provider")),
    ("items-bad-priority", json.dumps({"items": [{"sku": "NEW-0"}], "provider": "stockx",
                                       "priority": 5000}), ("items[0].priority", "priority")),
    ("items-unknown-outer-key", json.dumps({"items": [{"sku": "NEW-0"}], "provider": "stockx",
                                            "force": True}), "force"),
    ("refresh-with-priority", json.dumps({"refresh": [{"sku": "NEW-0"}], "provider": "stockx",
                                          "priority": 1}), "priority"),
    ("refresh-bad-sku", json.dumps({"refresh": [{"sku": "NEW-0"}, {"sku": "<b>"}],
                                    "provider": "stockx"}), "refresh[1].sku"),
]


@pytest.mark.parametrize(("body", "field"), [pytest.param(b, f, id=i) for i, b, f in BAD_BODIES])
async def test_bad_enqueue_is_400_with_field_and_changes_nothing(
        api: Api, body: str | bytes, field: str | tuple[str, ...] | None) -> None:
    """Bad input gets 400 {"error", "field"} naming the field, and stores nothing."""
    before = await snapshot(api)
    status, data = await post_raw(api, body)
    assert status == 400, data
    assert isinstance(data.get("error"), str) and data["error"]
    assert "field" in data
    if isinstance(field, tuple):
        assert data["field"] in field
    else:
        assert data["field"] == field
    assert await snapshot(api) == before


async def test_bad_batch_stores_none_of_it(api: Api) -> None:
    """A batch with one bad job is refused whole: no new job, no priority raised."""
    before = await snapshot(api)
    batch = [job(priority=999), job(sku="NEW-1"), job(sku="NEW-2"), job(sku="NEW-3", size="abc")]
    status, data = await post_raw(api, json.dumps({"jobs": batch}))
    assert (status, data["field"]) == (400, "jobs[3].size")
    assert await snapshot(api) == before
    [existing] = before
    assert existing[2] == 100


async def test_batch_of_1000_is_accepted(api: Api) -> None:
    """The limit is 1000 jobs: exactly 1000 are accepted in one request."""
    batch = [job(sku=f"SKU-{i}") for i in range(1000)]
    status, data = await post_raw(api, json.dumps({"jobs": batch}))
    assert status == 202
    assert len(data["jobs"]) == 1000
    assert await api.rows() == 1001


async def test_sku_of_64_is_accepted(api: Api) -> None:
    """The SKU limit is 64 characters after trimming: 64 with padding is accepted."""
    status, data = await post_raw(api, json.dumps(job(sku="  " + "a" * 64 + "  ")))
    assert status == 202
    assert data["jobs"][0]["dedupe_key"] == f"stockx|{'A' * 64}|10"


async def test_body_over_1_mib_is_413(api: Api) -> None:
    """A body over 1 MiB gets 413 (even valid JSON) and stores nothing."""
    text = json.dumps(job(sku="BIG-1"))
    body = text[:-1] + " " * (MIB + 1 - len(text)) + "}"
    assert len(body) == MIB + 1
    before = await snapshot(api)
    status, data = await post_raw(api, body)
    assert status == 413
    assert data["error"]
    assert await snapshot(api) == before


async def test_body_of_exactly_1_mib_is_not_413(api: Api) -> None:
    """A body of exactly 1 MiB is not 'over 1 MiB': it is read and accepted."""
    text = json.dumps(job(sku="BIG-1"))
    body = text[:-1] + " " * (MIB - len(text)) + "}"
    assert len(body) == MIB
    status, _ = await post_raw(api, body)
    assert status == 202


async def test_chunked_body_over_1_mib_is_413(api: Api) -> None:
    """A chunked body (no Content-Length) over 1 MiB also gets 413."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"provider": "stockx", "sku": "BIG-2", "pad": "'
        for _ in range(12):
            yield b"x" * 100_000
        yield b'"}'

    resp = await api.client.post("/enqueue", data=chunks())
    assert resp.status == 413
    assert "error" in await resp.json()
    assert await api.rows() == 1


async def test_page_escapes_provider_error_text(api: Api) -> None:
    """A failed job's error text from a provider is HTML-escaped on the status page."""
    api.registry["stockx"].default = raising(
        NotFound("stockx", "not found on stockx: <script>alert(1)</script>"))
    await api.daemon.scheduler.run_once("test")
    resp = await api.client.get("/")
    html = await resp.text()
    assert "not found on stockx" in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize("query", ["status=bogus", "provider=nike", "limit=0", "limit=-1",
                                   "limit=abc", "limit=1001", "offset=-5", "limit=1e3"])
async def test_bad_jobs_query_is_400(api: Api, query: str) -> None:
    """GET /jobs with a bad filter answers 400 naming the parameter."""
    resp = await api.client.get(f"/jobs?{query}")
    assert resp.status == 400
    data = await resp.json()
    assert data["field"] == query.split("=")[0]


@pytest.mark.parametrize("query", ["provider=nike", "sku=%3Cscript%3E", "size=abc",
                                   "size=10&size_system=JP", "limit=0"])
async def test_bad_prices_query_is_400(api: Api, query: str) -> None:
    """GET /prices with a bad filter answers 400 naming the parameter."""
    resp = await api.client.get(f"/prices?{query}")
    assert resp.status == 400
    data = await resp.json()
    assert data["field"] == query.split("&")[-1].split("=")[0]


@pytest.mark.parametrize("body", ["[]", "42", '{"provider": "nike"}', '{"provider": ',
                                  '{"provider": 7}'])
async def test_bad_reset_failed_is_400_and_changes_nothing(api: Api, body: str) -> None:
    """POST /reset-failed with a bad body answers 400 and resets nothing."""
    api.registry["stockx"].default = raising(NotFound("stockx", "not found on stockx"))
    await api.daemon.scheduler.run_once("test")
    resp = await api.client.post("/reset-failed", data=body,
                                 headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert "error" in await resp.json()
    assert (await api.daemon.store.job_counts())["stockx"] == {"failed": 1}


# ---- once bugs (each got a 500 before its fix) ---------------------------------------------------


async def test_user_id_with_lone_surrogate_is_not_500(api: Api) -> None:
    """A user_id with a lone surrogate (valid JSON, not encodable text) is refused with 400."""
    before = await snapshot(api)
    status, data = await post_raw(api, '{"provider": "stockx", "sku": "SUR-1", '
                                       '"user_id": "\\ud800"}')
    assert await snapshot(api) == before
    assert status == 400, data
    assert data["field"] == "user_id"


@pytest.mark.parametrize("path", ["/jobs?limit=%C2%B2", "/jobs?offset=%C2%B2",
                                  "/prices?limit=%C2%B2"])
async def test_superscript_digit_in_limit_is_not_500(api: Api, path: str) -> None:
    """A limit/offset of '²' (a Unicode digit that int() refuses) answers 400, not 500."""
    resp = await api.client.get(path)
    assert resp.status == 400


# ---- property-based: arbitrary input never gets a 5xx ------------------------------------------

TEXT = st.text(max_size=20)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | TEXT)
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)

SKU_CHARS = st.sampled_from("ABCDEFXYZabcxyz0123456789 -./_<;é\t")
PLAUSIBLE_VALUE = (
    st.sampled_from(["stockx", "ALIAS", "eBay", "nike", "", " stockx "])
    | st.text(SKU_CHARS, max_size=70)
    | st.sampled_from(["10", "10.5", "42 2/3", "8.5W", "4Y", "abc", "-1", "10.25", "0", "99"])
    | st.sampled_from(["manual", "hot", "background", "urgent", "UK", "US", "EU", "JP"])
    | st.integers(-5, 1005) | st.floats(allow_nan=True, allow_infinity=True)
    | st.none() | st.booleans()
)
PLAUSIBLE_KEYS = st.sampled_from(["provider", "sku", "size", "size_uk", "size_system",
                                  "priority", "user_id", "colour"])
VALID_SKU = st.text(st.sampled_from("ABCXYZabcxyz0189 -./_"), min_size=1, max_size=12).filter(
    str.strip)
VALID_FIELDS = {
    "size": st.sampled_from(["10", "10.5", "42 2/3", "8.5W", "4y", "13C", "0"])
    | st.integers(1, 15) | st.none(),
    "size_system": st.sampled_from(["UK", "us", "Eu"]),
    "priority": st.sampled_from(["manual", "hot", "background", "0", "1000"])
    | st.integers(0, 1000),
    "user_id": TEXT.filter(bool) | st.none(),
}
VALID_JOB = st.fixed_dictionaries(
    {"provider": st.sampled_from(["stockx", "ALIAS", "eBay"]), "sku": VALID_SKU},
    optional=VALID_FIELDS)
# a valid job with one key replaced (or added) by something plausible or arbitrary
MUTATED_JOB = st.builds(lambda j, k, v: {**j, k: v}, VALID_JOB, PLAUSIBLE_KEYS,
                        PLAUSIBLE_VALUE | ANY_JSON)
SOME_JOB = VALID_JOB | MUTATED_JOB
ITEM = st.fixed_dictionaries({"sku": VALID_SKU},
                             optional={"size_uk": VALID_FIELDS["size"], "size": st.just("9")})
SOME_ITEM = ITEM | st.builds(lambda j, k, v: {**j, k: v}, ITEM, PLAUSIBLE_KEYS,
                             PLAUSIBLE_VALUE | ANY_JSON)
OUTER = st.fixed_dictionaries({"provider": st.sampled_from(["stockx", "alias", "ebay"])},
                              optional={"priority": VALID_FIELDS["priority"]})
PLAUSIBLE_BODY = (
    SOME_JOB
    | st.builds(lambda jobs: {"jobs": jobs}, st.lists(SOME_JOB | ANY_JSON, max_size=5))
    | st.builds(lambda jobs: {"jobs": jobs}, st.lists(VALID_JOB, min_size=1, max_size=5))
    | st.builds(lambda items, outer: {"items": items, **outer},
                st.lists(SOME_ITEM, max_size=5), OUTER | SOME_JOB)
    | st.builds(lambda items, outer: {"refresh": items, **outer},
                st.lists(SOME_ITEM, max_size=5), OUTER | SOME_JOB)
)
ANY_BODY = (
    st.builds(lambda v: json.dumps(v, allow_nan=True).encode(), ANY_JSON | PLAUSIBLE_BODY)
    | st.binary(max_size=300)
)


class LoopServer:
    """A daemon and loopback server on one event loop that a sync hypothesis test drives."""

    def __init__(self, tmp_path: Path) -> None:
        self.runner = asyncio.Runner()
        self.api = self.runner.run(start(tmp_path, FakeClock()))

    def post(self, body: bytes) -> tuple[int, str, str, int, int]:
        async def go() -> tuple[int, str, str, int, int]:
            before = await self.api.rows()
            resp = await self.api.client.post("/enqueue", data=body,
                                              headers={"Content-Type": "application/json"})
            text = await resp.text()
            return resp.status, resp.content_type, text, before, await self.api.rows()

        return self.runner.run(go())

    def close(self) -> None:
        try:
            self.runner.run(stop(self.api))
        finally:
            self.runner.close()


@pytest.fixture
def loop_server(tmp_path: Path) -> Iterator[LoopServer]:
    server = LoopServer(tmp_path)
    yield server
    server.close()


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=ANY_BODY)
def test_arbitrary_bodies_never_get_5xx(loop_server: LoopServer, body: bytes) -> None:
    """Any body gets 202, 400 or 413 as JSON (400 with error); jobs grow only on 202."""
    status, content_type, text, before, after = loop_server.post(body)
    event(f"HTTP {status}")
    assert status in (202, 400, 413), (status, text[:300])
    assert content_type == "application/json"
    data = json.loads(text)
    if status == 202:
        assert after >= before
        assert isinstance(data["jobs"], list) and data["jobs"]
    else:
        assert after == before
        assert isinstance(data["error"], str) and data["error"]
        assert "field" in data
