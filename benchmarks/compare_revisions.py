"""Two revisions of hfcache side by side on one generated cache: same bytes out, time and memory.

    python benchmarks/compare_revisions.py --base 70a8d82              # this checkout against 70a8d82
    python benchmarks/compare_revisions.py --base main --files 20000 --rounds 3

For a change that must not change behaviour (a restructuring, a speed-up): every command's
stdout must be byte-identical between the two, and the time and peak memory are reported as
medians over ``--rounds``, the two revisions taking turns. The clock is fixed (``time.time``
returns the same instant in both), so plans and their ages are comparable; everything else
is the real command line on the real tree. Commands: ``scan --json``, ``scan --revisions
--format markdown``, three dry-run prunes (``--json``), and a real prune on a copy of the
cache for each (``--yes --json``; the audit log goes to a temporary folder).

The base revision is checked out with ``git worktree`` into a temporary folder and removed
at the end; both run with the Python of this process (the same dependencies).
Exit 1 when any output differs.
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
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from make_cache import make_cache  # noqa: E402 - beside this script

NOW = 1_800_000_000.0  # 2027-01-15: every generated time is before it
RUNNER = (
    "import sys, time\n"
    "now = float(sys.argv[1])\n"
    "time.time = lambda: now\n"
    "sys.argv = ['hfcache', *sys.argv[2:]]\n"
    "from hfcache.cli import run\n"
    "run()\n"
)
DRY = {
    "scan --json": ["scan", "--json"],
    "scan --revisions --format markdown": ["scan", "--revisions", "--format", "markdown"],
    "prune --keep 1 --junk": ["prune", "--dry-run", "--json", "--keep", "1", "--junk", "--no-config"],
    "prune --max-age 90d": ["prune", "--dry-run", "--json", "--max-age", "90d", "--no-config"],
    "prune --max-size 10TB --keep 2": ["prune", "--dry-run", "--json", "--max-size", "10TB", "--keep", "2", "--no-config"],
}
REAL = {"prune --keep 1 --junk --yes": ["prune", "--yes", "--json", "--keep", "1", "--junk", "--no-config"]}


def run(checkout: str, root: str, argv: list[str], log_dir: str) -> tuple[bytes, float, int]:
    """stdout, wall seconds and peak RSS (kB) of one command run from ``checkout``."""
    env = {**os.environ, "PYTHONPATH": checkout, "HOME": log_dir, "XDG_STATE_HOME": log_dir, "NO_COLOR": "1"}
    env.pop("HF_HUB_CACHE", None)
    cmd = [sys.executable, "-c", RUNNER, str(NOW), *argv, "--cache-dir", root]
    if argv[0] == "prune" and "--yes" in argv:
        cmd += ["--log", os.path.join(log_dir, "audit.log")]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, cwd=log_dir, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} failed in {checkout} ({child.returncode}): {err.read().decode()[-2000:]}")
        return out.read(), wall, usage.ru_maxrss


def _units(out: bytes) -> str:
    """How many units a plan's JSON deletes (or items a scan's lists): so a comparison of nothing shows."""
    try:
        doc = json.loads(out)
    except ValueError:
        return "-"
    if "delete" in doc:
        return str(len(doc["delete"]))
    return str(sum(len(c["items"]) for c in doc.get("caches", [])))


def times_of(root: str) -> list[tuple[str, int, int]]:
    """Every entry's access and modification times, to give each copy the same ones."""
    out = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(folder, name))
            out.append((os.path.relpath(os.path.join(folder, name), root), st.st_atime_ns, st.st_mtime_ns))
    return out


def copy(src: str, dst: str, times: list[tuple[str, int, int]]) -> None:
    """``src`` copied to ``dst`` with the times ``src`` had before anything read it (``cp`` reading it moves its atimes)."""
    subprocess.run(["cp", "-a", "--sparse=always", src, dst], check=True)
    for rel, atime, mtime in times:
        os.utime(os.path.join(dst, rel), ns=(atime, mtime), follow_symlinks=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare this checkout with")
    parser.add_argument("--head", help="a git revision to compare instead of this checkout's working tree")
    parser.add_argument("--files", type=int, default=100_000, help="snapshot files of the generated cache (default 100000)")
    parser.add_argument("--outputs", help="a folder to write every output into when some differ")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each command per revision (default 3)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="hfcache-compare-")

    # Every scan and prune records the usage history: into the work folder, never the user's own.

    os.environ["HFCACHE_STATE"] = os.path.join(work, "state.db")
    base = os.path.join(work, "base")
    try:
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", base, args.base], check=True, capture_output=True)
        head = REPO
        if args.head:
            head = os.path.join(work, "head")
            subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", head, args.head], check=True, capture_output=True)
        root = os.path.join(work, "hub")
        make_cache(root, args.files)
        checkouts = {"base": base, "this": head}
        times: dict[tuple[str, str], list[float]] = {}
        peaks: dict[tuple[str, str], list[int]] = {}
        outputs: dict[tuple[str, str], bytes] = {}
        different = []
        for name, argv in DRY.items():
            for _ in range(args.rounds):
                for who, checkout in checkouts.items():
                    out, wall, peak = run(checkout, root, argv, work)
                    times.setdefault((name, who), []).append(wall)
                    peaks.setdefault((name, who), []).append(peak)
                    if outputs.setdefault((name, who), out) != out:
                        different.append(f"{name}: {who} is not the same from one round to the next")
        snapshot = times_of(root)
        for name, argv in REAL.items():
            for who, checkout in checkouts.items():
                copy_root = os.path.join(work, f"hub-{who}")
                copy(root, copy_root, snapshot)
                out, wall, peak = run(checkout, copy_root, argv, work)
                # The same copy path for both revisions, so paths in the output compare: rename after.
                outputs[(name, who)] = out.replace(copy_root.encode(), b"<root>")
                times[(name, who)], peaks[(name, who)] = [wall], [peak]
                shutil.rmtree(copy_root)
        print(f"{args.files} files; base {args.base}, this {args.head or 'working tree'}; {args.rounds} rounds (a real prune: 1)")
        print(f"{'command':38} {'units':>6} {'same':>5} {'base s':>8} {'this s':>8} {'ratio':>6} {'base MB':>8} {'this MB':>8}")
        for name in [*DRY, *REAL]:
            same = outputs[(name, "base")] == outputs[(name, "this")]
            if not same:
                different.append(name)
            tb, tt = (statistics.median(times[(name, w)]) for w in ("base", "this"))
            mb, mt = (max(peaks[(name, w)]) / 1024 for w in ("base", "this"))
            units = _units(outputs[(name, "this")])
            print(f"{name:38} {units:>6} {'yes' if same else 'NO':>5} {tb:8.2f} {tt:8.2f} {tt / tb:6.2f} {mb:8.0f} {mt:8.0f}")
        if different:
            print("different: " + "; ".join(different))
            if args.outputs:
                os.makedirs(args.outputs, exist_ok=True)
                for (name, who), out in outputs.items():
                    with open(os.path.join(args.outputs, f"{name.replace(' ', '_')}.{who}"), "wb") as f:
                        f.write(out)
                print(f"outputs in {args.outputs}")
            raise SystemExit(1)
    finally:
        for tree in (base, os.path.join(work, "head")):
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", tree], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
