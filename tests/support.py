"""What several test modules share: caches built by the real client or by hand, CLI runners, times.

A test module imports from here, never from another test module (issue 16).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

import pytest
from huggingface_hub import constants, hf_hub_download, scan_cache_dir
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.utils import _shared_blobs
from typer.testing import CliRunner, Result

import hfcache
import hfcache.prune
from hfcache.cli import app
from hfcache.model import CacheInventory, Item, Revision
from tests.fakehub import FakeHub
from tests.trees import commit, repo


def cannot_run(reason: str) -> None:
    """A test that cannot run here: skipped with the reason, but a failure under ``CI=true`` (CI installs what tests need)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, and this test cannot run: {reason}")
    pytest.skip(reason)


def need_mounts(*tools: str) -> None:
    """Root and these commands (mount, umount, unshare), or the test cannot run (``cannot_run``)."""
    if os.geteuid() != 0:
        cannot_run("needs root (bind mounts and mount namespaces)")
    for tool in tools:
        if shutil.which(tool) is None:
            cannot_run(f"needs the {tool!r} command")


class Mounts:
    """The mounts a test made (the ``mounts`` fixture), lazily unmounted (last first) at teardown whatever happened."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def mount(self, *args: str) -> str:
        """``mount ARGS``: the target is the last argument, a folder made when missing (a file is mounted on as it is)."""
        target = args[-1]
        if not os.path.lexists(target):
            os.makedirs(target)
        done = subprocess.run(["mount", *args], capture_output=True, text=True)
        if done.returncode:
            cannot_run(f"mount {' '.join(args)} failed here: {done.stderr.strip()}")
        self.made.append(target)
        return target

    def bind(self, source: str, target: str) -> str:
        return self.mount("--bind", source, target)

    def undo(self) -> None:
        for target in reversed(self.made):
            subprocess.run(["umount", "-l", target], capture_output=True)
        self.made.clear()


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def get(hub: FakeHub, root: str, repo_id: str, filename: str, revision: str | None = None, **kw) -> str:
    return hf_hub_download(repo_id, filename, revision=revision, cache_dir=root, endpoint=hub.endpoint, **kw)


def assert_same_as_hub(root: str) -> CacheInventory:
    """Everything hfcache reports equals huggingface_hub's view of the same cache."""
    ref = scan_cache_dir(root)
    assert ref.warnings == [], ref.warnings
    inv = hfcache.scan([root])
    (ours,) = inv.caches
    assert ours.root == str(ref.cache_dir)
    assert ours.size_bytes == ref.size_on_disk
    assert ours.all_warnings == []
    by_key = {(i.type, i.id): i for i in ours.items}
    assert by_key.keys() == {(r.repo_type, r.repo_id) for r in ref.repos}
    for cached in ref.repos:
        item = by_key[(cached.repo_type, cached.repo_id)]
        assert item.deletable
        assert item.path == str(cached.repo_path)
        assert item.size_bytes == cached.size_on_disk
        assert item.nb_blobs == cached.nb_files
        assert item.last_accessed == cached.last_accessed
        assert item.last_modified == cached.last_modified
        revs = {r.revision: r for r in item.revisions}
        assert revs.keys() == {r.commit_hash for r in cached.revisions}
        for expected in cached.revisions:
            got = revs[expected.commit_hash]
            assert got.path == str(expected.snapshot_path)
            # An interrupted atomic write of a ref (huggingface_hub's `<name>.<8 hex>.tmp`, llama.cpp's
            # `<name>.tmp`) is a ref to scan_cache_dir, never to hfcache: the one place they differ.
            assert set(got.refs) == {ref for ref in expected.refs if not ref.endswith(".tmp")}
            assert got.size_bytes == expected.size_on_disk
            assert got.nb_files == expected.nb_files
            assert got.last_modified == expected.last_modified
            strategy = ref.delete_revisions(expected.commit_hash)
            assert got.reclaimable_bytes == strategy.expected_freed_size, expected.commit_hash
    # scan_cache_dir knows the hub's own partial downloads only (`*/blobs/*.incomplete`), not other writers'.
    incomplete = {p.path for p in ours.partial_files if p.path.endswith(".incomplete")}
    assert incomplete == {str(f.file_path) for f in ref.incomplete_files}
    assert {p.path: p.size_bytes for p in ours.unreferenced_payloads} == {
        str(p): s for p, s in _shared_blobs.unreferenced_shared_blobs(root).items()
    }
    return ours


def build_rich_cache(hub: FakeHub, root: str) -> dict[str, str]:
    """Tags, a blob shared by two revisions, main moved on, nested and short refs, a pin, a dataset."""
    c1 = hub.push(
        "org/model",
        {"config.json": b'{"v": 1}', "model.safetensors": payload(3000, 1), "unet/diffusion_pytorch_model.bin": payload(2048, 2)},
    )
    hub.tag("org/model", "v1.0", c1)
    for f in ("config.json", "model.safetensors", "unet/diffusion_pytorch_model.bin"):
        get(hub, root, "org/model", f, "v1.0")
    c2 = hub.push("org/model", {"config.json": b'{"v": 2}'})  # model.safetensors unchanged: shared blob
    hub.tag("org/model", "v1.1", c2)
    get(hub, root, "org/model", "config.json", "v1.1")
    get(hub, root, "org/model", "model.safetensors", "v1.1")
    c3 = hub.push("org/model", {"model.safetensors": payload(4000, 3)})
    get(hub, root, "org/model", "model.safetensors")  # refs/main -> c3
    get(hub, root, "org/model", "config.json", c1[:8])  # short-hash ref
    pr = hub.push("org/model", {"config.json": b'{"pr": 1}'}, branch="refs/pr/1")
    get(hub, root, "org/model", "config.json", "refs/pr/1")  # nested ref refs/refs/pr/1

    d1 = hub.push("org/moving", {"weights.bin": payload(1500, 4)})
    get(hub, root, "org/moving", "weights.bin")
    d2 = hub.push("org/moving", {"weights.bin": payload(1600, 5)})
    get(hub, root, "org/moving", "weights.bin")  # main moved on: d1 is detached now
    pinned = hub.push("org/pinned", {"w.bin": payload(1200, 6)})
    get(hub, root, "org/pinned", "w.bin", pinned)  # pinned by full hash: no ref at all

    hub.push("org/data", {"data/train.csv": b"a,b\n1,2\n", "README.md": b"# data"}, repo_type="dataset")
    get(hub, root, "org/data", "data/train.csv", repo_type="dataset")
    get(hub, root, "org/data", "README.md", repo_type="dataset")
    hub.push("org/demo", {"app.py": b"print('hi')"}, repo_type="space")
    get(hub, root, "org/demo", "app.py", repo_type="space")
    hub.push("org/copy", {"model.safetensors": payload(3000, 1)})  # same bytes as org/model@c1, other repo
    get(hub, root, "org/copy", "model.safetensors")
    # Probing for optional files, as transformers does, records them in .no_exist/<commit>/.
    for optional in ("adapter_config.json", "processor_config.json"):
        with pytest.raises(EntryNotFoundError):
            get(hub, root, "org/model", optional)
    assert os.path.isfile(os.path.join(root, "models--org--model", ".no_exist", c3, "adapter_config.json"))
    return {"c1": c1, "c2": c2, "c3": c3, "pr": pr, "d1": d1, "d2": d2, "pinned": pinned}


def publish(root: str, pointer: str, xet_hash: str, size: int) -> None:
    """Move the repo blob behind a snapshot pointer into the shared store, with huggingface_hub's own code."""
    blob = os.path.normpath(os.path.join(os.path.dirname(pointer), os.readlink(pointer)))
    assert _shared_blobs.publish_blob_to_shared_store(blob_path=blob, xet_hash=xet_hash, cache_dir=root, expected_size=size)


def assert_kept_revisions_load_offline(root: str, before, deleted: set[str], monkeypatch) -> None:
    """Every file of every revision not deleted loads with local_files_only, by commit and by each ref."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    after = scan_cache_dir(root)
    assert after.warnings == []
    loaded = 0
    for cached in before.repos:
        for revision in cached.revisions:
            if revision.commit_hash in deleted:
                continue
            for f in revision.files:
                name = str(f.file_path.relative_to(revision.snapshot_path))
                for rev in (revision.commit_hash, *revision.refs):
                    path = hf_hub_download(
                        cached.repo_id, name, revision=rev, repo_type=cached.repo_type, cache_dir=root, local_files_only=True
                    )
                    with open(path, "rb") as fh:
                        assert fh.read() == f.blob_path.read_bytes()
                    loaded += 1
    assert loaded


def age_everything(root: str, days: float, *, but: tuple[str, ...] = ()) -> None:
    """Set every blob's atime ``days`` back (mtime untouched), except the blobs of ``but`` repo folders."""
    old = time.time() - days * DAY
    for dirpath, _, files in os.walk(root):
        if any(f"/{b}/" in dirpath + "/" for b in but):
            continue
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            os.utime(path, (old, st.st_mtime), follow_symlinks=False)


DAY = 86400.0


def run_cli(*args: str, input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> Result:
    """``hfcache ARGS`` in this process: the result's ``exit_code``, ``stdout``, ``stderr`` (and ``output``, both interleaved).

    An exception that is not an exit (a bug: the commands turn every error into an exit code)
    is raised here, with its traceback, instead of passing for exit code 1.
    """
    return CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)


def cli(*args: str, input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> tuple[int, dict | str]:
    """``run_cli``, then (exit code, the document on stdout) with ``--json``, else (exit code, stdout and stderr)."""
    result = run_cli(*args, input=input, env=env)
    if "--json" in args and result.stdout.strip():
        return result.exit_code, json.loads(result.stdout)
    return result.exit_code, result.output


# The CLI in a child process with every removal slowed down, so that a test can act part-way
# (kill it, signal it, start another, watch its progress bar). It slows the os functions
# themselves (not one of hfcache's helpers), so it holds whatever way execution removes files
# (paths, dir_fd, shutil.rmtree). A hub revision takes about eight of them. The signals a
# test sends are handled as in a terminal's command, whatever the test run's caller ignores
# (SIGHUP under nohup, SIGINT in a script's background job): hfcache leaves those ignored.
SLOW_CLI = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGHUP, signal.SIG_DFL)
delay = float(sys.argv[1])
def slow(remove):
    def slowed(*args, **kwargs):
        time.sleep(delay)
        return remove(*args, **kwargs)
    return slowed
os.unlink, os.remove, os.rmdir, os.rename = slow(os.unlink), slow(os.remove), slow(os.rmdir), slow(os.rename)
sys.argv = ["hfcache", *sys.argv[2:]]
from hfcache.cli import main
main()
"""


def slow_cli(delay: float, *args: str) -> subprocess.Popen:
    """``hfcache ARGS`` in a child process (pipes for stdout and stderr), each removal and rename slowed by ``delay`` seconds."""
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, str(delay), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# The CLI in a child process, each removal slowed, with a worker for every model there is
# (MIN_SHARE = 1: the tests' caches are small); signals as SLOW_CLI's. With RECORD_ITEMS set,
# each item's process goes to that file ("pid folder" lines).
PARALLEL_CLI = SLOW_CLI.replace(
    'sys.argv = ["hfcache"',
    """import hfcache.execute.run, hfcache.execute.workers
hfcache.execute.workers.MIN_SHARE = 1
if os.environ.get("RECORD_ITEMS"):
    run_item = hfcache.execute.run._run_item
    def noted(run, live, deletion, tree, w, path, grace):
        with open(os.environ["RECORD_ITEMS"], "a") as f:
            f.write(f"{os.getpid()} {os.path.basename(path)}\\n")
        return run_item(run, live, deletion, tree, w, path, grace)
    hfcache.execute.run._run_item = noted
sys.argv = ["hfcache\"""",
)


def audit_records(log: str) -> list[dict]:
    """The records of the audit log at ``log`` (none when it was never written)."""
    from hfcache.execute.audit import read_log

    return list(read_log(log)) if os.path.exists(log) else []


def processes_in(record: str) -> int:
    """How many processes took items, by the file PARALLEL_CLI's RECORD_ITEMS wrote."""
    with open(record) as f:
        return len({line.split()[0] for line in f})


def parallel_cli(delay: float, *args: str, record: str | None = None) -> subprocess.Popen:
    """The CLI in a process of its own (a test worker runs threads, and hfcache forks only without them)."""
    return subprocess.Popen(
        [sys.executable, "-c", PARALLEL_CLI, str(delay), *args],
        env={**os.environ, "RECORD_ITEMS": record or ""},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test can tell whether any of it still runs
    )


def contents(root: str) -> dict[str, bytes]:
    """Path -> bytes of every file below ``root`` (to prove a tree untouched), read without moving atimes."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))  # the tests' files are ours
            with os.fdopen(fd, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def small_cache(root: str) -> dict[str, str]:
    """Two models with two revisions each: c-old (read 60 days ago) and c-new (main)."""
    old = time.time() - 60 * DAY
    made = {}
    for name in ("org--a", "org--b"):
        old_c, new_c = commit(f"{name}-old"), commit(f"{name}-new")
        repo_dir = repo(
            root,
            f"models--{name}",
            snapshots={
                old_c: {"w.bin": f"{name}-e1", "config.json": f"{name}-cfg"},
                new_c: {"w.bin": f"{name}-e2", "config.json": f"{name}-cfg"},
            },
            blobs={f"{name}-e1": 1000, f"{name}-e2": 2000, f"{name}-cfg": 10},
            refs={"main": new_c},
        )
        os.utime(os.path.join(repo_dir, "blobs", f"{name}-e1"), (old, old))
        os.utime(os.path.join(repo_dir, "blobs", f"{name}-cfg"), (old, old))
        made[name] = repo_dir
    return made


def many_repos(root: str, n: int) -> str:
    """``n`` repos of four revisions each (three files, one blob shared by all), and a policy file.

    Even repos (``org/old-*``) were last read 60 days ago and go whole by max-age; odd
    ones (``org/new-*``) keep their latest revision.
    """
    old = time.time() - 60 * DAY
    for i in range(n):
        name = f"{'old' if i % 2 == 0 else 'new'}-{i}"
        commits = [commit(f"{name}-{j}") for j in range(4)]
        snapshots = {
            c: {"config.json": f"{name}-cfg", "w.bin": f"{name}-w{j}", "sub/t.json": f"{name}-t{j}"}
            for j, c in enumerate(commits)
        }
        blobs = {f"{name}-cfg": 50, **{f"{name}-w{j}": 3000 + j for j in range(4)}, **{f"{name}-t{j}": 20 for j in range(4)}}
        repo_dir = repo(root, f"models--org--{name}", snapshots=snapshots, blobs=blobs, refs={"main": commits[-1]})
        for j in range(len(commits)):
            for key in (f"{name}-w{j}", f"{name}-t{j}"):
                when = old + j if name.startswith("old") else time.time() - 100 + j
                os.utime(os.path.join(repo_dir, "blobs", key), (when, when))
        shared = old if name.startswith("old") else time.time() - 1000
        os.utime(os.path.join(repo_dir, "blobs", f"{name}-cfg"), (shared, shared))
    policy = os.path.join(os.path.dirname(root), "policy.yaml")
    with open(policy, "w") as f:
        f.write('version: 1\nmodels:\n  "org/old-*": {max_age: 30d}\n  "org/new-*": {keep: 1}\n')
    return policy


NOW = 1000 * DAY


def rev(item: str, name: str, *, days_old: float, size: int = 100, version: str | None = None, refs=(), blobs=None):
    t = NOW - days_old * DAY
    return Revision(
        name,
        f"/c/{item}/{name}",
        refs=tuple(refs),
        size_bytes=size,
        reclaimable_bytes=size,
        last_accessed=t,
        last_modified=t,
        version=version,
        blobs=frozenset(blobs or ()),
    )


def torch_cache(*items: tuple[str, list[Revision]], root: str = "/c", warnings=()) -> CacheInventory:
    built = tuple(
        Item("torch", ident, "hub-repo", f"{root}/{ident}", size_bytes=sum(r.size_bytes for r in revs), revisions=tuple(revs))
        for ident, revs in items
    )
    return CacheInventory("torch", root, size_bytes=sum(i.size_bytes for i in built), items=built, warnings=warnings)


THREE = torch_cache(
    ("m", [rev("m", "a", days_old=90), rev("m", "b", days_old=40), rev("m", "c", days_old=1)]),
    ("n", [rev("n", "x", days_old=100)]),
)


ROW = re.compile(r"^\| (.*) \|$")


def _cells(line: str) -> list[str]:
    inner = ROW.match(line).group(1)  # type: ignore[union-attr]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\) \| ", inner)]


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every GitHub-flavoured Markdown table in ``text``: rows of cells, header first, separator checked."""
    tables: list[list[list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if ROW.match(lines[i]) and i + 1 < len(lines) and re.fullmatch(r"\|(-{3}:?\|)+", lines[i + 1]):
            header = _cells(lines[i])
            assert lines[i + 1].count("|") == len(header) + 1, "separator and header disagree"
            rows = [header]
            i += 2
            while i < len(lines) and ROW.match(lines[i]):
                rows.append(_cells(lines[i]))
                assert len(rows[-1]) == len(header), lines[i]
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def assert_deletable_paths_fit_their_shapes(cache: CacheInventory) -> None:
    """Every path a prune of ``cache`` could remove passes the checks run before the first deletion.

    A scanner reporting a unit its kind's shapes do not cover would get every plan of the
    cache refused whole (nothing deleted, exit 4): each revision, each item with its last
    revision, each partial download.
    """
    from hfcache.caches.registry import KINDS
    from hfcache.execute.checks import target_problem

    shapes = KINDS[cache.kind].shapes
    paths = [p.path for p in cache.partial_files]
    for item in cache.items:
        if item.deletable:
            paths += [*item.unit_paths, *(p for r in item.revisions for p in r.unit_paths)]
    problems = [problem for problem in (target_problem(p, cache, shapes) for p in paths) if problem]
    assert problems == []


def live_hook(action):
    """LiveChecks (given the roots) whose open-file table runs ``action`` once: just before the first model's units go.

    The last hook before deletion: what ``action`` does to the disk is what a racing process
    would do after the plan, the fresh scan and the checks before the first deletion.
    """
    from hfcache.execute.checks import LiveChecks
    from hfcache.fs.system import OpenFiles

    done: list[object] = []

    def list_open_files(roots):
        if not done:
            done.append(action())
        return OpenFiles({}, 0)

    return lambda roots: LiveChecks(roots, list_open_files=list_open_files)


def add_orphan_blobs(root: str, folders: list[str], size: int = 100) -> None:
    """A blob no snapshot links in each repo folder of ``folders``, 30 days old: junk that ``prune --junk`` removes."""
    old = time.time() - 30 * DAY
    for n, folder in enumerate(folders, start=1):
        orphan = os.path.join(root, folder, "blobs", f"{n:040x}")
        with open(orphan, "wb") as f:
            f.write(b"x" * size)
        os.utime(orphan, (old, old))
