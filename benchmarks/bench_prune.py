"""Time ``hfcache prune`` deleting 10,000 revisions out of 20,000 repos against ``rm -rf`` of exactly the same paths.

    python benchmarks/bench_prune.py                          # 20,000 repos, 10,000 revisions go, 3 rounds
    python benchmarks/bench_prune.py --rounds 5 --json
    python benchmarks/bench_prune.py --repos 2000 --delete 1000
    python benchmarks/bench_prune.py --baseline HEAD~2        # compare with another commit than bd50451
    python benchmarks/bench_prune.py --baseline-tree ../old   # or with the hfcache package of another checkout
    python benchmarks/bench_prune.py --jobs 4,8 --no-baseline # this checkout with -j 4 and with -j 8, side by side

The cache (a hub cache, laid out as huggingface_hub lays one out): ``--repos`` repos, of which
``--delete`` have two revisions, an old one and the current one that ``refs/main`` names (a
model updated since it was first downloaded; the update changes about a third of the files,
the rest of the blobs are shared); the others have one revision. The policy is
``--keep 1``: it plans exactly the ``--delete`` old revisions (each with the blobs only it
uses, its ``.no_exist/<commit>`` where there is one, and its tag where it has one: about a
third are tagged ``v1.0``). No repo is removed whole. Blobs are sparse files of the sizes of
real weights; their times are those of a download 3 to 12 months ago (the old revision) and
1 to 60 days ago (the current one). The same seed gives the same tree.

Each round runs three things, in a rotating order, each on its own fresh copy of the cache.
Before each timed run, untimed: ``cp -a`` of a template; the same command once on a small
cache (so the interpreter, libraries and modules are in memory); ``sync`` (so no writeback
or discard of the copying lands in the timed run); the whole tree read into the page cache.

* ``hfcache prune --keep 1 --no-config --yes --json`` of this checkout (the whole command,
  as a user runs it: scan, plan, execution, report; its console script's code, with a timer
  around ``hfcache.prune.run_plan``), and from that same run the execution phase alone
  (``run_plan``: checks, locks, audit log, deletions). With ``--jobs 4,8``: once with
  ``--jobs 4`` and once with ``--jobs 8``, as two commands of each round (the ratios are
  those of the first);
* the same command of the baseline: the code as of ``--baseline`` (default bd50451, before
  issue 15), from a ``git worktree`` made in the temporary folder and removed afterwards;
* ``rm -rf`` of exactly the paths the prune deletes (``xargs -0 rm -rf`` over the list,
  relative to the root; xargs packs it into as few ``rm`` processes as 1 MB of arguments
  allows: about 4 MB of names at full size, so a handful).

After each run the copy is compared with the template: everything planned must be gone and
everything else still there (new files outside the repo folders, such as the prune lock in
``.locks/``, are allowed). Each prune's JSON must report exactly ``--delete`` revisions, all
``deleted``, with the planned bytes. A mismatch stops the benchmark with exit 1: a fast
prune that deletes the wrong things is no result.

Prints the median and minimum wall time of ``--rounds`` rounds (default 3), the median CPU
time (user + system, the command and all its processes: less sensitive than wall time to
other load on the machine), the median peak RSS (``wait4``'s ``ru_maxrss``: the largest
single process; about 11 MB is the floor of the launcher that starts it), and the ratios
against ``rm -rf`` (issue 15: within 2x) and against the baseline (not slower). ``--check``
makes a missed target exit 1; ``--json`` prints it all as JSON.

Everything is written under ``$TMPDIR`` (about 2 GB at full size: the template and one copy
at a time; the blobs are sparse). At full size, generating the cache takes about a minute
and each run about 3 minutes with its copy, warm-up, check and clean-up: the default takes
about half an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from bench_scan import prime  # noqa: E402
from make_cache import blob_size, file_names, sha  # noqa: E402

BASELINE = "bd50451"  # before issue 15's rewrite of execution
POLICY = ["--keep", "1"]
RM = ["xargs", "-0", "-s", "1048576", "rm", "-rf", "--"]
TARGETS = {"prune vs rm -rf": 2.0, "execution vs rm -rf": 2.0, "prune vs baseline": 1.0, "execution vs baseline": 1.0}
CHANGED = 0.3  # the share of a repo's files an update changes
TAGGED = 0.3  # the share of old revisions with a tag (refs/v1.0)
NO_EXIST = 0.25  # the share of revisions with a .no_exist/<commit> marker
DAY = 86400.0

# The hfcache command exactly as its console script runs it (hfcache.cli:run), with a timer
# around hfcache.prune.run_plan: the execution phase, measured inside the same run.
COMMAND = """\
import os, sys, time
import hfcache
if not os.path.abspath(hfcache.__file__).startswith(os.path.join(os.environ["BENCH_PRUNE_TREE"], "")):
    sys.exit(f"hfcache was imported from {hfcache.__file__}, not from {os.environ['BENCH_PRUNE_TREE']}")
import hfcache.prune as prune
_run_plan = prune.run_plan
def run_plan(*args, **kwargs):
    started = time.perf_counter()
    try:
        return _run_plan(*args, **kwargs)
    finally:
        with open(os.environ["BENCH_PRUNE_EXEC_FILE"], "w") as f:
            f.write(repr(time.perf_counter() - started))
prune.run_plan = run_plan
sys.argv[0] = "hfcache"
from hfcache.cli import run
run()
"""


# Runs a command and reports its wall time, exit code, peak RSS (kB) and CPU time on the fd argv[1].
LAUNCH = """\
import json, os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
elapsed = time.perf_counter() - started
proc.returncode = code = os.waitstatus_to_exitcode(status)
os.write(int(sys.argv[1]), json.dumps([elapsed, code, usage.ru_maxrss, usage.ru_utime + usage.ru_stime]).encode())
"""

# ---------------------------------------------------------------------------------------------
# The cache


def _blob(path: str, size: int, atime: float, mtime: float) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: no data blocks
    os.utime(path, (atime, mtime))


def _snapshot(repo_dir: str, commit: str, files: dict[str, str]) -> None:
    snap = os.path.join(repo_dir, "snapshots", commit)
    for name, etag in files.items():
        link = os.path.join(snap, name)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(*([".."] * (name.count("/") + 2)), "blobs", etag), link)


def make_prune_cache(root: str, repos: int, delete: int, seed: int = 0) -> dict[str, object]:
    """Write the cache; returns what ``--keep 1`` must delete, relative to ``root``.

    ``doomed``: the paths to remove (snapshot folders, blobs only the old revision uses, its
    tag, its ``.no_exist`` marker), ``units``: the old snapshot folders, ``reclaim_bytes``:
    the bytes of the doomed blobs.
    """
    if not 0 <= delete <= repos:
        raise ValueError("--delete must be between 0 and --repos")
    rng = random.Random(seed)
    now = time.time()
    updated = set(rng.sample(range(repos), delete))
    doomed: list[str] = []
    units: list[str] = []
    reclaim = 0
    os.makedirs(root)
    for index in range(repos):
        repo = f"{'models' if index % 10 < 9 else 'datasets'}--org{index % 97}--repo-{index}"
        repo_dir = os.path.join(root, repo)
        blobs_dir = os.path.join(repo_dir, "blobs")
        os.makedirs(blobs_dir)
        os.makedirs(os.path.join(repo_dir, "refs"))
        names = file_names(rng, rng.randint(5, 15))
        sizes = {name: blob_size(rng, name) for name in names}
        etags = {name: sha(index, name, 0, n=64 if sizes[name] > 10_000_000 else 40) for name in names}
        first = sha(index, "commit", 0)
        if index not in updated:
            when = now - rng.uniform(1, 360) * DAY
            for name in names:
                _blob(os.path.join(blobs_dir, etags[name]), sizes[name], when + rng.uniform(0, now - when), when)
            _snapshot(repo_dir, first, etags)
            main = first
        else:
            old = now - rng.uniform(90, 360) * DAY
            new = now - rng.uniform(1, 60) * DAY
            changed = [name for name in names if rng.random() < CHANGED] or [rng.choice(names)]
            current = dict(etags)
            for name in names:  # the first download: read for a while, until the update
                shared = name not in changed
                _blob(os.path.join(blobs_dir, etags[name]), sizes[name], (new if shared else old + rng.uniform(0, 30) * DAY), old)
            for name in changed:  # the update: new blobs for the changed files, read since
                size = blob_size(rng, name)
                current[name] = sha(index, name, 1, n=64 if size > 10_000_000 else 40)
                _blob(os.path.join(blobs_dir, current[name]), size, new + rng.uniform(0, now - new), new)
                doomed.append(f"{repo}/blobs/{etags[name]}")
                reclaim += sizes[name]
            _snapshot(repo_dir, first, etags)
            main = sha(index, "commit", 1)
            _snapshot(repo_dir, main, current)
            doomed.append(f"{repo}/snapshots/{first}")
            units.append(f"{repo}/snapshots/{first}")
            if rng.random() < TAGGED:
                with open(os.path.join(repo_dir, "refs", "v1.0"), "w") as f:
                    f.write(first)
                doomed.append(f"{repo}/refs/v1.0")
            if rng.random() < NO_EXIST:
                marker = os.path.join(repo_dir, ".no_exist", first)
                os.makedirs(marker)
                open(os.path.join(marker, "adapter_config.json"), "w").close()
                doomed.append(f"{repo}/.no_exist/{first}")
        with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
            f.write(main)
        if rng.random() < NO_EXIST:
            marker = os.path.join(repo_dir, ".no_exist", main)
            os.makedirs(marker)
            open(os.path.join(marker, "adapter_config.json"), "w").close()
    return {"doomed": doomed, "units": units, "reclaim_bytes": reclaim, "revisions": repos + delete}


def listing(root: str) -> set[str]:
    """Every entry under ``root`` (folders, files, links; links not followed), relative to it."""
    out = set()
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        prefix = "" if rel == "." else rel + "/"
        out.update(prefix + name for name in dirs)
        out.update(prefix + name for name in files)
    return out


def compare(root: str, template: set[str], expected: set[str]) -> str | None:
    """Why the tree at ``root`` is not ``expected`` (the template without what the plan deletes), or None."""
    found = listing(root)
    lost = sorted(expected - found)
    left = sorted((found & template) - expected)
    new = sorted(p for p in found - template if p.split("/")[0] in template)  # a lock or journal outside the repos is fine
    problems = []
    for what, paths in (("deleted but not planned", lost), ("planned but still there", left), ("new inside repos", new)):
        if paths:
            problems.append(f"{len(paths)} {what} (e.g. {', '.join(paths[:3])})")
    return "; ".join(problems) or None


# ---------------------------------------------------------------------------------------------
# Running


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, check=True).stdout.strip()


def describe_tree(tree: str) -> str:
    """The commit a checkout is at, and whether its hfcache/ has changes not committed."""
    try:
        head = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--", "hfcache"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return tree
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def run_timed(name: str, argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None, stdin=None, stdout=None):
    """Wall seconds, peak RSS (MB) and CPU seconds (user + system) of one command and its descendants; exits on failure.

    The command is started by a small launcher (LAUNCH): ``ru_maxrss`` counts the pages of
    the process that forked the command, and this one holds the listing of the whole tree.
    """
    read, write = os.pipe()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(write), *argv],
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout or subprocess.DEVNULL,
            stderr=err,
            pass_fds=(write,),
        )
        os.close(write)
        with os.fdopen(read, "rb") as f:
            report = f.read()
        proc.wait()
        elapsed, code, rss_kb, cpu = json.loads(report) if report else (0.0, proc.returncode, 0, 0.0)
        if code != 0:
            err.seek(0)
            raise SystemExit(f"error: {name} exited {code}: {err.read().decode()[-2000:]}")
    return elapsed, rss_kb / 1024, cpu


def run_prune(name: str, tree: str, root: str, work: str, extra: Sequence[str] = ()) -> dict[str, object]:
    out_path, log, exec_file = (os.path.join(work, file) for file in ("prune.json", "audit.log", "exec_s"))
    for path in (log, exec_file):
        if os.path.exists(path):
            os.unlink(path)
    env = {**os.environ, "PYTHONPATH": tree, "BENCH_PRUNE_TREE": tree, "BENCH_PRUNE_EXEC_FILE": exec_file}
    env.pop("HFCACHE_CONFIG", None)
    argv = [sys.executable, "-c", COMMAND, "prune", "--cache-dir", root, *POLICY, "--no-config", "--yes", "--json", *extra]
    with open(out_path, "wb") as out:
        # In the work folder: ``python -c`` puts the current folder first on sys.path, ahead of PYTHONPATH.
        elapsed, rss, cpu = run_timed(f"{name} ({tree})", [*argv, "--log", log], cwd=work, env=env, stdout=out)
    with open(out_path, encoding="utf-8") as f:
        result = json.load(f)
    exec_s = None
    if os.path.exists(exec_file):
        with open(exec_file) as f:
            exec_s = float(f.read())
    with open(log, encoding="utf-8") as f:
        audit_lines = sum(1 for _ in f)
    return {"elapsed": elapsed, "rss": rss, "cpu": cpu, "exec_s": exec_s, "result": result, "audit_lines": audit_lines}


def check_result(name: str, result: dict, root: str, cache: dict[str, object]) -> dict[str, object]:
    """The counts a prune reports; exits when they are not exactly the planned ones."""
    units = result.get("delete", [])
    statuses: dict[str, int] = {}
    for u in units:
        statuses[u.get("status")] = statuses.get(u.get("status"), 0) + 1
    paths = sorted(os.path.relpath(u["path"], root) for u in units if u.get("what", "revision") == "revision")
    reclaim = sum(u.get("reclaim_bytes", 0) for u in units)
    problems = []
    if len(units) != len(cache["units"]) or paths != sorted(cache["units"]):
        problems.append(
            f"planned {len(units)} units, {len(paths)} of them revisions, not the {len(cache['units'])} old revisions"
        )
    if statuses != {"deleted": len(units)}:
        problems.append(f"statuses {statuses}")
    if reclaim != cache["reclaim_bytes"]:
        problems.append(f"planned {reclaim} bytes, not {cache['reclaim_bytes']}")
    if problems:
        raise SystemExit(f"error: {name}: " + "; ".join(problems))
    return {"units_deleted": statuses.get("deleted", 0), "reclaim_bytes": reclaim, "freed_bytes": result.get("freed_bytes")}


def bench(
    template: str,
    work: str,
    trees: dict[str, tuple[str, list[str]]],
    cache: dict[str, object],
    rounds: int,
    expected: set[str],
    entries: set[str],
) -> dict[str, dict[str, object]]:
    """Each command of ``trees`` (name -> its checkout and extra options) and ``rm -rf``, ``rounds`` times."""
    doomed_list, warm_list = os.path.join(work, "doomed.list"), os.path.join(work, "warm.list")
    warm_template, warm = os.path.join(work, "warm-hub"), os.path.join(work, "warm")
    warm_cache = make_prune_cache(warm_template, 4, 2, seed=1)
    for path, paths in ((doomed_list, cache["doomed"]), (warm_list, warm_cache["doomed"])):
        with open(path, "wb") as f:
            f.write(b"".join(p.encode() + b"\0" for p in paths))  # type: ignore[union-attr]
    names = [*trees, "rm -rf"]
    runs: dict[str, list[dict[str, object]]] = {n: [] for n in names}
    copy = os.path.join(work, "copy")
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            subprocess.run(["cp", "-a", template, copy], check=True)
            subprocess.run(["cp", "-a", warm_template, warm], check=True)
            # Warm-up: the same command on the small cache, so that the interpreter, the libraries
            # and hfcache's modules are read from memory (this VM pages out cold page cache within
            # seconds, and a copy of the big cache takes longer than that); then the big tree.
            if name == "rm -rf":
                with open(warm_list, "rb") as stdin:
                    run_timed(name, RM, cwd=warm, stdin=stdin)
            else:
                run_prune(name, trees[name][0], warm, work, trees[name][1])
            subprocess.run(["rm", "-rf", warm], check=True)
            os.sync()  # what the copies and removals wrote (and discard) is not flushed during the timed run
            prime(copy)
            if name == "rm -rf":
                with open(doomed_list, "rb") as stdin:
                    elapsed, rss, cpu = run_timed(name, RM, cwd=copy, stdin=stdin)
                run: dict[str, object] = {"elapsed": elapsed, "rss": rss, "cpu": cpu}
            else:
                run = run_prune(name, trees[name][0], copy, work, trees[name][1])
                run.update(check_result(name, run.pop("result"), copy, cache))  # type: ignore[arg-type]
            problem = compare(copy, entries, expected)
            if problem:
                raise SystemExit(f"error: {name} left the wrong tree: {problem}")
            print(f"round {round_ + 1}: {name}: {run['elapsed']:.2f} s", file=sys.stderr)
            runs[name].append(run)
            subprocess.run(["rm", "-rf", copy], check=True)
    results: dict[str, dict[str, object]] = {}
    for name, rs in runs.items():
        times = [run["elapsed"] for run in rs]
        r: dict[str, object] = {"median_s": statistics.median(times), "min_s": min(times)}
        r["cpu_median_s"] = statistics.median(run["cpu"] for run in rs)
        r["rss_mb"] = statistics.median(run["rss"] for run in rs)
        execs = [run["exec_s"] for run in rs if run.get("exec_s") is not None]
        if name != "rm -rf":
            r["exec_median_s"] = statistics.median(execs) if len(execs) == len(rs) else None
            r["exec_min_s"] = min(execs) if len(execs) == len(rs) else None
            for key in ("units_deleted", "reclaim_bytes", "freed_bytes", "audit_lines"):
                r[key] = rs[-1][key]
        r["runs_s"] = times
        results[name] = r
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, default=20_000, help="repos in the cache (default 20000)")
    parser.add_argument(
        "--delete", type=int, default=10_000, help="repos with an old revision for the prune to delete (default 10000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", default=BASELINE, help=f"the commit to compare with (default {BASELINE}: before issue 15)")
    parser.add_argument("--baseline-tree", metavar="DIR", help="use the hfcache package in DIR as the baseline (no git worktree)")
    parser.add_argument("--no-baseline", action="store_true", help="only hfcache against rm -rf")
    parser.add_argument(
        "--jobs",
        metavar="N[,N...]",
        help="run this checkout's prune with --jobs N, once per value, side by side; the ratios are the first's",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        jobs = [int(n) for n in args.jobs.split(",")] if args.jobs else []
    except ValueError:
        parser.error(f"--jobs: not a list of numbers: {args.jobs}")
    if any(n < 1 for n in jobs) or len(set(jobs)) != len(jobs):
        parser.error("--jobs: each value must be at least 1, and given once")

    work = tempfile.mkdtemp(prefix="hfcache-bench-prune-")

    # Every scan and prune records the usage history: into the work folder, never the user's own.

    os.environ["HFCACHE_STATE"] = os.path.join(work, "state.db")
    worktree = None
    try:
        trees = {f"hfcache prune -j {n}": (REPO, ["--jobs", str(n)]) for n in jobs} or {"hfcache prune": (REPO, [])}
        ours_names = list(trees)
        code = dict.fromkeys(ours_names, describe_tree(REPO))
        if args.baseline_tree:
            trees["baseline prune"] = (os.path.abspath(args.baseline_tree), [])
            code["baseline prune"] = describe_tree(trees["baseline prune"][0])
        elif not args.no_baseline:
            worktree = os.path.join(work, "baseline")
            git("worktree", "add", "--detach", "--quiet", worktree, args.baseline)
            trees["baseline prune"] = (worktree, [])
            code["baseline prune"] = git("rev-parse", "--short", args.baseline)
        for tree in {t for t, _ in trees.values()}:  # compiled before timing, as an installed package is
            subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(tree, "hfcache")], check=True)

        template = os.path.join(work, "hub")
        print(f"generating {args.repos} repos, {args.delete} of them with an old revision, in {template} ...", file=sys.stderr)
        started = time.monotonic()
        cache = make_prune_cache(template, args.repos, args.delete, args.seed)
        entries = listing(template)
        gone = set(cache["doomed"])  # type: ignore[arg-type]
        expected = {p for p in entries if not _prefixes(p, gone)}
        print(f"  {len(entries)} entries, in {time.monotonic() - started:.1f} s", file=sys.stderr)
        results = bench(template, work, trees, cache, args.rounds, expected, entries)
    finally:
        if worktree:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", worktree], capture_output=True)
            subprocess.run(["git", "-C", REPO, "worktree", "prune"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    ours, rm = results[ours_names[0]], results["rm -rf"]
    base = results.get("baseline prune")
    ratios: dict[str, float | None] = {
        "prune vs rm -rf": ours["median_s"] / rm["median_s"],  # type: ignore[operator]
        "execution vs rm -rf": ours["exec_median_s"] / rm["median_s"] if ours["exec_median_s"] else None,  # type: ignore[operator]
    }
    if base:
        ratios["prune vs baseline"] = ours["median_s"] / base["median_s"]  # type: ignore[operator]
        both = ours["exec_median_s"] and base["exec_median_s"]
        ratios["execution vs baseline"] = ours["exec_median_s"] / base["exec_median_s"] if both else None  # type: ignore[operator]
    met = {k: v is not None and v <= TARGETS[k] for k, v in ratios.items()}
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}",
        "repos": args.repos,
        "revisions": cache["revisions"],
        "deleted_revisions": len(cache["units"]),  # type: ignore[arg-type]
        "paths_deleted": len(gone),
        "entries": len(entries),
        "entries_deleted": len(entries) - len(expected),
        "reclaim_bytes": cache["reclaim_bytes"],
        "policy": " ".join(POLICY),
        "rounds": args.rounds,
        "code": code,
        "options": {name: options for name, (_, options) in trees.items()},
        "results": results,
        "ratios": ratios,
        "targets_met": met,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(report["machine"])
        print(
            f"{args.repos} repos, {cache['revisions']} revisions, {len(entries)} entries; `hfcache prune {' '.join(POLICY)}` "
            f"deletes {report['deleted_revisions']} revisions: {len(gone)} paths for rm -rf, {report['entries_deleted']} "
            f"entries with what they hold; {args.rounds} rounds, a fresh copy for each run"
        )
        for name, c in code.items():
            print(f"{name}: {c}")
        print(f"{'command':<18}{'median s':>10}{'min s':>9}{'execution s':>13}{'exec min s':>12}{'CPU s':>8}{'peak RSS MB':>13}")
        for name, r in results.items():
            ex = f"{r['exec_median_s']:>13.2f}{r['exec_min_s']:>12.2f}" if r.get("exec_median_s") else f"{'':>25}"
            rss = f"{r['rss_mb']:>13.1f}" if name != "rm -rf" else f"{'(' + format(r['rss_mb'], '.1f') + ')':>13}"
            print(f"{name:<18}{r['median_s']:>10.2f}{r['min_s']:>9.2f}{ex}{r['cpu_median_s']:>8.2f}{rss}")
        for key, value in ratios.items():
            shown = f"{value:6.2f}x" if value is not None else "   n/a "
            print(f"{key:<22} {shown}  target <= {TARGETS[key]}x  {'met' if met[key] else 'MISSED'}")
    if args.check and not all(met.values()):
        sys.exit(1)


def _prefixes(path: str, gone: set[str]) -> list[str]:
    """The doomed paths that are ``path`` or one of its parents."""
    parts = path.split("/")
    return [p for p in ("/".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in gone]


if __name__ == "__main__":
    main()
