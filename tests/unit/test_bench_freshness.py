"""bench/freshness/: its options, the optimum's arithmetic, and a tiny simulated day.

The full bench is run by ``python -m bench.freshness`` (and --quick by test_bench_smoke.py);
this checks the pieces a trial with other parameters depends on. Skips when the ``bench``
extra (huey, matplotlib, pyinstrument) is not installed, unless MARKETD_REQUIRE_SERVICES=1,
where a missing extra fails (as test_bench_smoke.py).
"""

from __future__ import annotations

import bisect
import dataclasses
import importlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import require_bench_extra

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _bench_extra() -> None:
    require_bench_extra()


@pytest.fixture(scope="module")
def fr(_bench_extra: None) -> ModuleType:
    """bench.freshness, imported once the extra is known to be there."""
    return importlib.import_module("bench.freshness")


# ---- options -----------------------------------------------------------------------------------


def test_defaults_are_the_constants(fr: ModuleType) -> None:
    """No option: the day the bench always simulated (the figures stay comparable)."""
    args, p = fr.parse_args([])
    assert p == fr.Params()
    assert (p.limit_per_hour, p.skus, p.items, p.late) == (100, 150, 500, 20)
    assert (p.page_loads_per_hour, p.manual_per_hour, p.stale_after_s, p.seed) == (6, 1, 3600, 7)
    assert (p.limit_per_hour, p.skus, p.items, p.late, p.page_loads_per_hour,
            p.manual_per_hour, p.stale_after_s, p.seed) == (
        fr.LIMIT_PER_HOUR, fr.N_SKUS, fr.N_ITEMS, fr.N_LATE, fr.PAGE_LOADS_PER_HOUR,
        fr.MANUAL_PER_HOUR, fr.STALE_AFTER_S, fr.SEED)
    assert (p.day_h, p.warmup) == (24.0, 3.0)
    assert not args.quick and not args.sweep


def test_every_parameter_is_an_option(fr: ModuleType) -> None:
    _, p = fr.parse_args(["--limit", "200", "--skus", "40", "--items", "130", "--late", "5",
                          "--page-loads", "12", "--manual", "0", "--stale-min", "45",
                          "--seed", "9", "--hours", "6", "--warmup", "2"])
    assert p == fr.Params(limit_per_hour=200, skus=40, items=130, late=5,
                          page_loads_per_hour=12.0, manual_per_hour=0.0, stale_after_s=2700.0,
                          seed=9, day_h=6.0, warmup_h=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.skus = 1


def test_quick_and_the_warmup(fr: ModuleType) -> None:
    """--quick is the smoke test's short day; the warm-up otherwise covers two cycles."""
    _, p = fr.parse_args(["--quick"])
    assert (p.warmup, p.day_h) == (1.5, 2.0)
    _, p = fr.parse_args(["--quick", "--hours", "3"])
    assert (p.warmup, p.day_h) == (1.5, 3.0)
    _, p = fr.parse_args(["--limit", "50"])  # a 3 h cycle: 6 h of warm-up
    assert p.warmup == 6.0


@pytest.mark.parametrize("argv", [
    ["--limit", "0"],
    ["--items", "100"],  # fewer items than SKUs
    ["--items", "5000"],  # more sizes per SKU than the simulator's products have
    ["--late", "500"],
    ["--page-loads", "0"],
    ["--manual", "-1"],
    ["--hours", "0"],
    ["--sweep-limits", "50,x"],
])
def test_nonsense_is_a_usage_error(fr: ModuleType, argv: list[str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        fr.parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_sweep_grid(fr: ModuleType) -> None:
    p = fr.Params()
    grid = fr.sweep_grid(p)
    assert [(g.limit_per_hour, g.seed) for g in grid] == [
        (lim, s) for lim in (50, 100, 200, 400) for s in (7, 8, 9)]
    assert all(dataclasses.replace(g, limit_per_hour=100, seed=7) == p for g in grid)
    assert [(g.limit_per_hour, g.seed) for g in fr.sweep_grid(p, quick=True)] == [
        (100, 7), (200, 7)]
    assert [(g.limit_per_hour, g.seed) for g in fr.sweep_grid(p, [60, 60, 30], [1])] == [
        (60, 1), (30, 1)]


# ---- the optimum -------------------------------------------------------------------------------


def test_optimum_at_the_defaults(fr: ModuleType) -> None:
    """150 SKUs at 100/hour: every SKU every 90 min; the limit binds (the enqueue pattern
    alone would allow p95 60 + 10 ln(10 / 3.5) = 70.5 min)."""
    opt = fr.optimum(fr.Params())
    assert opt["cycle_min"] == pytest.approx(90)
    assert (opt["p50_min"], opt["p95_min"]) == (pytest.approx(45), pytest.approx(85.5))
    assert opt["calls_per_refreshed_price"] == pytest.approx(0.3)
    pattern = opt["given_enqueue_pattern"]
    assert pattern["p50_min"] == pytest.approx(35)
    assert pattern["p95_min"] == pytest.approx(60 + 10 * math.log(10 / 3.5))
    assert opt["bound_by"] == "limit"
    assert opt["judged_p95_min"] == pytest.approx(85.5)
    assert opt["note"] == ""


@pytest.mark.parametrize(("limit", "skus", "cycle", "p95"), [
    (50, 150, 180, 171), (100, 300, 180, 171), (200, 150, 45, 42.75), (60, 15, 15, 14.25)])
def test_optimum_of_the_limit(fr: ModuleType, limit: int, skus: int, cycle: float,
                              p95: float) -> None:
    opt = fr.optimum(fr.Params(limit_per_hour=limit, skus=skus, items=3 * skus))
    assert (opt["cycle_min"], opt["p50_min"], opt["p95_min"]) == (
        pytest.approx(cycle), pytest.approx(cycle / 2), pytest.approx(p95))


def test_a_cycle_shorter_than_the_stale_threshold_is_bound_by_the_enqueue_pattern(
        fr: ModuleType) -> None:
    """200/hour would refresh every SKU every 45 min, but nothing is enqueued before 60: that
    bounds a scheduler that only fetches what is enqueued; marketd (idle refresh) is judged
    against the limit's optimum."""
    opt = fr.optimum(fr.Params(limit_per_hour=200))
    assert opt["p95_min"] == pytest.approx(42.75)
    assert opt["bound_by"] == "enqueue pattern"
    assert opt["judged_p95_min"] == pytest.approx(42.75)
    assert opt["given_enqueue_pattern"]["p95_min"] == pytest.approx(70.498, abs=0.01)
    assert "enqueue pattern, not the limit" in opt["note"]
    assert "shorter than the 60-min stale threshold" in opt["note"]
    runs = opt["given_enqueue_pattern_and_runs"]
    assert runs["p95_min"] > opt["given_enqueue_pattern"]["p95_min"]


def test_page_load_gaps_can_bind_past_the_stale_threshold(fr: ModuleType) -> None:
    """125/hour: a 72-min cycle (p95 68.4) is longer than 60 min, but a stale price waits
    for a page load (10 min on average), so the pattern's p95 (70.5) is the larger."""
    opt = fr.optimum(fr.Params(limit_per_hour=125))
    assert opt["cycle_min"] == pytest.approx(72)
    assert opt["bound_by"] == "enqueue pattern"
    assert "waits 10 min on average" in opt["note"]


def test_slow_page_loads_and_a_long_threshold(fr: ModuleType) -> None:
    """Stale after 2 h, a page load every 30 min: p95 = 120 + 30 ln(0.2 / 0.05)."""
    opt = fr.optimum(fr.Params(stale_after_s=7200, page_loads_per_hour=2))
    pattern = opt["given_enqueue_pattern"]
    assert pattern["p50_min"] == pytest.approx(75)
    assert pattern["p95_min"] == pytest.approx(120 + 30 * math.log(4))
    assert opt["bound_by"] == "enqueue pattern"


def test_a_threshold_below_fresh_for_seconds(fr: ModuleType) -> None:
    """marketd answers background enqueues of prices younger than fresh_for_seconds (60 min)
    as fresh: a 30-min threshold is in effect 60."""
    opt = fr.optimum(fr.Params(stale_after_s=1800))
    assert opt["effective_stale_min"] == 60
    assert opt["given_enqueue_pattern"] == fr.optimum(fr.Params())["given_enqueue_pattern"]
    assert "fresh_for_seconds" in opt["note"]
    assert fr.optimum(fr.Params(stale_after_s=1800), fresh_for_s=0)["effective_stale_min"] == 30


def _renewal_ages(cycle: Any, n_cycles: int, n_samples: int, rng: random.Random) -> list[float]:
    """Ages at uniform random instants of a renewal process with cycles drawn by ``cycle``."""
    ends = [0.0]
    for _ in range(n_cycles):
        ends.append(ends[-1] + cycle())
    ages = []
    for _ in range(n_samples):
        t = rng.uniform(0, ends[-1])
        ages.append(t - ends[bisect.bisect_right(ends, t) - 1])
    return sorted(ages)


@pytest.mark.parametrize(("stale", "gap", "interval"), [(3600, 600, 900), (3000, 1800, 900)])
def test_the_pattern_quantiles_match_a_simulated_renewal(fr: ModuleType, stale: float,
                                                         gap: float, interval: float) -> None:
    rng = random.Random(1)
    ages = _renewal_ages(lambda: stale + rng.expovariate(1 / gap), 100_000, 100_000, rng)
    on_runs = _renewal_ages(
        lambda: interval * math.ceil((stale + rng.expovariate(1 / gap)) / interval),
        100_000, 100_000, rng)
    for q in (0.5, 0.95):
        k = int(q * len(ages))
        assert fr.pattern_quantile(q, stale, gap) == pytest.approx(ages[k], rel=0.02)
        assert fr.pattern_with_runs_quantile(q, stale, gap, interval) == pytest.approx(
            on_runs[k], rel=0.02)


# ---- a tiny simulated day ----------------------------------------------------------------------


TINY = {"skus": 12, "items": 40, "late": 2, "day_h": 2.0, "warmup_h": 1.0}


@pytest.mark.parametrize("policy", ["marketd", "before", "batch_in_calls_only"])
@pytest.mark.parametrize("limit", [10, 100])
async def test_a_tiny_day(fr: ModuleType, tmp_path: Path, policy: str, limit: int) -> None:
    """12 SKUs at 10/hour (a 72-min cycle, the limit binds) and 100/hour (the enqueue pattern
    binds): no 429, the limit kept, every price fetched, ages within what the day allows."""
    p = fr.Params(limit_per_hour=limit, **TINY)
    r = await fr.simulate(tmp_path, policy, p)
    assert r["policy"] == policy
    assert r["rate_limited_429"] == 0
    assert 0 < r["max_calls_in_any_hour"] <= limit
    assert 0 < r["budget_used"] <= 1
    assert r["refreshed_prices"] > 0 and r["calls"] > 0
    assert 0 <= r["p50_age_min"] <= r["p95_age_min"] <= r["max_age_min"]
    assert r["max_age_min"] <= (p.warmup + p.day_h) * 60
    # nothing waits much longer than a stale price, a page load gap and a cycle or two
    assert r["p95_age_min"] <= 2 * (p.stale_after_s / 60 + p.cycle_h * 60)
    assert r["manual_refreshes"] >= 0
    assert len(r["series"]) == p.day_h * 60 + 1
    assert len(r["calls_per_15min"]) == p.day_h * 4


async def test_the_day_drives_marketds_own_scheduler_through_the_clock(
        fr: ModuleType, tmp_path: Path) -> None:
    """The judged row is marketd's Scheduler itself (no subclass): its wakes are timers on the
    FakeClock, so manual refreshes are fetched manual_wake_ms after they are asked for, by
    woken runs beside the interval ones; and the same seed gives the same day."""
    from marketd.config import SchedulerConfig
    from marketd.scheduler import Scheduler

    assert fr.scheduler_classes()["marketd"] is Scheduler
    p = fr.Params(limit_per_hour=100, manual_per_hour=6, **TINY)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    r = await fr.simulate(tmp_path / "a", "marketd", p)
    assert r["manual_refreshes"] > 0
    wake_s = SchedulerConfig().manual_wake_ms / 1000
    assert r["manual_latency_p50_s"] == pytest.approx(wake_s, abs=0.001)  # (ms in the db)
    intervals = math.ceil((p.warmup + p.day_h) * 3600 / SchedulerConfig().interval_seconds)
    assert r["scheduler_runs"] > intervals  # woken runs too
    again = await fr.simulate(tmp_path / "b", "marketd", p)
    assert again == r


def test_no_module_of_the_bench_is_over_500_lines() -> None:
    package = ROOT / "bench" / "freshness"
    sizes = {f.name: len(f.read_text().splitlines()) for f in package.glob("*.py")}
    assert {"__init__.py", "__main__.py", "cli.py", "simulation.py"} <= set(sizes)
    assert max(sizes.values()) <= 500, sizes


async def test_the_sweep_reuses_what_was_run(fr: ModuleType, tmp_path: Path) -> None:
    grid = fr.sweep_grid(fr.Params(**TINY), [20, 40], [3])
    done = {grid[0]: await fr.simulate(tmp_path, "marketd", grid[0])}
    rows = await fr.sweep(grid, tmp_path, done)
    assert [(r["limit_per_hour"], r["seed"]) for r in rows] == [(20, 3), (40, 3)]
    assert rows[0]["p95_age_min"] == done[grid[0]]["p95_age_min"]
    for row, p in zip(rows, grid, strict=True):
        opt = fr.optimum(p)
        assert row["rate_limited_429"] == 0
        assert row["p95_over_optimum"] == pytest.approx(row["p95_age_min"] / opt["p95_min"])
        assert row["p95_over_judged_optimum"] == pytest.approx(
            row["p95_age_min"] / opt["judged_p95_min"])


def test_quick_sweep_from_the_command_line(tmp_path: Path) -> None:
    """--quick --sweep: the rows, the goals judged on the marketd row, the sweep in the JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "bench.freshness", "--quick", "--sweep",
                           "--skus", "30", "--items", "100", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads((tmp_path / "freshness.json").read_text())
    assert set(data["results"]) == {"marketd", "before", "batch_in_calls_only"}
    assert [r["policy"] for r in data["rows"]][:3] == ["marketd", "before", "batch_in_calls_only"]
    judged = data["results"]["marketd"]
    assert data["goals"][0]["measured"] == pytest.approx(
        judged["p95_age_min"] / data["optimum"]["judged_p95_min"], abs=1e-4)
    assert data["goals"][1]["measured"] == judged["rate_limited_429"]
    sweep = data["sweep"]
    assert sweep["limits"] == [100, 200] and sweep["seeds"] == [7]
    assert [r["limit_per_hour"] for r in sweep["rows"]] == [100, 200]
    assert sweep["rows"][0]["p95_age_min"] == judged["p95_age_min"]  # the same seeded day
    assert "sweep: marketd's Scheduler" in proc.stdout
    # 30 SKUs at 100/hour: an 18-min cycle, shorter than the stale threshold
    assert "NOTE: for a scheduler that only fetches what is enqueued" in proc.stdout
