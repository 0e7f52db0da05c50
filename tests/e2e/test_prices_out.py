"""The prices going out, from outside, on `marketd serve` processes against the simulator:
the CSV equals /prices, an unchanged price fetched three times leaves one history point, a
configured webhook receives signed price_changed deliveries that verify with the secret, also
those queued before a restart (the receiver down until then), and `marketd prune` runs."""

from __future__ import annotations

import csv
import io
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from marketd.webhooks import verify
from tests.e2e.helpers import free_port, http, make_proc_rig, marketd, wait_until

SECRET = "e2e-webhook-secret"
KEYS = [("stockx", "DD1391-100", "10"), ("alias", "DD1391-100", "10"),
        ("ebay", "DD1391-100", "10")]


class Receiver:
    def __init__(self, port: int) -> None:
        self.seen: list[tuple[bytes, dict[str, str]]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                seen.append((body, dict(self.headers)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fetch_all(rig: Any) -> None:
    jobs = rig.enqueue({"jobs": [{"provider": p, "sku": s, "size": z, "priority": "manual"}
                                 for p, s, z in KEYS]})
    ids = {j["id"] for j in jobs}

    def done() -> bool:
        return all(j["status"] in ("completed", "failed") for j in rig.jobs()
                   if j["id"] in ids)

    wait_until(done, timeout=60, what="the jobs settled")


def test_csv_history_webhooks_across_a_restart_and_prune(tmp_path: Path) -> None:
    hook_port = free_port()
    rig = make_proc_rig(tmp_path, start=False, limits='["50/10s"]')
    with open(rig.config, "a") as f:
        f.write(f'[webhooks]\nprice_changed_url = "http://127.0.0.1:{hook_port}/hook"\n'
                f'secret = "{SECRET}"\nretry_base_seconds = 0.5\nretry_max_seconds = 1\n')
    receiver: Receiver | None = None
    try:
        rig.start()
        for _ in range(3):  # the same prices fetched three times (the receiver is down)
            fetch_all(rig)
        status, body = http("GET", f"{rig.url}/prices?sku=DD1391-100")
        assert status == 200
        prices = body["prices"]
        assert {p["provider"] for p in prices} >= {"stockx", "alias"}
        with urllib.request.urlopen(f"{rig.url}/prices.csv?sku=DD1391-100") as resp:
            assert resp.headers["Content-Type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(resp.read().decode())))
        assert [{k: r[k] for k in ("provider", "sku", "size", "currency", "lowest_ask",
                                   "highest_bid", "last_sale", "fetched_at")} for r in rows] \
            == [{k: "" if p[k] is None else p[k]
                 for k in ("provider", "sku", "size", "currency", "lowest_ask",
                           "highest_bid", "last_sale", "fetched_at")} for p in prices]
        for provider, sku, size in KEYS[:2]:
            status, hist = http("GET", f"{rig.url}/prices/history?provider={provider}"
                                       f"&sku={sku}&size={size}")
            assert status == 200 and len(hist["history"]) == 1, hist
        def failing() -> dict[str, Any] | None:
            hooks: dict[str, Any] = http("GET", f"{rig.url}/status")[1]["webhooks"]
            return hooks if hooks["failing"] >= 1 else None

        hooks = wait_until(failing, timeout=30, what="a failed delivery (receiver down)")
        queued = hooks["pending"]
        assert queued >= 2 and "webhook_delivery_failed" in rig.daemon_log()
        assert rig.terminate() == 0
        receiver = Receiver(hook_port)
        rig.start()  # the deliveries queued before the restart go out now
        wait_until(lambda: len({h["X-Marketd-Delivery"] for _, h in receiver.seen}) >= queued,
                   timeout=60, what="the queued deliveries")
        for body_bytes, headers in receiver.seen:
            assert verify(SECRET, body_bytes, headers["X-Marketd-Signature"])
            assert headers["X-Marketd-Event"] == "price_changed"
        assert rig.terminate() == 0
        out = marketd("prune", "-c", str(rig.config))
        assert out.returncode == 0 and "database" in out.stdout, out.stderr
    finally:
        rig.close()
        if receiver is not None:
            receiver.close()
