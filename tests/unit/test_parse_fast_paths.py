"""The enqueue fast paths change nothing but speed: memoised normalisers, the lean parse_job,
the inlined JobSpec keys and the 202 body written without a dict per job."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from aiohttp import web

from marketd import models
from marketd.errors import ValidationError
from marketd.models import (
    EnqueueResult,
    JobSpec,
    Priority,
    dedupe_key,
    normalize_priority,
    normalize_provider,
    normalize_size,
    normalize_size_system,
    normalize_sku,
    normalize_user_id,
    parse_enqueue_body,
    parse_job,
    size_key,
)
from marketd.views import enqueue_json

MEMOS = tuple(r.outcome for r in (models._PROVIDER, models._SKU, models._SIZE,
                                   models._SIZE_SYSTEM, models._PRIORITY, models._USER_ID))

# public normaliser, the rule it memoises, its default field
RULES: list[tuple[Callable[..., Any], Callable[[Any, str], Any], str]] = [
    (normalize_provider, models._check_provider, "provider"),
    (normalize_sku, models._check_sku, "sku"),
    (normalize_size, models._check_size, "size"),
    (normalize_size_system, models._check_size_system, "size_system"),
    (normalize_priority, models._check_priority, "priority"),
    (normalize_user_id, models._check_user_id, "user_id"),
]

# raw values that every rule is fed: good for some, bad for others, and the look-alikes that a
# memo keyed on equality would confuse (1 == 1.0 == True, 0.0 == -0.0) or could not hash
RAW: list[Any] = [
    None, "stockx", " StockX ", "ebay", "nope", "", "   ", "dd1391-100", "  dd1391   100 ",
    "<script>", "x" * 64, "x" * 65, "  " * 70 + "ab", "ДД", "straße", "10", "10.5", " 9 ",
    "42 2/3", "8.5w", "10X", "123", "-1", "10.0", "uk", "EU", "us ", "manual", "HOT",
    "background", "7", "0", "1000", "1001", "urgent", "\ud800", "u" * 128, "u" * 129,
    0, 1, 10, 42, 100, 1000, 1001, -1, 2**40, True, False, 1.0, 10.5, 0.0, -0.0,
    float("nan"), float("inf"), float("-inf"), [], ["10"], {}, {"a": 1}, ("10",), b"10",
]


class Str(str):
    """A str subclass: equal to its plain twin, so it must never share its memo entry."""

    def strip(self, chars: str | None = None) -> str:
        return "stockx"


class Dict(dict[str, Any]):
    """A dict subclass: parsed exactly as a plain dict."""


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What a call did: its value, or its ValidationError's message and field."""
    try:
        return "ok", fn(*args, **kwargs)
    except ValidationError as exc:
        return "error", (type(exc), exc.message, exc.field, str(exc))


@pytest.fixture(autouse=True)
def cold_memos() -> Iterator[None]:
    """Each test starts (and leaves) with empty memos, so "first call" means a miss."""
    for memo in MEMOS:
        memo.cache_clear()
    yield
    for memo in MEMOS:
        memo.cache_clear()


# ---- normalisers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("normalize", "check", "default_field"), RULES,
                         ids=[r[2] for r in RULES])
def test_memoised_normaliser_matches_its_rule_cold_and_warm(
        normalize: Callable[..., Any], check: Callable[[Any, str], Any],
        default_field: str) -> None:
    """For every raw value, the first (miss) and second (hit) call answer as the rule does,
    and an error carries the field the caller gave this time."""
    for _ in range(2):
        for raw in RAW:
            assert outcome(normalize, raw) == outcome(check, raw, default_field)
            for field in ("jobs[7].x", "--flag", ""):
                assert outcome(normalize, raw, field) == outcome(check, raw, field)


@pytest.mark.parametrize(("normalize", "bad", "message"), [
    (normalize_provider, "nope", "provider must be one of stockx, alias, ebay"),
    (normalize_sku, "a;b", "sku may hold only letters, digits, space, '-', '.', '/' and '_'"),
    (normalize_size, "huge", "size is not a size: use a number in halves or thirds "
                             "(10, 10.5, 42 2/3) with an optional W, Y or C suffix"),
    (normalize_size_system, "JP", "size_system must be UK, US or EU"),
    (normalize_priority, 5000, "priority must be between 0 and 1000"),
    (normalize_user_id, "", "user_id must be a string of 1-128 characters or null"),
])
def test_a_remembered_failure_names_each_callers_field(
        normalize: Callable[..., Any], bad: Any, message: str) -> None:
    """A bad value that fails again (from the memo) names the new caller's field, not the
    first caller's, and is a new exception each time."""
    errors = []
    for field in ("a", "b", None, "a"):
        with pytest.raises(ValidationError) as info:
            normalize(bad, field)
        assert (info.value.message, info.value.field) == (message, field)
        errors.append(info.value)
    assert len({id(e) for e in errors}) == len(errors)
    # the three calls after the first were answered by the memo
    assert sum(m.cache_info().hits for m in MEMOS) == 3


def test_lookalike_values_are_never_confused() -> None:
    """True == 1 and 0.0 == -0.0, yet they normalise apart: in either order, each answers as
    its own rule says."""
    for first, second in ((1, True), (True, 1), (0.0, -0.0), (-0.0, 0.0), (1, 1.0), (1.0, 1)):
        for memo in MEMOS:
            memo.cache_clear()
        for normalize, check, field in RULES:
            for raw in (first, second):
                assert outcome(normalize, raw) == outcome(check, raw, field)
    assert normalize_size(0.0) == "0"
    with pytest.raises(ValidationError):
        normalize_size(-0.0)
    assert normalize_priority(1) == 1
    with pytest.raises(ValidationError):
        normalize_priority(True)


def test_str_subclass_is_checked_as_itself() -> None:
    """A str subclass equal to a remembered plain str is not answered from the memo."""
    with pytest.raises(ValidationError):
        normalize_provider("nope")
    assert normalize_provider(Str("nope")) == "stockx"  # its own strip() says stockx
    with pytest.raises(ValidationError):
        normalize_provider("nope")


def test_unhashable_values_are_refused_as_before() -> None:
    """Lists and dicts cannot be memoised; they are refused with the same message and field."""
    for raw in ([], {}, ["10"], {"size": "10"}):
        for _ in range(2):
            with pytest.raises(ValidationError) as info:
                normalize_size(raw, "jobs[2].size")
            assert (info.value.message, info.value.field) == \
                ("size must be a string, a number or null", "jobs[2].size")
            with pytest.raises(ValidationError) as info:
                normalize_sku(raw, "jobs[2].sku")
            assert (info.value.message, info.value.field) == \
                ("sku must be a string", "jobs[2].sku")


def test_a_value_is_remembered_per_rule_not_shared() -> None:
    """The same raw text means different things to different rules."""
    assert normalize_sku("stockx") == "STOCKX"
    assert normalize_provider("stockx") == "stockx"
    assert normalize_sku("manual") == "MANUAL"
    assert normalize_priority("manual") == 200
    assert normalize_size("10") == "10"
    assert normalize_priority("10") == 10
    assert normalize_sku("10") == "10"
    assert normalize_size_system("eu") == "EU"
    with pytest.raises(ValidationError) as info:
        normalize_size("eu")
    assert info.value.field == "size"
    with pytest.raises(ValidationError):
        normalize_provider("10")
    assert normalize_user_id("10") == "10"


def test_long_and_big_values_are_not_held() -> None:
    """Strings over the memo's length and huge ints are checked every time and never kept."""
    long_ok = "  " * 100 + "ab"  # 202 characters that collapse to a valid SKU
    assert normalize_sku(long_ok) == "AB"
    assert normalize_sku(long_ok) == "AB"
    assert models._SKU.outcome.cache_info().currsize == 0
    for _ in range(2):
        with pytest.raises(ValidationError) as info:
            normalize_priority(2**40, "p")
        assert (info.value.message, info.value.field) == \
            ("priority must be between 0 and 1000", "p")
    assert models._PRIORITY.outcome.cache_info().currsize == 0


def test_memos_are_bounded() -> None:
    """A stream of distinct values never grows a memo past its bound."""
    for i in range(models._MEMO_SIZE + 500):
        normalize_sku(f"SKU-{i}")
    info = models._SKU.outcome.cache_info()
    assert info.maxsize == models._MEMO_SIZE
    assert info.currsize == models._MEMO_SIZE


# ---- parse_job -------------------------------------------------------------------------------


def reference_parse_job(raw: Any, field: str = "", *, defaults: Mapping[str, Any] | None = None,
                        size_keys: tuple[str, ...] = ("size",)) -> JobSpec:
    """parse_job as it was before the fast paths, on the un-memoised rules."""
    prefix = f"{field}." if field else ""
    if not isinstance(raw, dict):
        raise ValidationError("a job must be a JSON object", field or None)
    merged: dict[str, Any] = dict(defaults or {})
    merged.update(raw)
    allowed = {"provider", "sku", "priority", "user_id", "size_system", *size_keys}
    for key in raw:
        if key not in allowed:
            raise ValidationError(f"unknown key {key!r}", f"{prefix}{key}")
    if "sku" not in merged:
        raise ValidationError("sku is required", f"{prefix}sku")
    if "provider" not in merged:
        raise ValidationError("provider is required", f"{prefix}provider")
    size_field = next((k for k in size_keys if k in merged), size_keys[0])
    return JobSpec(
        provider=models._check_provider(merged["provider"], f"{prefix}provider"),
        sku=models._check_sku(merged["sku"], f"{prefix}sku"),
        size=models._check_size(merged.get(size_field), f"{prefix}{size_field}"),
        size_system=models._check_size_system(merged.get("size_system"),
                                               f"{prefix}size_system"),
        priority=models._check_priority(merged.get("priority"), f"{prefix}priority"),
        user_id=models._check_user_id(merged.get("user_id"), f"{prefix}user_id"),
    )


GOOD = {"provider": "stockx", "sku": "dd1391-100", "size": "10"}
JOBS: list[Any] = [
    GOOD,
    {**GOOD, "size": 10, "size_system": "eu", "priority": "hot", "user_id": "u-1"},
    {**GOOD, "size": None, "priority": 0},
    {"sku": "a", "provider": "ebay"},
    {"provider": "ebay"},
    {"sku": "a"},
    {},
    {**GOOD, "name": "Dunk"},
    {**GOOD, "size_uk": "9"},
    {**GOOD, 1: "x"},
    {**GOOD, "": "x"},
    # several bad values: the first in rule order is the one reported
    {"provider": "nope", "sku": "a;b", "size": "huge", "priority": -1},
    {"provider": "ebay", "sku": "a;b", "size": "huge", "priority": -1},
    {"provider": "ebay", "sku": "B", "size": "huge", "priority": -1, "user_id": ""},
    {"provider": "ebay", "sku": "B", "size_system": "JP", "priority": -1, "user_id": ""},
    {"provider": "ebay", "sku": "B", "priority": True, "user_id": ""},
    {"provider": "ebay", "sku": "B", "user_id": ["u"]},
    {"provider": ["stockx"], "sku": "B"},
    {"provider": "ebay", "sku": {"a": 1}, "size": [10]},
    {"provider": "ebay", "sku": "B", "size": -0.0},
    {"provider": "ebay", "sku": "B", "size": 0.0, "priority": 1.0},
    {"provider": Str("nope"), "sku": "B"},
    "not a job", ["a"], None, 5,
]
CALLS: list[dict[str, Any]] = [
    {},
    {"field": "jobs[3]"},
    {"field": "items[0]", "defaults": {"provider": "alias", "priority": 100},
     "size_keys": ("size_uk", "size")},
    {"field": "refresh[9]", "defaults": {"priority": 200, "size_system": "us"},
     "size_keys": ("size", "size_uk")},
    {"defaults": {}, "size_keys": ("size",)},
    {"defaults": {"provider": "nope"}},
    {"field": "x", "size_keys": ("size_uk",)},
]


def test_parse_job_answers_as_before_on_both_paths() -> None:
    """Plain dicts (lean path) and dict subclasses (general path) give the old answers, values
    and errors alike (message and field), cold and warm."""
    for _ in range(2):
        for call in CALLS:
            for raw in JOBS:
                want = outcome(reference_parse_job, raw, **call)
                assert outcome(parse_job, raw, **call) == want, (raw, call)
                if isinstance(raw, dict):
                    assert outcome(parse_job, Dict(raw), **call) == want, (raw, call)


def test_parse_job_does_not_touch_the_object_or_defaults() -> None:
    """No merged copy any more on the lean path, so check nothing writes to the caller's
    objects."""
    raw = {"provider": "StockX", "sku": "a", "size_uk": "9"}
    defaults = {"provider": "ebay", "priority": 150}
    snapshot = (dict(raw), dict(defaults))
    parse_job(raw, "items[0]", defaults=defaults, size_keys=("size_uk", "size"))
    parse_job(dict(GOOD))
    assert (raw, defaults) == snapshot


def test_batch_errors_name_each_index_from_the_memo() -> None:
    """The same bad value at different places of different batches names each place."""
    bad = {"provider": "ebay", "sku": "B", "size": "huge"}
    for index in (1, 4, 0):
        jobs = [GOOD] * 5
        jobs[index] = bad
        with pytest.raises(ValidationError) as info:
            parse_enqueue_body({"jobs": jobs})
        assert info.value.field == f"jobs[{index}].size"
    for shape, key in (("items", "size_uk"), ("refresh", "size")):
        with pytest.raises(ValidationError) as info:
            parse_enqueue_body({shape: [{"sku": "A"}, {"sku": "A", key: "huge"}],
                                "provider": "stockx"})
        assert info.value.field == f"{shape}[1].{key}"


def test_portfolio_batch_matches_reference() -> None:
    """A batch that repeats its SKUs and sizes parses to the same specs as the old code."""
    jobs = [{"provider": "StockX", "sku": f"sku-{i // 5}", "size": ("6", 7, "8.5", None, 42)[i % 5],
             "priority": ("hot", 100, None)[i % 3]} for i in range(300)]
    got = parse_enqueue_body({"jobs": jobs})
    assert got == [reference_parse_job(j, f"jobs[{i}]") for i, j in enumerate(jobs)]


# ---- JobSpec keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "system"), [
    ("10", "UK"), ("10", "EU"), ("42 2/3", "US"), (None, "UK"), (None, "EU"), ("", "UK"),
    ("", "EU"),
])
def test_jobspec_keys_are_the_module_functions(size: str | None, system: str) -> None:
    """The inlined properties equal size_key() and dedupe_key() for every case."""
    spec = JobSpec("stockx", "SKU", size, system)
    assert spec.size_key == size_key(size, system)
    assert spec.dedupe_key == dedupe_key("stockx", "SKU", size_key(size, system))


# ---- the 202 body ------------------------------------------------------------------------------


RESULTS = [
    EnqueueResult("0f8e6a1c-9d6b-4c1e-8b4f-2a9d7e5c3b10", "stockx|DD1391-100|10", "pending", 100,
                  False),
    EnqueueResult(None, "ebay|BOX-LOGO|", "fresh", 200, False),
    EnqueueResult("same-id", "alias|AB-1|EU 42 2/3", "running", 1000, True),
    EnqueueResult("q\"uote\\back\nslash\u00e9\u2603\U0001f600\udc00\x01", 'k"ey', "pending", 0,
                  False),
    EnqueueResult("hot", "stockx|A|9", "pending", Priority.HOT, False),  # an IntEnum
    EnqueueResult("b", "stockx|A|9", "pending", True, False),
    EnqueueResult(7, 8, 9, 1.5, 0),
]


def old_body(results: list[EnqueueResult]) -> str:
    return json.dumps({"jobs": [r.as_dict() for r in results]})


@pytest.mark.parametrize("results", [RESULTS, [], RESULTS[:1], RESULTS[3:4], RESULTS * 300])
def test_enqueue_json_is_byte_for_byte_the_old_body(results: list[EnqueueResult]) -> None:
    """The same text as json.dumps of the as_dict()s, unusual values included."""
    assert enqueue_json(results) == old_body(results)
    assert json.loads(enqueue_json(results)) == {"jobs": [r.as_dict() for r in results]}


def test_enqueue_response_is_the_old_response() -> None:
    """Status, content type, charset and body are those json_response gave."""
    old = web.json_response({"jobs": [r.as_dict() for r in RESULTS]}, status=202)
    new = web.json_response(text=enqueue_json(RESULTS), status=202)
    assert (new.status, new.content_type, new.charset, new.body) == \
        (old.status, old.content_type, old.charset, old.body)
    assert dict(new.headers) == dict(old.headers)
