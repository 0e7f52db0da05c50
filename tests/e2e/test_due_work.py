"""Due work end to end (issue 14): ``marketd serve`` and the simulator as processes, with
``interval_seconds = 900`` so that no interval run helps after start-up: everything below is
done by wakes. On 40/hour limits (enforced by the simulator too):

- hot adds of new SKUs spend the budget, catalog look-ups included, short of the manual
  reserve; a manual refresh of a cached SKU is then priced within seconds, never a 429;
- a call answered 503 is retried when its backoff ends (a run woken for it);
- a batch that met a 429 says so in market_provider_metrics.rate_limited;
- refused eBay credentials pause eBay and the alert webhook hears it, once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from marketd.simulator.catalog import _PRODUCTS, NO_MARKET_SKU
from tests.e2e.helpers import db_rows, limit_violations, make_proc_rig, sim_stats, wait_until

SKUS = [row[0] for row in _PRODUCTS if row[0] != NO_MARKET_SKU]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def jobs(db: Path, provider: str) -> list[tuple[Any, ...]]:
    return db_rows(db, "SELECT sku, size, status, retry_count, priority FROM market_jobs "
                       "WHERE provider = ? ORDER BY created_at", (provider,))


def test_due_work_is_done_when_due(tmp_path: Path,
                                   webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    rig = make_proc_rig(
        tmp_path, limits='["40/hour"]',
        scheduler={"interval_seconds": 900, "hot_wake_seconds": 1, "pacing": False,
                   "retry_base_seconds": 1, "retry_max_seconds": 1},
        start=False)
    rig.config.write_text(rig.config.read_text()
                          + f'[alerts]\nwebhook_url = "{url}"\n')
    rig.start()
    try:
        # hot adds of 14 new StockX SKUs: 3 calls each the first time; 38 of 40 may be spent
        rig.enqueue({"jobs": [{"provider": "stockx", "sku": s, "size": "10", "priority": "hot"}
                              for s in SKUS[:14]]})
        done = wait_until(lambda: [j for j in jobs(rig.db, "stockx") if j[2] == "completed"]
                          or None, timeout=20, what="hot jobs fetched")
        time.sleep(1)  # (let the woken run finish its batch)
        completed = [j for j in jobs(rig.db, "stockx") if j[2] == "completed"]
        assert len(completed) == 12 and done
        calls = db_rows(rig.db, "SELECT count(*) FROM market_calls WHERE provider = 'stockx'")
        assert calls == [(36,)]
        # a manual refresh of a cached SKU: priced within seconds from the reserve
        asked = time.monotonic()
        [job] = rig.enqueue({"provider": "stockx", "sku": completed[0][0], "size": "9",
                             "priority": "manual"})
        wait_until(lambda: db_rows(rig.db, "SELECT status FROM market_jobs WHERE id = ?",
                                   (job["id"],)) == [("completed",)],
                   timeout=10, what="manual refresh priced")
        assert time.monotonic() - asked < 5

        # a 503, then the retry when its backoff ends (interval 900: only a wake can do it)
        rig.force("alias", 503, 1)
        rig.enqueue({"provider": "alias", "sku": "B75806", "size": "9.5", "priority": "hot"})
        wait_until(lambda: [j for j in jobs(rig.db, "alias") if j[2] == "completed"] or None,
                   timeout=20, what="alias job retried and completed")
        assert jobs(rig.db, "alias")[0][3] == 1
        triggers = {t for (t,) in db_rows(rig.db, "SELECT trigger FROM market_job_runs")}
        assert {"hot", "retry", "manual"} <= triggers

        # a 429 is counted in its batch's metrics row
        rig.force("alias", 429, 1)
        rig.enqueue({"provider": "alias", "sku": "DD1391-100", "size": "9",
                     "priority": "manual"})
        wait_until(lambda: db_rows(rig.db, "SELECT rate_limited FROM market_provider_metrics "
                                           "WHERE provider = 'alias' AND rate_limited > 0")
                   or None, timeout=10, what="the 429 counted")

        # refused eBay credentials: a pause, and the webhook hears it once
        rig.force("ebay", 401, 6)
        rig.enqueue({"provider": "ebay", "sku": "DD1391-100", "size": "10",
                     "priority": "manual"})
        alert = wait_until(lambda: next((a for a in received
                                         if a.get("alert") == "provider_paused"), None),
                           timeout=15, what="the pause alert")
        assert alert["provider"] == "ebay" and alert["reason"] == "credentials_refused"
        assert alert["check"] and alert["paused_until"]
        assert [j[2] for j in jobs(rig.db, "ebay")] == ["pending"]
        stats = sim_stats(rig.sim_url)
        assert limit_violations(stats, {"alias": 1}) == []
        assert sum(1 for a in received if a.get("alert") == "provider_paused") == 1
    finally:
        code = rig.terminate()
        rig.close()
    assert code == 0
