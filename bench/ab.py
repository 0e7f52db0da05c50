"""Two checkouts' marketd, one drain each in turn: the A/B comparison behind bench/README.md's
"tried" list.

One bench run moves more than most single changes do (end_to_end's rounds spread by 0.3x
either way), so a change is judged here instead: end_to_end's own marketd drain
(``run_marketd``: 6,000 portfolio jobs through the real Daemon, an instant provider) runs in a
fresh process per round with ``PYTHONPATH`` set to checkout A, then B, alternating which goes
first, and the medians of the process phase's jobs/s are compared. The figure is B's median
over A's, from the same run.

    python -m bench.ab OLD_CHECKOUT [NEW_CHECKOUT] [--rounds 12] [--jobs 6000]

A checkout is a folder holding ``marketd/`` and ``bench/`` (``git archive REV marketd bench |
tar -x -C DIR``); NEW defaults to this one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DRAIN = """
import asyncio, json, sys, tempfile
from pathlib import Path
import bench.end_to_end as e
e.quiet_logging()
async def main():
    jobs = e.workload(int(sys.argv[1]), "portfolio", "A")
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(await e.run_marketd(Path(d), jobs)))
asyncio.run(main())
"""


def drain(tree: Path, jobs: int) -> float:
    """Jobs/s of one drain's process phase (scheduler runs until nothing is pending)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", DRAIN, str(jobs)], cwd=tree, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench.ab: the drain in {tree} failed:\n{out.stderr.strip()}")
    return jobs / json.loads(out.stdout.strip().splitlines()[-1])["process_s"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    p.add_argument("a", type=Path, help="the baseline checkout")
    p.add_argument("b", type=Path, nargs="?", default=ROOT, help="the changed one (this one)")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--jobs", type=int, default=6000)
    args = p.parse_args(argv)
    for tree in (args.a, args.b):
        if not (tree / "marketd").is_dir() or not (tree / "bench").is_dir():
            p.error(f"{tree} holds no marketd/ and bench/")
    rates: dict[Path, list[float]] = {args.a: [], args.b: []}
    for r in range(args.rounds):
        for tree in (args.a, args.b) if r % 2 == 0 else (args.b, args.a):
            rates[tree].append(drain(tree, args.jobs))
        print(f"round {r + 1}/{args.rounds}: A {rates[args.a][-1]:,.0f} jobs/s, "
              f"B {rates[args.b][-1]:,.0f} jobs/s", file=sys.stderr)
    med = {t: statistics.median(v) for t, v in rates.items()}
    for name, tree in (("A", args.a), ("B", args.b)):
        print(f"{name} {tree}: median {med[tree]:,.0f} jobs/s "
              f"(rounds {min(rates[tree]):,.0f}-{max(rates[tree]):,.0f})")
    print(f"B/A = {med[args.b] / med[args.a]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
