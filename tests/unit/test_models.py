"""Input rules for jobs (INTERFACE §4)."""

from __future__ import annotations

import pytest

from marketd.errors import ValidationError
from marketd.models import (
    format_minor,
    normalize_priority,
    normalize_size,
    normalize_sku,
    parse_enqueue_body,
    parse_job,
)


@pytest.mark.parametrize(("raw", "norm"), [
    ("10", "10"), ("10.5", "10.5"), (10, "10"), (10.5, "10.5"), ("42 2/3", "42 2/3"),
    ("42 1/3", "42 1/3"), ("8.5W", "8.5W"), ("5.5y", "5.5Y"), ("10C", "10C"), ("10.0", "10"),
    (" 9 ", "9"), (None, None),
])
def test_sizes_normalise(raw: object, norm: str | None) -> None:
    """Halves, thirds and W/Y/C suffixes are sizes, normalised to one spelling."""
    assert normalize_size(raw) == norm


@pytest.mark.parametrize("raw", ["abc", "10.25", "-1", "1" * 17, True, {}, [], "10 1/2",
                                 "", float("nan"), float("inf"), "123", "10X"])
def test_not_sizes(raw: object) -> None:
    """Anything else is refused with field 'size'."""
    with pytest.raises(ValidationError) as info:
        normalize_size(raw)
    assert info.value.field == "size"


def test_sku_normalises_case_and_space() -> None:
    """SKUs are trimmed, inner spaces collapsed and upper-cased: one key per product."""
    assert normalize_sku("  dd1391-100 ") == "DD1391-100"
    assert normalize_sku("dd1391   100") == "DD1391 100"


@pytest.mark.parametrize("raw", ["", "   ", "x" * 65, "<script>", "a;b", "ДД", 5, None])
def test_bad_skus(raw: object) -> None:
    """Empty, over-long or odd-character SKUs are refused."""
    with pytest.raises(ValidationError):
        normalize_sku(raw)


def test_priorities() -> None:
    """Names map to 200/150/100; integers 0-1000 pass; everything else is refused."""
    assert [normalize_priority(p) for p in ("manual", "HOT", "background", None, 0, 1000, "7")]\
        == [200, 150, 100, 100, 0, 1000, 7]
    for bad in (-1, 1001, "urgent", True, 1.5):
        with pytest.raises(ValidationError):
            normalize_priority(bad)


def test_dedupe_key_includes_size_system() -> None:
    """UK sizes keep the seed's key; other systems are prefixed so they never collide."""
    assert parse_job({"provider": "StockX", "sku": "dd1391-100", "size": "10"}).dedupe_key \
        == "stockx|DD1391-100|10"
    assert parse_job({"provider": "stockx", "sku": "X", "size": 40,
                      "size_system": "eu"}).dedupe_key == "stockx|X|EU 40"
    assert parse_job({"provider": "ebay", "sku": "X"}).dedupe_key == "ebay|X|"


def test_body_shapes() -> None:
    """The four shapes of POST /enqueue."""
    one = parse_enqueue_body({"provider": "stockx", "sku": "A-1", "size": "10", "priority": 150})
    assert [(j.sku, j.priority) for j in one] == [("A-1", 150)]
    items = parse_enqueue_body({"items": [{"sku": "A-1", "size_uk": "9", "name": "Dunk"}],
                                "provider": "alias", "priority": 150})
    assert [(j.provider, j.size, j.priority) for j in items] == [("alias", "9", 150)]
    refresh = parse_enqueue_body({"refresh": [{"sku": "A-1", "size": "9"}],
                                  "provider": "stockx"})
    assert refresh[0].priority == 200
    many = parse_enqueue_body({"jobs": [{"provider": "ebay", "sku": "B"},
                                        {"provider": "alias", "sku": "C", "size": None}]})
    assert [j.provider for j in many] == ["ebay", "alias"]


def test_batch_errors_name_the_path() -> None:
    """An error inside a batch names its path, e.g. jobs[1].size."""
    with pytest.raises(ValidationError) as info:
        parse_enqueue_body({"jobs": [{"provider": "ebay", "sku": "B"},
                                     {"provider": "ebay", "sku": "B", "size": "huge"}]})
    assert info.value.field == "jobs[1].size"
    with pytest.raises(ValidationError) as info:
        parse_enqueue_body({"jobs": [{"provider": "ebay", "sku": "B"}] * 1001})
    assert info.value.field == "jobs"


def test_format_minor() -> None:
    """Minor units print as decimal strings in major units."""
    assert [format_minor(v) for v in (9600, 5, 0, None, -250)] == \
        ["96.00", "0.05", "0.00", None, "-2.50"]


@pytest.mark.parametrize("raw", ["straße", "ı", "١٠"])
def test_non_ascii_never_sneaks_in(raw: str) -> None:
    """Letters and digits are ASCII: no Unicode case-folding or digits turn into a valid key."""
    with pytest.raises(ValidationError):
        normalize_sku(raw)
    with pytest.raises(ValidationError):
        normalize_size(raw)
