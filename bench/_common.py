"""What every benchmark shares: arguments, the result table and JSON, quiet logging, configs,
bulk-built job tables, and a provider that answers at once.

Every figure a benchmark reports is a ratio against a baseline measured in the same run on the
same machine; absolute numbers are printed too, for reading, never for judging.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


# ---- arguments, goals, output ------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a few seconds on small sizes (the smoke test); figures are not meaningful")
    p.add_argument("--out", type=Path, default=RESULTS,
                   help="folder for the JSON (and PNG) results (default bench/results)")
    return p


@dataclass
class Goal:
    """One line of the final table: what is measured, the goal, and whether it holds."""

    name: str
    measured: float
    goal: float
    higher_is_better: bool
    unit: str = "x"
    note: str = ""

    @property
    def holds(self) -> bool:
        return self.measured >= self.goal if self.higher_is_better else self.measured <= self.goal

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured": round(self.measured, 4), "goal": self.goal,
                "goal_op": ">=" if self.higher_is_better else "<=", "unit": self.unit,
                "holds": self.holds, "note": self.note}


@dataclass
class Report:
    bench: str
    quick: bool
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the measurements, for reading
    goals: list[Goal] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def goal(self, name: str, measured: float, goal: float, *, higher_is_better: bool,
             unit: str = "x", note: str = "") -> Goal:
        g = Goal(name, measured, goal, higher_is_better, unit, note)
        self.goals.append(g)
        return g

    def finish(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        print_rows(self.rows)
        print_goals(self.goals, self.bench)
        path = out / f"{self.bench}.json"
        data = {
            "bench": self.bench,
            "quick": self.quick,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "params": self.params,
            "rows": self.rows,
            "goals": [g.as_dict() for g in self.goals],
            **self.extra,
        }
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        return path


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def print_rows(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    headers = list(dict.fromkeys(k for r in rows for k in r))
    print()
    print(table(headers, [[r.get(h, "") for h in headers] for r in rows]))


def print_goals(goals: Sequence[Goal], bench: str) -> None:
    if not goals:
        return
    print(f"\n{bench}: goals")
    print(table(["measure", "goal", "measured", "holds?"], [
        [g.name, f"{'>=' if g.higher_is_better else '<='} {g.goal:g}{g.unit}",
         f"{g.measured:.2f}{g.unit}", "yes" if g.holds else "NO"] for g in goals]))


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t0


# ---- marketd wiring ---------------------------------------------------------------------------


def quiet_logging(level: str = "info") -> None:
    """marketd's own production logging (JSON lines, rendered at ``level``) sent to /dev/null:
    the rendering cost stays in the measurement, the lines stay off the table."""
    from marketd.logs import configure_logging

    saved = sys.stderr
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    try:
        configure_logging(level, "json", cache=True)  # as marketd serve configures it
    finally:
        sys.stderr = saved


def make_config(db: Path | str, *, providers: dict[str, dict[str, Any]] | None = None,
                **sections: dict[str, Any]) -> Any:
    """A Config on defaults: the given database, port 0, and only the providers named (with
    their options); the others disabled."""
    from marketd.config import parse_config

    data: dict[str, Any] = {"database": {"path": str(db)}, "server": {"port": 0}}
    provs: dict[str, Any] = {p: {"enabled": False} for p in ("stockx", "alias", "ebay")}
    for name, opts in (providers or {}).items():
        provs[name] = {"enabled": True, **opts}
    data["providers"] = provs
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return parse_config(data, env={})


async def open_daemon(config: Any, clients: Any, store_cls: Any = None) -> Any:
    """``Daemon.create``; with ``store_cls`` (a bench/prototypes.py Store subclass) the daemon
    opens that class instead of marketd's Store (bench-only, for a prototype's row)."""
    import marketd.app as app_mod

    store = None
    if store_cls is not None:
        store = await store_cls.open(config.database.path)
    return await app_mod.create_daemon(config, clients=clients, store=store)


def instant_provider_factory(registry: dict[str, Any] | None = None) -> Any:
    """A client factory for ``Daemon.create``: a provider that spends one budget token per
    SKU group (as the real clients do when the catalog is cached) and answers at once with a
    price for every job of the group."""
    from marketd.models import Job, Price
    from marketd.providers.base import FetchResult, Provider, ProviderContext

    class InstantProvider(Provider):
        def __init__(self, ctx: ProviderContext) -> None:
            super().__init__(ctx)
            self.groups = 0

        async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
            await self.ctx.budget.spend()
            self.groups += 1
            now = self.ctx.clock.now()
            return FetchResult(outcomes={
                j.id: Price(j.provider, j.sku, j.size_key, "GBP", 9600, 9100, 9400, now)
                for j in jobs})

    def make(ctx: ProviderContext) -> Provider:
        p = InstantProvider(ctx)
        p.name = ctx.config.name  # type: ignore[misc]
        if registry is not None:
            registry[ctx.config.name] = p
        return p

    return make


# ---- bulk job tables ---------------------------------------------------------------------------

SIZES = ("6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12")


def iso_at(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def job_rows(n: int, *, provider: str = "stockx", start: float = 1_767_225_600.0,
             prefix: str = "J", status: str = "pending") -> Iterator[tuple[Any, ...]]:
    """``n`` market_jobs rows: 4 sizes per SKU, priorities mostly background, created a
    millisecond apart (ids and keys sortable, so the build appends to every index)."""
    base = int(start) - 86400
    second = ""
    for i in range(n):
        sku = f"{prefix}{i // 4:08d}"
        size = SIZES[i % 4]
        r = i % 20
        priority = 200 if r == 0 else 150 if r < 4 else 100
        ms = i % 1000
        if ms == 0 or not second:
            second = iso_at(base + i // 1000)[:-4]
        yield (f"{prefix}{i:011d}", provider, sku, size, priority, status,
               f"{provider}|{sku}|{size}", f"{second}{ms:03d}Z")


INSERT_JOB = ("INSERT INTO market_jobs (id, provider, sku, size, priority, status, dedupe_key, "
              "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def build_jobs_db(path: Path, n: int, **kw: Any) -> float:
    """Create ``path`` with marketd's real schema (marketd/schema.sql) and ``n`` pending jobs,
    with raw sqlite3 executemany. Returns the seconds it took."""
    from marketd import sql

    t0 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while building
    conn.execute("BEGIN")
    # executescript would commit mid-way; the indexes are built after the rows (faster)
    statements = list(sql.statements(sql.schema()))
    indexes = [s for s in statements if s.upper().startswith("CREATE") and " INDEX " in s.upper()]
    for stmt in statements:
        if stmt not in indexes:
            conn.execute(stmt)
    for version, name, _ in sql.migrations():
        conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                     (version, name, iso_at(time.time())))
    conn.executemany(INSERT_JOB, job_rows(n, **kw))
    for stmt in indexes:
        conn.execute(stmt)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - t0


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB, from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out
