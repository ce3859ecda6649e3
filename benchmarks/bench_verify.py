"""Time ``hfcache verify``: hashing throughput against ``sha256sum`` over the same blobs, and a repeat run (issue 19).

    python benchmarks/bench_verify.py                        # 2 GB of blobs and a 100,000-file cache, 5 rounds
    python benchmarks/bench_verify.py --gb 4 --small 2000    # more data, and 2,000 small files beside the weights
    python benchmarks/bench_verify.py --cold                 # page cache dropped before each run: the disk, not the CPU
    python benchmarks/bench_verify.py --only repeat --check  # only the repeat run; exit 1 when a target is missed

Two caches, both hub caches laid out as huggingface_hub lays one out, every blob named by
the hash of its content (so ``hfcache verify`` finds every file ok: each timed run's counts
are checked, and a run that finds anything corrupt or missing stops the benchmark, exit 1):

1. **Throughput** (``--gb``, default 2): model repos of two shards each, shards of 256 MiB to
   1 GiB of random bytes named by their sha256, a ``config.json`` named by its git blob hash;
   with ``--small N``, also a dataset repo of N files of 16 to 256 KB. Before timing, an
   untimed ``sha256sum`` of every blob must print its name, and an untimed ``hfcache verify``
   must find every file ok. Timed, in a rotating order each round: ``sha256sum`` over every
   blob file (one process: the per-core reference; xargs packs the names into as few
   processes as 1 MB of arguments allows, run one after the other); ``hfcache verify --full
   --jobs 1``; for each N of ``--jobs`` (default 2,4) ``hfcache verify --full --jobs N``; and
   ``openssl dgst -sha256`` as 1 and as N processes at once, the blobs split in N lists of
   about equal bytes (what N processes get from this machine right now: the scaling
   reference). openssl runs the SHA-256 code ``hashlib`` calls, with the CPU's SHA
   instructions where it has them (Debian's ``sha256sum`` has none: it is about 4 times
   slower), so its runs are as long as hfcache's and meet the machine's other load alike;
   without openssl, ``sha256sum`` is the scaling reference too.

   Page cache: **warm** by default. Right before each timed run every blob is read whole
   (and the residency checked with ``mincore``), so every command hashes from memory: this
   measures the hashing, which is what the per-core target is about. A verify drops only the
   pages its reads brought in, so in a warm run it drops nothing. ``--cold`` instead drops
   every blob from the page cache (``posix_fadvise(DONTNEED)``) before each run: the
   commands then wait on the disk (on a VM the host may still cache it).

2. **Repeat run** (``--files``, default 100,000 snapshot files): ``make_cache.py``'s tree with
   ``content=True`` (the same repos, revisions and links; each blob a few hundred real bytes
   named by its sha256 or git blob hash). Untimed: a first ``hfcache verify --state S``
   (everything hashed, all ok), then a second one whose ``--json`` must say
   ``files_hashed: 0``, a third with the default output (the night before: it leaves the
   memos of unchanged repos, :mod:`hfcache.verify.memo`, which a run that lists every file
   does not make), and a ``hfcache scan --json``. Timed, interleaved, the whole tree read into
   the page cache before each run (as ``bench_scan.py`` does): ``hfcache verify --state S``
   (the default output, as cron runs it: unchanged repos counted from their memos; how many,
   the fewest of any round, is printed), the same with ``--json`` (every file judged and
   listed: no memo used), and ``hfcache scan --json`` (the scan every verify starts with).
   Each verify must hash nothing again.

Every hfcache verify runs as its console script does, with timers around the scan, the
kind's ``expected`` (for the hub: each revision's files as the scan listed them) and
``hfcache.verify.run.verify``; the rest is start-up (interpreter, imports) and what follows
(the state database opened, the output written, exit). hfcache runs with its bytecode
compiled by the untimed runs (into the work folder), as an installed package has it, and
its scans record their usage history into the work folder. Prints medians (and minima) of
``--rounds`` rounds (default 5): wall time, CPU time (user + system, all processes), MB/s (10^6 bytes),
the ratios, the repeat run's breakdown, and the targets of issue 19:

- per core: ``hfcache verify --full --jobs 1`` at least 0.9x the throughput of ``sha256sum``;
- scaling: ``--jobs N`` gains at least 0.9x what N openssl processes gain over one, measured
  on the hashing phase (``verify`` itself, without the start-up and the scan, which do not
  split; the wall-clock speedups are printed too). Files are hashed whole, one per job: with
  a few large shards, neither can gain N-fold (768, 512, 371 and 256 MiB on 2 jobs: 1.95x
  at best);
- repeat run: at most 1.0 s for 100,000 snapshot files ("well under a second").

``--check`` makes a missed target exit 1; ``--json`` prints it all. Everything is written
under ``$TMPDIR`` (``--gb`` of blobs plus about 600 MB for the 100,000-file cache) and removed
at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_scan import prime  # noqa: E402
from make_cache import make_cache  # noqa: E402

MIB = 1024 * 1024
SHARD_MIB = (768, 512, 256, 1024, 384)  # shard sizes, in turn: safetensors shards of real models
TARGETS = {"per core vs sha256sum": 0.9, "scaling": 0.9, "repeat run s": 1.0}
XARGS = ["xargs", "-0", "-s", "1048576"]  # as few processes as 1 MB of arguments allows, one after the other

# hfcache's console script (hfcache.cli:run), with timers around the scan, the kind's
# ``expected`` and ``verify``; what they measured, and what the verify found, go to the file
# $BENCH_VERIFY_PHASES once ``verify`` returns (the command leaves with os._exit: no atexit).
COMMAND = """\
import json, os, sys, time
import hfcache.cli
import hfcache.verify.run as run
cli_verify = sys.modules["hfcache.cli.verify"]
phases = {"scan_s": 0.0, "expected_s": 0.0, "verify_s": 0.0}
def timed(fn, key):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[key] += time.perf_counter() - started
    return wrapper
cli_verify.scan_caches = timed(cli_verify.scan_caches, "scan_s")
run._expected = timed(run._expected, "expected_s")
_verify = timed(run.verify, "verify_s")
def verify(*args, **kwargs):
    report = _verify(*args, **kwargs)
    counts = {str(v): sum(c.count(v) for c in report.caches) for v in run.Verdict}  # memos' files too
    found = {"files_hashed": report.files_hashed, "bytes_hashed": report.bytes_hashed, "counts": counts,
             "repos_from_memos": sum(len(c.reused) for c in report.caches)}
    with open(os.environ["BENCH_VERIFY_PHASES"], "w") as f:
        json.dump({**phases, **found, "ready_at": READY, "verified_at": time.monotonic()}, f)
    return report
run.verify = verify
READY = time.monotonic()
sys.argv[0] = "hfcache"
hfcache.cli.run()
"""

# Runs a command; writes to the fd argv[1] when it started and ended (time.monotonic, the
# same clock in every process), its exit code, peak RSS (kB) and CPU time (it and the
# processes it waited for). A launcher of its own: ``ru_maxrss`` would otherwise count the
# pages of the process that forked the command.
LAUNCH = """\
import json, os, subprocess, sys, time
started = time.monotonic()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
ended = time.monotonic()
code = os.waitstatus_to_exitcode(status)
os.write(int(sys.argv[1]), json.dumps([started, ended, code, usage.ru_maxrss, usage.ru_utime + usage.ru_stime]).encode())
"""


# ---------------------------------------------------------------------------------------------
# The caches


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _write_blob(blobs_dir: str, rng: random.Random, size: int) -> tuple[str, int]:
    """A blob of ``size`` random bytes, written in 4 MB pieces and named by its sha256; (path, size)."""
    tmp = os.path.join(blobs_dir, "blob.tmp")
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        left = size
        while left:
            piece = rng.randbytes(min(left, 4 * MIB))
            h.update(piece)
            f.write(piece)
            left -= len(piece)
    path = os.path.join(blobs_dir, h.hexdigest())
    os.rename(tmp, path)
    return path, size


def _snapshot(repo_dir: str, commit: str, files: dict[str, str]) -> None:
    refs = os.path.join(repo_dir, "refs")
    os.makedirs(refs, exist_ok=True)
    with open(os.path.join(refs, "main"), "w") as f:
        f.write(commit)
    for name, blob in files.items():
        link = os.path.join(repo_dir, "snapshots", commit, name)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(*([".."] * (name.count("/") + 2)), "blobs", os.path.basename(blob)), link)


def make_weights_cache(root: str, total: int, small: int = 0, seed: int = 0) -> dict[str, object]:
    """The throughput cache: ``total`` bytes of shards (two per model repo) and ``small`` small files; see the docstring.

    Returns ``blobs`` (path and size of every blob), ``files`` (snapshot entries) and ``bytes``.
    """
    rng = random.Random(seed)
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(min(SHARD_MIB[len(sizes) % len(SHARD_MIB)] * MIB, total - sum(sizes)))
    blobs: list[tuple[str, int]] = []
    files = 0
    for index in range(0, len(sizes), 2):
        repo_dir = os.path.join(root, f"models--bench--weights-{index // 2}")
        blobs_dir = os.path.join(repo_dir, "blobs")
        os.makedirs(blobs_dir)
        shards = sizes[index : index + 2]
        names: dict[str, str] = {}
        for i, size in enumerate(shards):
            path, _ = _write_blob(blobs_dir, rng, size)
            names[f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"] = path
            blobs.append((path, size))
        config = json.dumps({"model_type": "bench", "index": index}).encode()
        path = os.path.join(blobs_dir, _git_blob(config))  # a file kept in git: named by its git blob hash
        with open(path, "wb") as f:
            f.write(config)
        names["config.json"] = path
        blobs.append((path, len(config)))
        _snapshot(repo_dir, hashlib.sha1(repo_dir.encode()).hexdigest(), names)
        files += len(names)
    if small:
        repo_dir = os.path.join(root, "datasets--bench--many-files")
        blobs_dir = os.path.join(repo_dir, "blobs")
        os.makedirs(blobs_dir)
        names = {}
        for i in range(small):
            path, size = _write_blob(blobs_dir, rng, rng.randint(16 * 1024, 256 * 1024))
            names[f"data/part-{i:05d}.parquet"] = path
            blobs.append((path, size))
        _snapshot(repo_dir, hashlib.sha1(repo_dir.encode()).hexdigest(), names)
        files += small
    return {"blobs": blobs, "files": files, "bytes": sum(size for _, size in blobs)}


def check_blob_names(blobs: list[tuple[str, int]]) -> str | None:
    """Why ``sha256sum`` (not hfcache) disagrees with the names of the sha256-named blobs, or None."""
    named = [path for path, _ in blobs if len(os.path.basename(path)) == 64]
    done = subprocess.run([*XARGS, "sha256sum", "--"], input=b"".join(p.encode() + b"\0" for p in named), capture_output=True)
    if done.returncode != 0:
        return f"sha256sum exited {done.returncode}: {done.stderr.decode()[-500:]}"
    sums = dict(line.split("  ", 1)[::-1] for line in done.stdout.decode().splitlines())
    wrong = [p for p in named if sums.get(p) != os.path.basename(p)]
    return f"{len(wrong)} blobs not named by their sha256 (e.g. {wrong[0]})" if wrong else None


def check_verify(found: dict, *, files: int, hashed: int, hashed_bytes: int | None = None) -> str | None:
    """Why what one verify found is no result (anything but ``files`` ok, or another number of files read), or None."""
    counts = found.get("counts", {})
    problems = []
    if counts.get("ok") != files or any(counts.get(k) for k in ("corrupt", "missing", "unverifiable")):
        problems.append(f"counts {counts}, not {files} ok")
    if found.get("files_hashed") != hashed:
        problems.append(f"{found.get('files_hashed')} files hashed, not {hashed}")
    if hashed_bytes is not None and found.get("bytes_hashed") != hashed_bytes:
        problems.append(f"{found.get('bytes_hashed')} bytes hashed, not {hashed_bytes}")
    return "; ".join(problems) or None


# ---------------------------------------------------------------------------------------------
# Running


def run_timed(name: str, argv: list[str], *, env: dict[str, str] | None = None, stdout=None) -> dict[str, float]:
    """One run of ``argv`` (by LAUNCH): wall seconds, when it started and ended, peak RSS (MB), CPU seconds; exits on failure."""
    read, write = os.pipe()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(write), *argv],
            env=env,
            stdout=stdout or subprocess.DEVNULL,
            stderr=err,
            pass_fds=(write,),
        )
        os.close(write)
        with os.fdopen(read, "rb") as f:
            report = f.read()
        proc.wait()
        started, ended, code, rss_kb, cpu = json.loads(report) if report else (0.0, 0.0, proc.returncode, 0, 0.0)
        if code != 0:
            err.seek(0)
            raise SystemExit(f"error: {name} exited {code}: {err.read().decode()[-2000:]}")
    return {"wall": ended - started, "started": started, "ended": ended, "rss": rss_kb / 1024, "cpu": cpu}


def run_hfcache(name: str, args: list[str], work: str, *, stdout=None) -> dict[str, object]:
    """An instrumented ``hfcache`` run (COMMAND): its times, the phases inside it, and what its verify found."""
    phases_file = os.path.join(work, "phases.json")
    if os.path.exists(phases_file):
        os.unlink(phases_file)
    env = {**os.environ, "BENCH_VERIFY_PHASES": phases_file}
    run: dict[str, object] = dict(run_timed(name, [sys.executable, "-c", COMMAND, *args], env=env, stdout=stdout))
    if not os.path.exists(phases_file):
        raise SystemExit(f"error: {name}: no verify ran")
    with open(phases_file) as f:
        phases = json.load(f)
    run.update(phases)
    run["start_s"] = phases["ready_at"] - run["started"]  # type: ignore[operator]
    run["after_s"] = run["ended"] - phases["verified_at"]  # type: ignore[operator]
    return run


def verify_json(args: list[str], work: str) -> dict[str, object]:
    """What ``hfcache verify ARGS --json`` printed: ``files_hashed``, ``bytes_hashed``, the counts of all caches."""
    out_path = os.path.join(work, "verify.json")
    with open(out_path, "wb") as out:
        run_hfcache("hfcache verify --json", [*args, "--json"], work, stdout=out)
    with open(out_path) as f:
        doc = json.load(f)
    counts = {k: sum(c["counts"][k] for c in doc["caches"]) for k in ("ok", "corrupt", "missing", "unverifiable")}
    return {"files_hashed": doc["files_hashed"], "bytes_hashed": doc["bytes_hashed"], "counts": counts}


def hfcache_argv() -> list[str]:
    """The installed command, as users run it (``python -m hfcache`` where there is none)."""
    script = os.path.join(os.path.dirname(sys.executable), "hfcache")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "hfcache"]


def split_even(blobs: list[tuple[str, int]], n: int) -> list[list[str]]:
    """``blobs`` in ``n`` lists of about equal bytes (largest first, each to the lightest list)."""
    lists: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for path, size in sorted(blobs, key=lambda b: -b[1]):
        i = load.index(min(load))
        lists[i].append(path)
        load[i] += size
    return [paths for paths in lists if paths]


def hash_command(tool: list[str], lists: list[str]) -> list[str]:
    """``tool`` over the names in each NUL-separated list file, the lists at once (one xargs each), output discarded."""
    one = " ".join(shlex.quote(a) for a in [*XARGS, *tool, "--"])
    parts = [f"{one} < {shlex.quote(path)} > /dev/null & p{i}=$!" for i, path in enumerate(lists)]
    waits = " && ".join(f"wait $p{i}" for i in range(len(lists)))
    return ["sh", "-c", "; ".join(parts) + "; " + waits]


def read_whole(paths: list[str]) -> None:
    """Every file read to its end: into the page cache."""
    buf = bytearray(4 * MIB)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def drop(paths: list[str]) -> None:
    """Every file's pages dropped from the page cache (clean pages only: the data was synced after writing)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_share(paths: list[str]) -> float | None:
    """The share of the files' pages in the page cache now (``mincore``), or None where that cannot be known."""
    from hfcache.verify.reading import resident

    pages = present = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            vec = resident(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        if vec is None:
            continue
        pages += len(vec)
        present += len(vec) - vec.count(0)
    return present / pages if pages else None


def summarize(runs: list[dict[str, object]], *keys: str) -> dict[str, float]:
    out = {"median_s": statistics.median(r["wall"] for r in runs), "min_s": min(r["wall"] for r in runs)}  # type: ignore[type-var]
    out["cpu_median_s"] = statistics.median(r["cpu"] for r in runs)  # type: ignore[type-var]
    out["rss_mb"] = statistics.median(r["rss"] for r in runs)  # type: ignore[type-var]
    for key in keys:
        out[key] = statistics.median(r[key] for r in runs)  # type: ignore[type-var]
    out["runs_s"] = [round(r["wall"], 3) for r in runs]  # type: ignore[assignment,arg-type]
    return out


# ---------------------------------------------------------------------------------------------
# The two benchmarks


def throughput_commands(work: str, root: str, blobs: list[tuple[str, int]], jobs: list[int]) -> tuple[dict[str, list[str]], str]:
    """The commands to time, by name, and the parallel reference (``openssl``, else ``sha256sum``)."""
    lists: dict[int, list[str]] = {}
    for n in sorted({1, *jobs}):
        lists[n] = []
        for i, part in enumerate(split_even(blobs, n)):
            lists[n].append(os.path.join(work, f"blobs-{n}-{i}.list"))
            with open(lists[n][-1], "wb") as f:
                f.write(b"".join(p.encode() + b"\0" for p in part))
    state = os.path.join(work, "weights-state.db")

    def verify_args(n: int) -> list[str]:
        return ["verify", "--cache-dir", root, "--full", "--jobs", str(n), "--state", state]

    # The parallel reference: N processes of openssl (the SHA-256 code hashlib calls, runs as
    # long as hfcache's: the same exposure to the machine's other load), else of sha256sum.
    tool, label = (["openssl", "dgst", "-sha256", "-r"], "openssl") if shutil.which("openssl") else (["sha256sum"], "sha256sum")
    commands = {"sha256sum": hash_command(["sha256sum"], lists[1])}
    if label == "openssl":
        commands["openssl x1"] = hash_command(tool, lists[1])
    commands["hfcache verify --full -j 1"] = verify_args(1)
    for n in jobs:
        commands[f"hfcache verify --full -j {n}"] = verify_args(n)
        commands[f"{label} x{n}"] = hash_command(tool, lists[n])
    return commands, label


def bench_throughput(work: str, total: int, small: int, jobs: list[int], rounds: int, cold: bool) -> dict[str, object]:
    root = os.path.join(work, "weights")
    print(f"generating {total / 1e9:.2f} GB of blobs in {root} ...", file=sys.stderr)
    started = time.monotonic()
    cache = make_weights_cache(root, total, small)
    blobs: list[tuple[str, int]] = cache["blobs"]  # type: ignore[assignment]
    paths = [path for path, _ in blobs]
    os.sync()  # written back: a cold run can drop every page
    print(f"  {len(blobs)} blobs, {cache['bytes']} bytes, in {time.monotonic() - started:.1f} s", file=sys.stderr)
    problem = check_blob_names(blobs)
    if problem:
        raise SystemExit(f"error: the generated blobs: {problem}")

    commands, label = throughput_commands(work, root, blobs, jobs)

    # Untimed: the same verify, its JSON saying every file is ok and every blob was read.
    found = verify_json(commands["hfcache verify --full -j 1"], work)
    problem = check_verify(found, files=cache["files"], hashed=len(blobs), hashed_bytes=cache["bytes"])  # type: ignore[arg-type]
    if problem:
        raise SystemExit(f"error: hfcache verify of the generated blobs: {problem}")

    names = list(commands)
    runs: dict[str, list[dict[str, object]]] = {n: [] for n in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            if cold:
                drop(paths)
            else:
                read_whole(paths)
            share = resident_share(paths)
            argv = commands[name]
            if name.startswith("hfcache"):
                run = run_hfcache(name, argv, work)
                problem = check_verify(run, files=cache["files"], hashed=len(blobs), hashed_bytes=cache["bytes"])  # type: ignore[arg-type]
                if problem:
                    raise SystemExit(f"error: {name}: {problem}")
            else:
                run = dict(run_timed(name, argv))
            run["resident"] = share
            runs[name].append(run)
            print(f"round {round_ + 1}: {name}: {run['wall']:.2f} s", file=sys.stderr)

    results: dict[str, dict[str, object]] = {}
    for name in names:
        r: dict[str, object] = summarize(runs[name], *(["verify_s", "start_s", "scan_s"] if name.startswith("hfcache") else []))
        r["mb_per_s"] = cache["bytes"] / 1e6 / r["median_s"]  # type: ignore[operator]
        if "verify_s" in r:
            r["hash_mb_per_s"] = cache["bytes"] / 1e6 / r["verify_s"]  # type: ignore[operator]
        shares = [run["resident"] for run in runs[name] if run["resident"] is not None]
        r["resident_before"] = min(shares) if shares else None  # type: ignore[type-var]
        results[name] = r
    ref, one = results["sha256sum"], results["hfcache verify --full -j 1"]
    single = results["openssl x1" if label == "openssl" else "sha256sum"]
    scaling = {}
    for n in jobs:
        ours, theirs = results[f"hfcache verify --full -j {n}"], results[f"{label} x{n}"]
        scaling[n] = {
            "hfcache_speedup": one["median_s"] / ours["median_s"],  # type: ignore[operator]
            "hfcache_hash_speedup": one["verify_s"] / ours["verify_s"],  # type: ignore[operator]
            "reference_speedup": single["median_s"] / theirs["median_s"],  # type: ignore[operator]
        }
        scaling[n]["ratio"] = scaling[n]["hfcache_hash_speedup"] / scaling[n]["reference_speedup"]
    return {
        "cache": root,
        "blobs": len(blobs),
        "files": cache["files"],
        "bytes": cache["bytes"],
        "page_cache": "cold" if cold else "warm",
        "rounds": rounds,
        "results": results,
        "per_core": ref["median_s"] / one["median_s"],  # type: ignore[operator]
        "per_core_hashing": ref["median_s"] / one["verify_s"],  # type: ignore[operator]
        "parallel_reference": label,
        "scaling": scaling,
    }


def bench_repeat(work: str, files: int, rounds: int) -> dict[str, object]:
    root = os.path.join(work, "hub")
    print(f"generating {files} snapshot files (real blobs named by their hash) in {root} ...", file=sys.stderr)
    started = time.monotonic()
    repos = make_cache(root, files, content=True)
    blobs = sum(
        1 for d in os.scandir(root) if d.name != ".locks" for b in os.scandir(os.path.join(d.path, "blobs")) if "." not in b.name
    )
    print(f"  {repos} repos, {blobs} blobs, in {time.monotonic() - started:.1f} s", file=sys.stderr)
    state = os.path.join(work, "repeat-state.db")
    verify = ["verify", "--cache-dir", root, "--state", state]

    # Untimed: the first run hashes every blob; the second must read nothing, as its JSON says.
    for which, hashed in (("first", blobs), ("second", 0)):
        problem = check_verify(verify_json(verify, work), files=files, hashed=hashed)
        if problem:
            raise SystemExit(f"error: the {which} hfcache verify of the {files}-file cache: {problem}")
    # Untimed: the default output once, as the night before (a run that lists every file, --json,
    # makes no memos: hfcache.verify.memo); so every timed run is a night after a night.
    problem = check_verify(run_hfcache("hfcache verify (untimed)", verify, work), files=files, hashed=0)
    if problem:
        raise SystemExit(f"error: the third hfcache verify of the {files}-file cache: {problem}")

    commands = {
        "hfcache verify (repeat)": verify,
        "hfcache verify --json (repeat)": [*verify, "--json"],
        "hfcache scan --json": [*hfcache_argv(), "scan", "--cache-dir", root, "--json"],
    }
    names = list(commands)
    run_timed("hfcache scan --json", commands["hfcache scan --json"])  # untimed: its bytecode, the history's first run
    runs: dict[str, list[dict[str, object]]] = {n: [] for n in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            prime(root)
            read_whole([p for p in (state, f"{state}-wal", f"{state}-shm") if os.path.exists(p)])
            if name.startswith("hfcache verify"):
                run = run_hfcache(name, commands[name], work)
                problem = check_verify(run, files=files, hashed=0)
                if problem:
                    raise SystemExit(f"error: {name}: {problem}")
            else:
                run = dict(run_timed(name, commands[name]))
            runs[name].append(run)
            print(f"round {round_ + 1}: {name}: {run['wall']:.2f} s", file=sys.stderr)
    phases = ["start_s", "scan_s", "expected_s", "verify_s", "after_s"]
    results = {n: summarize(runs[n], *(phases if n.startswith("hfcache verify") else [])) for n in names}
    for n in names:
        if n.startswith("hfcache verify"):  # repos counted from their memos (hfcache.verify.memo), the fewest of any round
            results[n]["repos_from_memos"] = min(int(r.get("repos_from_memos", 0)) for r in runs[n])  # type: ignore[call-overload]
    return {"cache": root, "repos": repos, "files": files, "blobs": blobs, "rounds": rounds, "results": results}


# ---------------------------------------------------------------------------------------------


def target_of(key: str) -> float:
    """The target of a ratio (``scaling vs openssl (-j 2)``: the scaling target)."""
    return next(value for name, value in TARGETS.items() if key.startswith(name))


def print_report(report: dict[str, object]) -> None:
    print(report["machine"])
    tp: dict = report.get("throughput")  # type: ignore[assignment]
    if tp:
        print(
            f"\nthroughput: {tp['blobs']} blobs, {tp['bytes'] / 1e9:.2f} GB ({tp['files']} snapshot files); "
            f"page cache {tp['page_cache']}; {tp['rounds']} interleaved rounds, medians"
        )
        ref = tp["results"]["sha256sum"]["median_s"]
        print(
            f"{'command':<28}{'wall s':>8}{'min s':>8}{'CPU s':>8}{'MB/s':>8}{'vs sha256sum':>14}{'hash MB/s':>11}{'cached':>8}"
        )
        for name, r in tp["results"].items():
            hashing = f"{r['hash_mb_per_s']:>11.0f}" if "hash_mb_per_s" in r else " " * 11
            cached = f"{r['resident_before'] * 100:>7.0f}%" if r["resident_before"] is not None else ""
            print(
                f"{name:<28}{r['median_s']:>8.2f}{r['min_s']:>8.2f}{r['cpu_median_s']:>8.2f}{r['mb_per_s']:>8.0f}"
                f"{ref / r['median_s']:>13.2f}x{hashing}{cached}"
            )
        one = tp["results"]["hfcache verify --full -j 1"]
        ssl = tp["results"].get("openssl x1")
        print(
            f"per core: hfcache --jobs 1 {tp['per_core']:.2f}x sha256sum ({tp['per_core_hashing']:.2f}x in its hashing phase)"
            + (f", {ssl['median_s'] / one['median_s']:.2f}x openssl ({ssl['median_s'] / one['verify_s']:.2f}x)" if ssl else "")
        )
        for n, s in tp["scaling"].items():
            print(
                f"--jobs {n}: hfcache {s['hfcache_speedup']:.2f}x faster than --jobs 1 "
                f"(hashing phase {s['hfcache_hash_speedup']:.2f}x); {n} {tp['parallel_reference']} processes "
                f"{s['reference_speedup']:.2f}x one"
            )
    rp: dict = report.get("repeat")  # type: ignore[assignment]
    if rp:
        print(
            f"\nrepeat run: {rp['files']} snapshot files, {rp['blobs']} blobs, {rp['repos']} repos; nothing changed, "
            f"nothing hashed; {rp['rounds']} interleaved rounds, medians"
        )
        print(f"{'command':<32}{'wall s':>8}{'min s':>8}{'CPU s':>8}{'peak RSS MB':>13}")
        for name, r in rp["results"].items():
            print(f"{name:<32}{r['median_s']:>8.2f}{r['min_s']:>8.2f}{r['cpu_median_s']:>8.2f}{r['rss_mb']:>13.1f}")
        r = rp["results"]["hfcache verify (repeat)"]
        other = r["median_s"] - r["start_s"] - r["scan_s"] - r["verify_s"] - r["after_s"]
        print(
            f"hfcache verify (repeat), medians: start-up {r['start_s']:.2f} s, scan {r['scan_s']:.2f} s, "
            f"kind's expected hashes {r['expected_s']:.2f} s, rest of verify {r['verify_s'] - r['expected_s']:.2f} s, "
            f"output and exit {r['after_s']:.2f} s, other {other:.2f} s; "
            f"{r.get('repos_from_memos', 0)} of {rp['repos']} repos counted from their memos"
        )
    print()
    for key, value in report["ratios"].items():  # type: ignore[attr-defined]
        unit = " s" if key.startswith("repeat") else "x"
        sign = "<=" if key.startswith("repeat") else ">="
        met = report["targets_met"][key]  # type: ignore[index]
        print(f"{key:<28}{value:8.2f}{unit}  target {sign} {target_of(key)}{unit}  {'met' if met else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0, help="bytes of blobs for the throughput run, in GB (default 2)")
    parser.add_argument("--small", type=int, default=0, help="small files (16-256 KB) beside the weights (default 0)")
    parser.add_argument("--jobs", default="2,4", help="the --jobs values to time besides 1, comma-separated (default 2,4)")
    parser.add_argument("--files", type=int, default=100_000, help="snapshot files of the repeat-run cache (default 100000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--cold", action="store_true", help="drop the blobs from the page cache before each throughput run")
    parser.add_argument("--only", choices=("throughput", "repeat"), help="run only one of the two benchmarks")
    parser.add_argument("--keep", action="store_true", help="keep the generated caches (their folder is printed)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    jobs = sorted({int(j) for j in args.jobs.split(",") if j.strip()} - {1})
    if args.rounds < 1 or args.gb <= 0 or args.files < 1 or any(j < 1 for j in jobs):
        parser.error("--rounds, --gb, --files and --jobs must be positive")

    work = tempfile.mkdtemp(prefix="hfcache-bench-verify-")
    # hfcache runs as installed: its modules' bytecode compiled once (by the untimed runs), as
    # pip does at install, not again in every timed run (PYTHONDONTWRITEBYTECODE and an
    # editable install: 0.07 s of each start-up here), into a folder of the work tree.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")
    # Every scan records the usage history (as users' scans do): into the work tree, never the user's.
    os.environ["HFCACHE_STATE"] = os.path.join(work, "history-state.db")
    report: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}"
    }
    try:
        if args.only != "repeat":
            report["throughput"] = bench_throughput(work, int(args.gb * 1e9), args.small, jobs, args.rounds, args.cold)
        if args.only != "throughput":
            report["repeat"] = bench_repeat(work, args.files, args.rounds)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work)

    ratios: dict[str, float] = {}
    if "throughput" in report:
        tp: dict = report["throughput"]  # type: ignore[assignment]
        ratios["per core vs sha256sum"] = tp["per_core"]
        for n, s in tp["scaling"].items():
            ratios[f"scaling vs {tp['parallel_reference']} (-j {n})"] = s["ratio"]
    if "repeat" in report:
        rp: dict = report["repeat"]  # type: ignore[assignment]
        label = "repeat run s" + ("" if rp["files"] == 100_000 else f" ({rp['files']} files)")
        ratios[label] = rp["results"]["hfcache verify (repeat)"]["median_s"]
    report["ratios"] = ratios
    report["targets_met"] = {k: (v <= target_of(k) if k.startswith("repeat") else v >= target_of(k)) for k, v in ratios.items()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    if args.check and not all(report["targets_met"].values()):  # type: ignore[attr-defined]
        sys.exit(1)


if __name__ == "__main__":
    main()
