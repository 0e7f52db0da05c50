"""The command line's data commands as a user runs them: prices (--history, --csv, paging past
any limit), prune and enrich, on a real database file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

from marketd.clock import FakeClock
from marketd.models import Price
from marketd.store import Outcomes, SQLiteStore
from tests.e2e.helpers import marketd, write_config


def setup(tmp_path: Path, prices: list[list[Price]]) -> str:
    c = write_config(tmp_path / "c.toml",
                     f'[database]\npath = "{tmp_path / "m.db"}"\n[server]\nport = 1\n')
    assert marketd("migrate", "-c", str(c)).returncode == 0

    async def write() -> None:
        store = await SQLiteStore.open(str(tmp_path / "m.db"), FakeClock())
        try:
            for group in prices:
                await store.record(Outcomes(prices=group))
        finally:
            await store.close()

    asyncio.run(write())
    return str(c)


def test_prices_history(tmp_path: Path) -> None:
    """--history prints one line per change, oldest first; --json the API's shape; it needs
    --provider and --sku (exit 2)."""
    groups = [[Price("stockx", "A-1", "10", "GBP", ask, None, None, 1000.0 + i)]
              for i, ask in enumerate((100, 100, 100, 150))]
    c = setup(tmp_path, groups)
    out = marketd("prices", "-c", c, "--history", "--provider", "stockx", "--sku", "a-1",
                  "--size", "10", "--json")
    assert out.returncode == 0, out.stderr
    assert [h["lowest_ask"] for h in json.loads(out.stdout)["history"]] == ["1.00", "1.50"]
    text = marketd("prices", "-c", c, "--history", "--provider", "stockx", "--sku", "A-1",
                   "--size", "10")
    assert text.returncode == 0 and len(text.stdout.strip().splitlines()) == 4
    bad = marketd("prices", "-c", c, "--history", "--sku", "A-1")
    assert bad.returncode == 2 and "--provider" in bad.stderr


def test_prices_json_and_csv_are_never_cut(tmp_path: Path) -> None:
    """1,500 prices: --json lists all of them (the old CLI stopped at 1,000 silently), --csv
    has the contract's header and the same rows; several --sku filter."""
    groups = [[Price("stockx", f"S-{i:04d}", "10", "GBP", i, None, None, 1000.0)
               for i in range(1500)]]
    c = setup(tmp_path, groups)
    out = marketd("prices", "-c", c, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["prices"]
    assert len(rows) == 1500
    text = marketd("prices", "-c", c, "--csv")
    assert text.returncode == 0, text.stderr
    lines = list(csv.reader(io.StringIO(text.stdout)))
    assert lines[0][:8] == ["provider", "sku", "size", "currency", "lowest_ask",
                            "highest_bid", "last_sale", "fetched_at"]
    assert [line[1] for line in lines[1:]] == [r["sku"] for r in rows]
    two = marketd("prices", "-c", c, "--sku", "s-0001", "--sku", "S-0002", "--json")
    assert [r["lowest_ask"] for r in json.loads(two.stdout)["prices"]] == ["0.01", "0.02"]
    assert marketd("prices", "-c", c, "--csv", "--json").returncode == 2


def test_prune_and_dry_run(tmp_path: Path) -> None:
    """prune --dry-run counts and deletes nothing; prune deletes (history older than the
    configured days, each key's newest point kept); both print the database's size."""
    day = 86400.0
    groups = [[Price("stockx", "A-1", "10", "GBP", ask, None, None, 1000.0 + i * day)]
              for i, ask in enumerate((1, 2, 3))]
    c = setup(tmp_path, groups)
    with open(c, "a") as f:
        f.write("[retention]\nhistory_days = 1\n")
    dry = marketd("prune", "-c", c, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["kinds"]["history"]["rows"] == 2
    assert report["database"]["rows"]["market_price_history"] == 3
    done = marketd("prune", "-c", c)
    assert done.returncode == 0 and "history  deleted 2 row(s)" in done.stdout, done.stdout
    assert "database" in done.stdout
    again = json.loads(marketd("prune", "-c", c, "--json").stdout)
    assert again["database"]["rows"]["market_price_history"] == 1


def test_enrich_queues_lookups(tmp_path: Path) -> None:
    c = setup(tmp_path, [])

    async def want() -> None:
        store = await SQLiteStore.open(str(tmp_path / "m.db"), FakeClock())
        try:
            await store.record(Outcomes(wanted=[("stockx", "A-1", "10", "10", "UK")]))
            await store.put_catalog("stockx", "A-1", product_id="a", title=None)
        finally:
            await store.close()

    asyncio.run(want())
    out = marketd("enrich", "-c", c, "--json")
    assert out.returncode == 0, out.stderr
    [q] = json.loads(out.stdout)["queued"]
    assert (q["provider"], q["sku"], q["status"]) == ("stockx", "A-1", "pending")
    again = marketd("enrich", "-c", c)  # its cache forgotten, its look-up pending
    assert again.returncode == 0 and "nothing to enrich" in again.stdout
