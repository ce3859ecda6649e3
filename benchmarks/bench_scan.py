"""Time ``hfcache scan --json`` against ``huggingface_hub.scan_cache_dir`` and ``du -sb`` on the same tree.

    python benchmarks/bench_scan.py                       # makes a 100,000-file cache in /tmp, 5 rounds
    python benchmarks/bench_scan.py --files 1000000 --runs 3
    python benchmarks/bench_scan.py --cache /data/hf/hub  # an existing cache (read only)

Each round runs the three commands once, in a rotating order (interleaved, so a change in
the machine's load hits all three alike), each as a fresh process with its output thrown
away; one warm-up round is not counted. Before each run the whole tree is read into the page
cache (``--no-prime`` skips it), so every command runs warm whatever ran before it. Prints the
median and minimum wall time, the median peak RSS (``wait4``'s ``ru_maxrss``: the largest
single process), for hfcache also the peak memory of all its processes together (one more,
untimed run, sampling each process's PSS), the ratios, and the targets of issue 7: hfcache at
most 0.2x scan_cache_dir and 2x du, at most 80 MB (the larger of the two memory figures).
``--check`` makes a missed target exit 1. Before timing, the sizes hfcache and
scan_cache_dir report are compared: a fast scan that counts wrong is no result.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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

from make_cache import make_cache  # noqa: E402

TARGETS = {"vs scan_cache_dir": 0.2, "vs du -sb": 2.0, "peak RSS MB": 80.0}
HUB_SCAN = "import sys; from huggingface_hub import scan_cache_dir; scan_cache_dir(sys.argv[1])"


def commands(root: str, jobs: int | None) -> dict[str, list[str]]:
    # The installed command, as users run it (``python -m hfcache`` where there is none).
    script = os.path.join(os.path.dirname(sys.executable), "hfcache")
    hfcache = [script] if os.path.exists(script) else [sys.executable, "-m", "hfcache"]
    hfcache += ["scan", "--cache-dir", root, "--json"]
    if jobs:
        hfcache += ["--jobs", str(jobs)]
    return {
        "hfcache scan --json": hfcache,
        "scan_cache_dir": [sys.executable, "-c", HUB_SCAN, root],
        "du -sb": ["du", "-sb", root],
    }


def run_once(argv: list[str], *, sample: bool = False) -> tuple[float, float, float | None]:
    """Wall seconds, peak RSS (MB) and, with ``sample``, the peak total PSS (MB) of the process tree.

    ``ru_maxrss`` is the largest single process; with workers, the memory in use is the sum
    over the processes, shared pages counted once: PSS (Linux), sampled every 5 ms. The
    sampling takes CPU, so timed runs do not sample.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_pss = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG if sample else 0)
        if pid:
            break
        peak_pss = max(peak_pss, sum(pss_kb(p) for p in process_tree(proc.pid)) / 1024)
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.read().decode()[:500]}")  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    rss_kb = usage.ru_maxrss  # kilobytes on Linux
    return elapsed, rss_kb / 1024, (peak_pss if sample else None)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from each process's parent in ``/proc/<pid>/stat``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(name))
    tree = [pid]
    for p in tree:
        tree.extend(children.get(p, ()))
    return tree


def pss_kb(pid: int) -> int:
    """Proportional set size of one process (its private pages plus its share of shared ones); 0 once gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def same_totals(root: str) -> int:
    """hfcache's and huggingface_hub's size of the cache; exits when they differ."""
    ours = json.loads(subprocess.run(commands(root, None)["hfcache scan --json"], capture_output=True, check=True).stdout)
    theirs = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from huggingface_hub import scan_cache_dir as s; print(s(sys.argv[1]).size_on_disk)",
            root,
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    total = ours["caches"][0]["size_bytes"]
    if total != int(theirs.stdout):
        sys.exit(f"error: hfcache counts {total} bytes, scan_cache_dir {theirs.stdout.strip()}")
    return total


def prime(root: str) -> None:
    """Bring everything any of the three commands reads into the page cache: entries, inodes, link targets.

    Some machines page out cold page cache within seconds (this benchmark's own VM does:
    DAMON-based reclaim), and then a run's time depends on what ran before it. Priming
    right before each timed run gives all three the same warm cache. Eight processes walk
    the top-level folders, so a million-file tree is primed in seconds, before its start
    goes cold again.
    """
    with multiprocessing.get_context("fork").Pool(8) as pool:
        pool.map(_read_tree, [e.path for e in os.scandir(root)], chunksize=16)


def _read_tree(top: str) -> None:
    stack = [top]
    while stack:
        folder = stack.pop()
        if not os.path.isdir(folder) or os.path.islink(folder):
            os.lstat(folder)
            continue
        for entry in os.scandir(folder):
            entry.stat(follow_symlinks=False)
            if entry.is_symlink():
                os.readlink(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)


def bench(root: str, runs: int, jobs: int | None, prime_each: bool = True) -> dict[str, dict[str, float]]:
    cmds = commands(root, jobs)
    names = list(cmds)
    times: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(runs + 1):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            if prime_each:
                prime(root)
            elapsed, peak, _ = run_once(cmds[name])
            if round_:  # round 0 warms the page cache
                times[name].append(elapsed)
                rss[name].append(peak)
    results = {
        n: {"median_s": statistics.median(times[n]), "min_s": min(times[n]), "rss_mb": statistics.median(rss[n])} for n in names
    }
    if os.path.exists("/proc/self/smaps_rollup"):  # one more, untimed run of hfcache for the memory of all its processes
        ours = results["hfcache scan --json"]
        if prime_each:
            prime(root)
        ours["tree_pss_mb"] = run_once(cmds["hfcache scan --json"], sample=True)[2]  # type: ignore[assignment]
    return results


def count_files(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="an existing hub cache to time (default: generate one)")
    parser.add_argument("--files", type=int, default=100_000, help="snapshot files of the generated cache (default 100000)")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--jobs", type=int, help="pass --jobs N to hfcache scan")
    parser.add_argument("--keep", action="store_true", help="keep the generated cache")
    parser.add_argument(
        "--no-prime", action="store_true", help="do not read the whole tree into the page cache before each timed run"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    made = None
    root = args.cache
    # Every scan records the usage history (as users' scans do): into a folder of its own, never the user's.
    history = tempfile.mkdtemp(prefix="hfcache-bench-state-")
    os.environ["HFCACHE_STATE"] = os.path.join(history, "state.db")
    if root is None:
        made = tempfile.mkdtemp(prefix="hfcache-bench-")
        root = os.path.join(made, "hub")
        print(f"generating {args.files} snapshot files in {root} ...", file=sys.stderr)
        make_cache(root, args.files)
    try:
        total = same_totals(root)
        files = count_files(root)
        results = bench(root, args.runs, args.jobs, prime_each=not args.no_prime)
    finally:
        shutil.rmtree(history)
        if made and not args.keep:
            shutil.rmtree(made)

    ours, hub, du = (results[n] for n in ("hfcache scan --json", "scan_cache_dir", "du -sb"))
    ratios = {
        "vs scan_cache_dir": ours["median_s"] / hub["median_s"],
        "vs du -sb": ours["median_s"] / du["median_s"],
        # The largest process, or all of them together when workers ran (whichever is more).
        "peak RSS MB": max(ours["rss_mb"], ours.get("tree_pss_mb") or 0.0),
    }
    met = {k: ratios[k] <= TARGETS[k] for k in TARGETS}
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}",
        "cache": root,
        "files": files,
        "bytes": total,
        "runs": args.runs,
        "results": results,
        "ratios": ratios,
        "targets_met": met,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['machine']}")
        print(f"{root}: {files} files (links and blobs), {total / 1e12:.1f} TB apparent; {args.runs} interleaved runs each")
        print(f"{'command':<22}{'median s':>10}{'min s':>10}{'peak RSS MB':>14}{'all processes':>15}")
        for name, r in results.items():
            tree = f"{r['tree_pss_mb']:>15.1f}" if r.get("tree_pss_mb") else ""
            print(f"{name:<22}{r['median_s']:>10.2f}{r['min_s']:>10.2f}{r['rss_mb']:>14.1f}{tree}")
        for key, value in ratios.items():
            unit = "" if key == "peak RSS MB" else "x"
            print(f"hfcache {key:<18} {value:6.2f}{unit}  target <= {TARGETS[key]}{unit}  {'met' if met[key] else 'MISSED'}")
    if args.check and not all(met.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
