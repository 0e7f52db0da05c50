"""Run every benchmark, one process each, then print one table of every goal.

    python -m bench [--quick] [--only NAME ...] [--out DIR]

Writes each benchmark's JSON (and freshness.png) to bench/results/, plus summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench._common import RESULTS, ROOT, table

BENCHES = ("enqueue_batch", "enqueue_single", "selection", "end_to_end", "startup_rss",
           "freshness", "postgres")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", choices=BENCHES, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    failed = []
    timings = {}
    for name in args.only or BENCHES:
        print(f"\n=== bench.{name} ===", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", f"bench.{name}", "--out", str(args.out)]
        if args.quick:
            cmd.append("--quick")
        if subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode != 0:
            failed.append(name)
        timings[name] = round(time.perf_counter() - t0, 1)
    rows, summary, skipped = [], {}, []
    for name in args.only or BENCHES:
        path = args.out / f"{name}.json"
        if name in failed:
            continue
        if not path.exists():  # bench.postgres without a PostgreSQL server
            skipped.append(name)
            continue
        data = json.loads(path.read_text())
        summary[name] = data["goals"]
        for g in data["goals"]:
            rows.append([name, g["name"], f"{g['goal_op']} {g['goal']:g}{g['unit']}",
                         f"{g['measured']:.2f}{g['unit']}", "yes" if g["holds"] else "NO"])
    print("\n=== all goals ===")
    print(table(["bench", "measure", "goal", "measured", "holds?"], rows))
    (args.out / "summary.json").write_text(json.dumps(
        {"goals": summary, "seconds": timings, "failed": failed, "skipped": skipped,
         "quick": args.quick},
        indent=2) + "\n")
    print(f"\nseconds: {timings}")
    if skipped:
        print(f"skipped (see above why): {', '.join(skipped)}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
