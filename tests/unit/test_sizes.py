"""Size conversion: parsing, StockX per-variant data, brand charts, and choosing one size."""

from __future__ import annotations

from fractions import Fraction

import pytest

from marketd.errors import SizeError
from marketd.providers.sizes import (
    ADIDAS,
    NIKE,
    NIKE_WOMEN,
    SizeOption,
    choose,
    format_size,
    options_from_chart,
    options_from_stockx,
    parse_conversion,
    size_value,
    split_suffix,
)


def _api_variant(value: str, *conversions: tuple[str, str]) -> dict[str, object]:
    return {"variantId": f"v-{value}", "variantValue": value,
            "sizeChart": {"defaultConversion": {"size": value, "type": "us m"},
                          "availableConversions": [{"size": s, "type": t}
                                                   for t, s in conversions]}}


# StockX's Dunk Low variants around Nike's double UK 6 (providers.md §5)
DUNK = [
    _api_variant("6", ("us m", "US M 6"), ("uk", "UK 5.5"), ("eu", "EU 38.5")),
    _api_variant("6.5", ("us m", "US M 6.5"), ("uk", "UK 6 (EU 39)"), ("eu", "EU 39")),
    _api_variant("7", ("us m", "US M 7"), ("uk", "UK 6 (EU 40)"), ("eu", "EU 40")),
    _api_variant("10", ("us m", "US M 10"), ("uk", "UK 9"), ("cm", "CM 28"), ("eu", "EU 44"),
                 ("us w", "US W 11.5")),
]


@pytest.mark.parametrize(("text", "expected"), [
    ("10", Fraction(10)), ("10.5", Fraction(21, 2)), ("10.0", Fraction(10)),
    ("42 2/3", Fraction(128, 3)), ("41 1/3", Fraction(124, 3)), ("8.5W", Fraction(17, 2)),
    (10.5, Fraction(21, 2)), (9, Fraction(9)), ("big", None), (None, None), ("280", None),
])
def test_size_value(text: str | float | None, expected: Fraction | None) -> None:
    """Sizes parse to exact fractions, thirds included; a suffix is ignored; junk is None."""
    assert size_value(text) == expected


@pytest.mark.parametrize("text", ["10", "10.5", "42 2/3", "41 1/3", "3.5"])
def test_format_size_round_trips(text: str) -> None:
    """format_size is the inverse of size_value."""
    value = size_value(text)
    assert value is not None
    assert format_size(value) == text


def test_split_suffix() -> None:
    """W/Y/C suffixes come off (Alias wants 9, not 9W); a bare size has none."""
    assert split_suffix("9W") == ("9", "W")
    assert split_suffix("5.5y") == ("5.5", "Y")
    assert split_suffix("10") == ("10", "")


@pytest.mark.parametrize(("label", "size", "note"), [
    ("US M 10", Fraction(10), None),
    ("UK 6 (EU 39)", Fraction(6), "EU 39"),
    ("EU 42 2/3", Fraction(128, 3), None),
    ("US W 11.5", Fraction(23, 2), None),
    ("CM 23.5 (US M 4.5)", Fraction(47, 2), "US M 4.5"),
])
def test_parse_conversion(label: str, size: Fraction, note: str | None) -> None:
    """StockX conversion labels lose their prefix and keep their disambiguator apart."""
    assert parse_conversion(label) == (size, note)


def test_stockx_uk_to_us() -> None:
    """A UK size maps to the variant whose UK conversion carries it."""
    assert options_from_stockx(DUNK, "UK", "9") == [SizeOption(Fraction(10), "9", "44")]


def test_stockx_eu_to_us() -> None:
    """An EU size picks one of Nike's two UK 6 variants."""
    assert options_from_stockx(DUNK, "EU", "40") == [SizeOption(Fraction(7), "6", "40")]


def test_stockx_double_uk6_gives_two_options() -> None:
    """Nike UK 6 matches two StockX variants, EU 39 and EU 40."""
    options = options_from_stockx(DUNK, "UK", "6")
    assert [(o.us, o.eu) for o in options] == [(Fraction(13, 2), "39"), (Fraction(7), "40")]


def test_stockx_cache_shape_is_read() -> None:
    """The StockX client's cached variant shape (value + [type, label] pairs) works too."""
    cached = [{"id": "x", "value": "8.5W", "conversions": [["us w", "US W 8.5"],
                                                           ["uk", "UK 6 (EU 40)"]]}]
    assert options_from_stockx(cached, "UK", "6") == [SizeOption(Fraction(17, 2), "6", "40")]


def test_stockx_skips_malformed_variants() -> None:
    """Variants without a value or conversions, or not objects at all, are skipped."""
    junk = ["x", {"variantValue": "10"}, {"sizeChart": {"availableConversions": "no"}}]
    assert options_from_stockx([*junk, *DUNK], "UK", "9")[0].us == Fraction(10)


def test_stockx_no_match_is_empty() -> None:
    """A size no variant carries gives no option."""
    assert options_from_stockx(DUNK, "UK", "20") == []


def test_nike_chart_is_the_reference_table() -> None:
    """The Nike chart holds providers.md §5's table: 22 rows, US 3.5 to 15."""
    assert len(NIKE) == 22
    assert (NIKE[0].us_m, NIKE[0].uk, NIKE[0].eu, NIKE[0].us_w) == ("3.5", "3", "35.5", "5")
    assert (NIKE[-1].us_m, NIKE[-1].uk, NIKE[-1].eu, NIKE[-1].us_w) == ("15", "14", "49.5", "16.5")


def test_chart_nike_men_uk_to_us() -> None:
    """Jordan men's UK 9 is US 10 by the Nike chart."""
    assert options_from_chart("Jordan", "men", "UK", "9") == [SizeOption(Fraction(10), "9", "44")]


def test_chart_nike_uk6_is_ambiguous() -> None:
    """The Nike chart, too, gives UK 6 twice."""
    options = options_from_chart("Nike", "men", "UK", "6")
    assert options is not None
    assert [o.eu for o in options] == ["39", "40"]


def test_chart_nike_women_uses_us_w() -> None:
    """For a women's item the US size is US W: EU 40 is 8.5W (providers.md §5)."""
    assert options_from_chart("Nike", "women", "EU", "40") == [
        SizeOption(Fraction(17, 2), "6", "40")]


def test_nike_womens_uk_is_us_w_minus_2_5_on_every_row() -> None:
    """Nike women's UK = US W - 2.5 (providers.md §5, the simulator's rule): the old chart reused
    the men's UK column and was half a size off below 8.5W (UK 5.5 read as 7.5W, not 8W)."""
    for row in NIKE_WOMEN:
        assert row.us_w is not None
        assert Fraction(row.uk) == Fraction(row.us_w) - Fraction(5, 2)
        assert Fraction(row.us_w) == Fraction(row.us_m) + Fraction(3, 2)
    assert options_from_chart("Nike", "women", "UK", "5.5") == [
        SizeOption(Fraction(8), "5.5", "39")]


@pytest.mark.parametrize(("brand", "gender", "size", "us"), [
    ("Nike", "men", "8.5W", "7"), ("Jordan", "men", "11W", "9.5"), ("Nike", "women", "7", "8.5"),
    ("Nike", "women", "8.5W", "8.5"), ("Nike", "men", "5.5Y", "5.5"), ("Nike", "youth", "7", "7"),
    ("adidas", "men", "9W", "8"), ("adidas", "women", "8", "9"),
])
def test_chart_converts_us_sizes_between_scales(brand: str, gender: str, size: str,
                                                us: str) -> None:
    """A US size's suffix names its scale; the answer is in the item's own scale."""
    options = options_from_chart(brand, gender, "US", size)
    assert options is not None and [format_size(o.us) for o in options] == [us]


def test_chart_cannot_convert_what_it_lacks() -> None:
    """No women's ASICS chart, no youth sizes over 7Y, no child (C) sizes at all."""
    assert options_from_chart("ASICS", "men", "US", "9W") is None
    assert options_from_chart("Nike", "men", "US", "8Y") == []
    assert options_from_chart("Nike", "men", "US", "10C") is None


def test_stockx_us_sizes_convert_to_the_target_scale() -> None:
    """StockX's labels convert US W to the men's variant, and give the women's size of it."""
    assert options_from_stockx(DUNK, "US", "11.5W", "M") == [SizeOption(Fraction(10), "9", "44")]
    assert options_from_stockx(DUNK, "UK", "9", "W") == [SizeOption(Fraction(23, 2), "9", "44")]
    assert options_from_stockx(DUNK, "US", "11.5W", "Y") == []


def test_chart_nike_youth_stops_at_7() -> None:
    """Grade school matches men's only up to 7Y: UK 6 (EU 40) is 7Y, UK 9 has no youth size."""
    assert options_from_chart("Nike", "youth", "EU", "40") == [SizeOption(Fraction(7), "6", "40")]
    assert options_from_chart("Nike", "youth", "UK", "9") == []


@pytest.mark.parametrize(("system", "size", "us"), [
    ("UK", "6.5", "7"), ("EU", "41 1/3", "8"), ("EU", "42 2/3", "9"), ("UK", "9.5", "10"),
    ("EU", "45 1/3", "11"), ("UK", "11.5", "12"),
])
def test_chart_adidas_reference_rows(system: str, size: str, us: str) -> None:
    """adidas rows match every example of providers.md §5 (UK = US - 0.5, EU in thirds)."""
    options = options_from_chart("adidas Originals", "men", system, size)
    assert options is not None and [format_size(o.us) for o in options] == [us]


def test_chart_adidas_columns_are_consistent() -> None:
    """Every adidas row has UK = US M - 0.5 and US W = US M + 1."""
    for row in ADIDAS:
        assert Fraction(row.uk) == Fraction(row.us_m) - Fraction(1, 2)
        assert row.us_w is not None and Fraction(row.us_w) == Fraction(row.us_m) + 1


def test_chart_asics_eu_only_where_known() -> None:
    """ASICS converts UK (US - 1) but EU only for the sizes the reference gives."""
    assert options_from_chart("ASICS", "men", "UK", "9") == [SizeOption(Fraction(10), "9", "44")]
    assert options_from_chart("ASICS", "men", "EU", "43.5") == []


def test_chart_unknown_brand_or_gender_is_none() -> None:
    """No chart for an unknown brand, or for a gender the chart lacks: None, not a guess."""
    assert options_from_chart("Balenciaga", "men", "UK", "9") is None
    assert options_from_chart("Nike", "infant", "UK", "3") is None
    assert options_from_chart("adidas", "youth", "UK", "5") is None


def test_choose_one() -> None:
    """A single option is the answer."""
    option = SizeOption(Fraction(10), "9", "44")
    assert choose([option], provider="alias", system="UK", size="9") is option


def test_choose_none_is_size_error() -> None:
    """No option is a SizeError naming the size."""
    with pytest.raises(SizeError, match="UK 20 matches no size"):
        choose([], provider="alias", system="UK", size="20")


def test_choose_two_names_both_eu_sizes() -> None:
    """Two options are a SizeError naming both EU sizes."""
    with pytest.raises(SizeError) as info:
        choose(options_from_stockx(DUNK, "UK", "6"), provider="alias", system="UK", size="6")
    assert "EU 39 (US 6.5)" in str(info.value) and "EU 40 (US 7)" in str(info.value)
    assert info.value.provider == "alias"
