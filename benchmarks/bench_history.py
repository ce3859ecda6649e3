"""Time what recording the usage history adds to ``hfcache scan`` (issue 20: at most 10% on a 100,000-file cache).

    python benchmarks/bench_history.py                 # a 100,000-file cache in $TMPDIR, 5 rounds
    python benchmarks/bench_history.py --files 20000 --rounds 3 --check

Every scan records what it saw in the state database (``hfcache.history``): each cache's size
and free space, each revision's size and access time (a row written only when it changed, or
once a day), the processes holding a cache file (``/proc``). Timed side by side, interleaved,
the tree read into the page cache before each run (as ``bench_scan.py`` does), each a fresh
process with its output thrown away:

- ``scan --json --state off``: no database at all (the reference);
- ``scan --json --state S`` (repeat): a database that already holds this cache's history, as
  on a machine where metrics runs every 15 minutes: what every later run pays;
- ``scan --json --state NEW`` (first): a new database each time, every revision's row and
  first use written: what the first run on a machine pays (shown, no target).

Prints medians and minima, the ratios to the reference, and the target: the repeat run at most
1.10x. ``--check`` makes a missed target exit 1; ``--json`` prints it all. The generated cache
and databases are under ``$TMPDIR`` and removed at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_scan import prime, run_once  # noqa: E402
from make_cache import make_cache  # noqa: E402

TARGET = 1.10


def hfcache(*args: str) -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "hfcache")
    return [script, *args] if os.path.exists(script) else [sys.executable, "-m", "hfcache", *args]


def samples(state: str) -> int:
    import sqlite3

    db = sqlite3.connect(state)
    try:
        return int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
    finally:
        db.close()


def bench(root: str, work: str, rounds: int) -> dict[str, dict[str, float]]:
    state = os.path.join(work, "state.db")
    subprocess.run(hfcache("scan", "--cache-dir", root, "--json", "--state", state), check=True, stdout=subprocess.DEVNULL)
    seeded = samples(state)
    names = ["scan --json --state off", "scan --json --state S (repeat)", "scan --json --state NEW (first)"]
    times: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(rounds + 1):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            if "off" in name:
                target = "off"
            elif "repeat" in name:
                target = state
            else:
                target = os.path.join(work, f"new-{round_}.db")
            prime(root)
            elapsed, _, _ = run_once(hfcache("scan", "--cache-dir", root, "--json", "--state", target))
            if round_:  # round 0 warms up
                times[name].append(elapsed)
            if "NEW" in name:
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(target + suffix):
                        os.unlink(target + suffix)
    if samples(state) != seeded + rounds + 1:
        sys.exit(f"error: the repeat runs recorded {samples(state) - seeded} samples, not {rounds + 1}")
    return {n: {"median_s": statistics.median(t), "min_s": min(t)} for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="snapshot files of the generated cache (default 100000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the generated cache and databases")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hfcache-bench-history-")
    root = os.path.join(work, "hub")
    try:
        print(f"generating {args.files} snapshot files in {root} ...", file=sys.stderr)
        make_cache(root, args.files)
        results = bench(root, work, args.rounds)
    finally:
        if not args.keep:
            shutil.rmtree(work)
    off = results["scan --json --state off"]["median_s"]
    ratios = {n: r["median_s"] / off for n, r in results.items()}
    met = ratios["scan --json --state S (repeat)"] <= TARGET
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}",
        "files": args.files,
        "rounds": args.rounds,
        "results": results,
        "ratios": ratios,
        "target": TARGET,
        "target_met": met,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(report["machine"])
        print(f"{args.files} snapshot files; {args.rounds} interleaved rounds, medians")
        print(f"{'command':<34}{'median s':>10}{'min s':>10}{'ratio':>8}")
        for name, r in results.items():
            print(f"{name:<34}{r['median_s']:>10.2f}{r['min_s']:>10.2f}{ratios[name]:>8.2f}")
        ratio = ratios["scan --json --state S (repeat)"]
        print(f"recording (repeat run) {ratio:.2f}x  target <= {TARGET}x  {'met' if met else 'MISSED'}")
    if args.check and not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
