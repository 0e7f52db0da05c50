"""iso(): the text datetime gives, formatted faster."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from marketd.clock import iso, parse_iso


def reference(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def test_iso_matches_datetime_everywhere() -> None:
    rng = random.Random(7)
    values = [rng.uniform(0, 4e9) for _ in range(20000)]
    # sub-millisecond steps across second boundaries, and fractions that round up a second
    values += [1_767_225_599 + i * 0.000_25 for i in range(8000)]
    values += [k + f for k in (0, 1_767_225_599) for f in
               (0.999_999_5, 0.999_999_499_9, 0.000_000_5, 0.000_5, 0.999_5, 1e-9)]
    values += [-1.5, -0.000_1]
    for ts in values:
        assert iso(ts) == reference(ts), ts


def test_iso_round_trips_and_none() -> None:
    assert iso(None) is None
    assert iso(1_767_225_600.25) == "2026-01-01T00:00:00.250Z"
    assert parse_iso(iso(1_767_225_600.25)) == 1_767_225_600.25
