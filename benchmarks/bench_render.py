"""What showing a scan or a plan to people costs, against the JSON of the same (issue 17).

    python benchmarks/bench_render.py                 # 100,000 snapshot files, 5 rounds
    python benchmarks/bench_render.py --files 20000 --rounds 3 --check

Each pair runs the same command on the same generated hub cache, once with ``--json`` and
once as a table (and as Markdown), the formats taking turns; stdout is a pipe, as under cron
or in CI, so tables are laid out 200 columns wide. Reported: median wall seconds and the
ratio to the JSON. Target: a table costs at most 1.5 times the JSON (``--check`` exits 1
when a ratio is over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from make_cache import make_cache  # noqa: E402 - beside this script

TARGET = 1.5
COMMANDS = {
    "scan": ["scan"],
    "scan --revisions": ["scan", "--revisions"],
    "prune --keep 1 --junk (plan)": ["prune", "--dry-run", "--keep", "1", "--junk", "--no-config"],
}
FORMATS = {"json": ["--json"], "table": [], "markdown": ["--format", "markdown"]}


def timed(argv: list[str], root: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hfcache", *argv, "--cache-dir", root],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="snapshot files of the generated cache (default 100000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a table costs more than 1.5x the JSON")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="hfcache-render-")

    # Every scan and prune records the usage history: into the work folder, never the user's own.

    os.environ["HFCACHE_STATE"] = os.path.join(work, "state.db")
    try:
        root = os.path.join(work, "hub")
        make_cache(root, args.files)
        times: dict[str, dict[str, list[float]]] = {name: {f: [] for f in FORMATS} for name in COMMANDS}
        for name, argv in COMMANDS.items():
            timed([*argv, "--json"], root)  # warm the page cache once
            for _ in range(args.rounds):
                for fmt, extra in FORMATS.items():
                    times[name][fmt].append(timed([*argv, *extra], root))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results = {name: {fmt: statistics.median(values) for fmt, values in by_format.items()} for name, by_format in times.items()}
    worst = max(r[fmt] / r["json"] for r in results.values() for fmt in ("table", "markdown"))
    if args.json:
        print(json.dumps({"files": args.files, "rounds": args.rounds, "results": results, "worst_ratio": worst}, indent=2))
    else:
        print(f"{args.files} files, {args.rounds} rounds, median seconds (ratio to --json)")
        for name, r in results.items():
            cells = "  ".join(f"{fmt} {r[fmt]:.2f}s ({r[fmt] / r['json']:.2f}x)" for fmt in FORMATS)
            print(f"{name:32} {cells}")
    if args.check and worst > TARGET:
        raise SystemExit(f"a table costs {worst:.2f}x the JSON (target {TARGET}x)")


if __name__ == "__main__":
    main()
