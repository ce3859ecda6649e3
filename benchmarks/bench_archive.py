"""Time archiving to a local folder against ``cp`` of the same files (issue 21: within 1.5x).

    python benchmarks/bench_archive.py                 # 2 GB of blobs in a hub cache, 3 interleaved rounds
    python benchmarks/bench_archive.py --gb 1 --rounds 5 --check

The cache is ``bench_verify.py``'s throughput cache (model repos of two shards of 256 MiB to
1 GiB of random bytes, each named by its sha256, and a ``config.json`` named by its git blob
hash). Timed, interleaved, every blob read into the page cache before each run (both
commands copy from memory, so the destination disk is what is measured), each into a new
folder on the same file system, removed after the run (untimed):

- ``cp`` of every blob file (one process; the reference of the issue);
- ``cp`` then ``sync -f`` (the same, made durable, as an archive must be before the cache
  lets its copy go);
- the archive of every revision (``hfcache.archive.run.archive_plan`` of a plan deleting
  them all, in a fresh process, as a prune's archiving step runs it, scan included): each
  file hashed as it is copied (sha256, and git's blob hash for the config), written under a
  temporary name, its writeback started as it goes, fsynced, moved into place, the folder
  fsynced; a manifest per revision.

Prints medians (and minima), MB/s, the ratios, and the target: the archive at most 1.5x
``cp``. ``--check`` makes a missed target exit 1; ``--json`` prints it all. Everything is
under ``$TMPDIR`` and removed at the end (``--keep`` keeps it).
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_verify import make_weights_cache  # noqa: E402

TARGET = 1.5
ARCHIVE = """
import sys, time
from hfcache.archive.run import archive_plan
from hfcache.archive.store import Archive
from hfcache.caches.registry import registry
from hfcache.caches.scan import scan_caches
from hfcache.plan.build import make_plan
from hfcache.plan.settings import Policy, Settings
root, dest = sys.argv[1], sys.argv[2]
inventory = scan_caches([root])
plan = make_plan(inventory, Policy(overrides=Settings(max_age=1.0, allow_remove_all=True)), now=time.time() + 86400)
archived, notes = archive_plan(plan, inventory, Archive(dest), registry().kinds)
revisions = sum(len(i.revisions) for i in inventory.caches[0].items)
assert len([u for u in archived.delete if u.what == "revision"]) == revisions and not archived.keep, notes
"""


def warm(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(8 * 1024 * 1024):
                pass


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def bench(root: str, work: str, blobs: list[str], rounds: int) -> dict[str, list[float]]:
    names = ["cp", "cp + sync", "hfcache archive"]
    times: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            dest = os.path.join(work, f"dest-{round_}-{names.index(name)}")
            warm(blobs)
            if name == "hfcache archive":
                took = timed([sys.executable, "-c", ARCHIVE, root, dest])
            else:
                os.makedirs(dest)
                started = time.perf_counter()
                subprocess.run(["cp", "--reflink=never", *blobs, dest], check=True)
                if name == "cp + sync":
                    subprocess.run(["sync", "-f", dest], check=True)
                took = time.perf_counter() - started
            times[name].append(took)
            shutil.rmtree(dest)
            subprocess.run(["sync"], check=True)  # the next run does not pay for this one's writes
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0, help="gigabytes of blobs (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the generated cache")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hfcache-bench-archive-")
    root = os.path.join(work, "hub")
    try:
        print(f"generating {args.gb} GB of blobs in {root} ...", file=sys.stderr)
        made = make_weights_cache(root, int(args.gb * 1e9))
        blobs = [path for path, _ in made["blobs"]]  # type: ignore[attr-defined]
        total = int(made["bytes"])  # type: ignore[call-overload]
        times = bench(root, work, blobs, args.rounds)
    finally:
        if not args.keep:
            shutil.rmtree(work)
    results = {
        n: {"median_s": statistics.median(t), "min_s": min(t), "MB/s": total / 1e6 / statistics.median(t)}
        for n, t in times.items()
    }
    ratio = results["hfcache archive"]["median_s"] / results["cp"]["median_s"]
    ratio_sync = results["hfcache archive"]["median_s"] / results["cp + sync"]["median_s"]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}",
        "bytes": total,
        "files": len(blobs),
        "rounds": args.rounds,
        "results": results,
        "ratio vs cp": ratio,
        "ratio vs cp + sync": ratio_sync,
        "target": TARGET,
        "target_met": ratio <= TARGET,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(report["machine"])
        print(f"{total / 1e9:.2f} GB in {len(blobs)} files; {args.rounds} interleaved rounds, medians")
        print(f"{'command':<18}{'median s':>10}{'min s':>10}{'MB/s':>10}")
        for name, r in results.items():
            print(f"{name:<18}{r['median_s']:>10.2f}{r['min_s']:>10.2f}{r['MB/s']:>10.0f}")
        verdict = "met" if ratio <= TARGET else "MISSED"
        print(f"hfcache archive vs cp {ratio:.2f}x (vs cp + sync {ratio_sync:.2f}x)  target <= {TARGET}x  {verdict}")
    if args.check and ratio > TARGET:
        sys.exit(1)


if __name__ == "__main__":
    main()
