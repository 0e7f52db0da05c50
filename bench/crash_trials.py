"""The long crash loop: SIGKILL the daemon at random moments under load, many times, then audit.

    python bench/crash_trials.py --trials 200 --seed 7
    python bench/crash_trials.py --trials 50 --limit 5/10s --latency-ms 400 --keep

The same trials and audit as tests/e2e/test_crash_trials.py (which CI runs short): nothing
acknowledged is lost, nothing is left running, no dedupe_key has two active jobs, the database
passes integrity_check, and the simulator (enforcing the same limit) saw no window over it and
no more calls than the daemon had recorded. Prints a summary; exits 1 if any promise broke.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.test_crash_trials import crash_trials  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="SIGKILLs (default 50)")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000,
                        help="seed of the kill moments and the load (default: from the clock)")
    parser.add_argument("--limit", default="20/10s",
                        help="the limit both the daemon and the simulator enforce per provider")
    parser.add_argument("--latency-ms", type=int, default=150, help="simulated answer time")
    parser.add_argument("--fault-rate", type=float, default=0.05,
                        help="probability of a provider 5xx per call")
    parser.add_argument("--drain-s", type=float, default=60,
                        help="how long the final run may drain the queue before SIGTERM")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="marketd-crash-"))
    print(f"crash trials in {workdir}: {args.trials} trials, seed {args.seed}", flush=True)
    try:
        report = crash_trials(workdir, args.trials, args.seed, limit=args.limit,
                              latency_ms=args.latency_ms, fault_rate=args.fault_rate,
                              drain_s=args.drain_s, say=lambda s: print(s, flush=True))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report.summary())
    print(f"rerun: python bench/crash_trials.py --trials {args.trials} --seed {args.seed}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
