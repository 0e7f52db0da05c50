"""What `marketd status` prints (no I/O): a list it shortens says so."""

from __future__ import annotations

from typing import Any

from marketd.cli_client import format_status


def _status(runs: int) -> dict[str, Any]:
    return {"now": "2026-12-07T00:00:00.000Z", "budgets": {},
            "jobs": {"by_provider": {}},
            "recent_runs": [{"started_at": f"2026-12-07T00:0{i}:00.000Z", "trigger": "interval",
                             "selected": i, "succeeded": i, "failed": 0, "deferred": 0,
                             "duration_ms": 5} for i in range(runs)]}


def test_status_says_how_many_runs_it_shows_of_how_many() -> None:
    text = format_status(_status(7))
    assert "recent runs (the last 5; --json has 7):" in text
    assert text.count("interval") == 5  # five runs printed
    assert "none yet" in format_status(_status(0))
