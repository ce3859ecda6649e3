"""Safe deletion (issue 5): exactly the plan, nothing else, with downloads, readers, kills and other prunes around.

Every scenario checks the disk itself: what is outside the plan is byte-for-byte still
there, ``freed_bytes`` equals what really left the disk, and huggingface_hub still loads
every kept revision offline.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time

import pytest
from huggingface_hub import hf_hub_download, scan_cache_dir

import hfcache
from hfcache.caches.huggingface.kind import HUB
from hfcache.caches.torch import TORCH
from hfcache.errors import UnsafePlan
from hfcache.execute.audit import default_log_path, read_log
from hfcache.execute.checks import LiveChecks, home_dirs, root_problem, target_problem
from hfcache.execute.run import execute_plan
from hfcache.fs.system import OpenFiles, sees_every_process
from hfcache.model import CacheInventory
from hfcache.plan.build import make_plan
from hfcache.plan.settings import Policy, Settings
from hfcache.prune import run_plan
from tests.fakehub import FakeHub
from tests.support import (
    DAY,
    age_everything,
    assert_kept_revisions_load_offline,
    cli,
    contents,
    get,
    many_repos,
    payload,
    slow_cli,
    small_cache,
)
from tests.trees import commit, link, repo, write


def files_under(root: str) -> dict[tuple[int, ...], int]:
    """Every regular file of model data below ``root`` (links not followed): inode -> size.

    Ref files are left out: 40-byte pointers that huggingface_hub does not count, and
    neither does a plan or its ``freed_bytes``.
    """
    found = {}
    for folder, _, names in os.walk(root):
        if "refs" in os.path.relpath(folder, root).split(os.sep):
            continue
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(st.st_mode):
                # With size and mtime: a deleted file's inode number may be reused by a new (lock) file.
                found[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = st.st_size
    return found


# ---------------------------------------------------------------------------------------------
# Checks before the first deletion


def test_paths_of_an_unexpected_shape_are_refused(tmp_path):
    root = tmp_path / "hub"
    (root / "models--org--m" / "snapshots").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "models--org--x")
    cache = CacheInventory("huggingface", str(root), protected=(str(root), str(root / ".locks"), str(root / "blobs")))
    r, c = str(root), commit(1)

    def why(path: str, **kw) -> str | None:
        return target_problem(path, cache, HUB.shapes, **kw)

    for good in (f"{r}/models--org--m", f"{r}/models--org--m/snapshots/{c}", f"{r}/models--org--m/refs/pr/1",
                 f"{r}/models--org--m/blobs/abc.incomplete", f"{r}/models--org--m/.no_exist/{c}",
                 f"{r}/models--org--m/trees/{c}.json", f"{r}/datasets--org--d", f"{r}/blobs/ab/{'ab' * 32}"):  # fmt: skip
        assert why(good) is None, good
    for bad in (f"{r}/models--org--m/snapshots/notacommit", f"{r}/models--org--m/snapshots", f"{r}/models--org--m/blobs",
                f"{r}/notes.txt", f"{r}/.locks", f"{r}/blobs", f"{r}/version.txt", f"{r}/models--org--m/refs",
                f"{r}/models--org--m/snapshots/{c}/w.bin"):  # fmt: skip
        assert "unexpected shape" in why(bad), bad
    assert "outside the cache root" in why(str(tmp_path / "elsewhere"))
    assert "outside the cache root" in why(r)
    assert "through a symlink" in why(f"{r}/models--org--x/snapshots/{c}")
    assert "not a normalised absolute path" in why(f"{r}/models--org--m/../models--org--n")
    assert "the cache needs" in target_problem(f"{r}/.locks", cache, (".*",))
    assert "unexpected shape" in target_problem(f"{r}/models--org--m", cache, ())  # a kind declaring no shapes
    log = f"{r}/models--org--m/blobs/audit.log"
    assert "hfcache's own log" in why(f"{r}/models--org--m", keep=[log])
    assert "hfcache's own log" in why(log, keep=[log])
    # What holds a needed path or the log, by either spelling of the log; never a mere prefix of the name.
    needs = CacheInventory("huggingface", str(root), protected=(f"{r}/models--org--m/snapshots/{c}/keep.txt",))
    assert "the cache needs" in target_problem(f"{r}/models--org--m", needs, HUB.shapes)
    assert "the cache needs" in target_problem(f"{r}/models--org--m/snapshots/{c}", needs, HUB.shapes)
    assert target_problem(f"{r}/models--org--mm", needs, HUB.shapes) is None
    assert target_problem(f"{r}/models--org--m/snapshots/{c[:-1]}0", needs, HUB.shapes) is None
    os.symlink(f"{r}/models--org--m/snapshots", tmp_path / "logs")
    spelled = str(tmp_path / "logs" / c / "audit.log")
    assert f"hfcache's own log {spelled}" in why(f"{r}/models--org--m/snapshots/{c}", keep=[spelled])
    assert why(f"{r}/models--org--mm", keep=[spelled]) is None


def test_roots_that_are_slash_a_home_or_no_longer_a_cache_are_refused(tmp_path, isolated_home):
    homes = home_dirs()
    assert os.path.realpath(isolated_home) in homes
    recognise = HUB.recognizes
    assert "root of the file system" in root_problem(CacheInventory("huggingface", "/"), recognise, homes)
    assert "home folder" in root_problem(CacheInventory("huggingface", isolated_home), recognise, homes)
    assert "home folder" in root_problem(CacheInventory("huggingface", os.path.dirname(isolated_home)), recognise, homes)
    root = tmp_path / "hub"
    (root / "models--org--m").mkdir(parents=True)
    assert root_problem(CacheInventory("huggingface", str(root)), recognise, homes) is None
    assert "no cache kind" in root_problem(CacheInventory("ollama", str(root)), None, homes)
    shutil.rmtree(root / "models--org--m")
    (root / "notes.txt").write_text("mine")
    assert "no longer recognisable" in root_problem(CacheInventory("huggingface", str(root)), recognise, homes)


def test_a_home_folder_as_cache_root_is_refused_and_personal_files_survive(isolated_home, monkeypatch):
    home = isolated_home
    write(os.path.join(home, "notes.txt"), b"my notes")
    write(os.path.join(home, "Documents", "thesis.tex"), b"years of work")
    write(os.path.join(home, ".bashrc"), b"alias ll='ls -l'")
    c = commit("personal")
    repo(home, "models--org--m", snapshots={c: {"w.bin": "e1"}}, blobs={"e1": 100}, refs={"main": c})
    age_everything(home, 60)
    before = contents(home)

    code, out = cli("prune", "--cache-dir", home, "--max-age", "1d", "--junk", "--junk-grace", "0s", "--yes")
    assert code == 4, out
    assert "home folder" in out and "nothing deleted" in out
    monkeypatch.setenv("HF_HUB_CACHE", home)  # the same through the cache variable
    code, out = cli("prune", "--kind", "huggingface", "--max-age", "1d", "--yes")
    assert code == 4, out
    assert contents(home) == before


def test_a_folder_of_personal_files_with_one_repo_in_it_loses_only_the_repo(tmp_path):
    folder = str(tmp_path / "Downloads")
    write(os.path.join(folder, "notes.txt"), b"my notes")
    write(os.path.join(folder, "photos", "cat.jpg"), b"\xff\xd8 cat")
    c = commit("lone")
    repo(folder, "models--org--m", snapshots={c: {"w.bin": "e1"}}, blobs={"e1": 100}, refs={"main": c})
    age_everything(folder, 60)
    personal = {k: v for k, v in contents(folder).items() if not k.startswith("models--")}

    code, done = cli("prune", "--cache-dir", folder, "--max-age", "1d", "--yes", "--json")
    assert code == 0, done
    assert [u["status"] for u in done["delete"]] == ["deleted"]
    assert sorted(os.listdir(folder)) == [".locks", "notes.txt", "photos"]  # .locks/ holds the prune lock
    assert {k: v for k, v in contents(folder).items() if not k.startswith(".locks/")} == personal


# ---------------------------------------------------------------------------------------------
# Symlinks out of the cache


def _outside(tmp_path) -> str:
    outside = str(tmp_path / "outside")
    write(os.path.join(outside, "secret.txt"), b"not a model")
    write(os.path.join(outside, "folder", "w.bin"), b"x" * 1000)
    write(os.path.join(outside, "folder", "config.json"), b"{}")
    return outside


def test_links_out_of_the_cache_found_by_the_scan_are_never_followed(tmp_path):
    outside = _outside(tmp_path)
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    old_a = commit("org--a-old")
    link(os.path.join(repos["org--a"], "snapshots", old_a, "escape.txt"), os.path.join(outside, "secret.txt"))
    link(os.path.join(repos["org--b"], "snapshots", commit("org--b-extra")), os.path.join(outside, "folder"))
    os.symlink(os.path.join(outside, "folder"), os.path.join(root, "models--org--c"))
    before = contents(outside)

    code, done = cli("prune", "--cache-dir", root, "--keep", "1", "--max-age", "1d", "--yes", "--json")
    assert code == 0, done
    assert contents(outside) == before
    kept = {u["id"]: u["reasons"] for u in done.get("keep", [])}
    code, plan = cli("prune", "--cache-dir", root, "--keep", "1", "--dry-run", "--json")
    damaged = {u["id"] for u in plan["keep"] if any(r.startswith("damaged") for r in u["reasons"])}
    assert {"org/a", "org/b"} <= damaged, (plan["keep"], kept)
    assert os.path.islink(os.path.join(root, "models--org--c"))


SWAPS = ("snapshot entry", "snapshot folder", "repo folder")


@pytest.mark.parametrize("swap", SWAPS)
@pytest.mark.parametrize("fresh", [False, True], ids=["planned-scan", "rescan"])
def test_a_path_swapped_for_a_link_out_after_the_plan_leaves_the_outside_untouched(tmp_path, swap, fresh):
    outside = _outside(tmp_path)
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    repo_dir, old = repos["org--a"], commit("org--a-old")
    inventory = hfcache.scan([root])
    plan = make_plan(inventory, Policy(overrides=Settings(max_age=30 * DAY)), now=time.time())
    assert {u.revision for u in plan.delete} == {old, commit("org--b-old")}

    snap = os.path.join(repo_dir, "snapshots", old)
    if swap == "snapshot entry":
        os.unlink(os.path.join(snap, "w.bin"))
        os.symlink(os.path.join(outside, "secret.txt"), os.path.join(snap, "w.bin"))
    elif swap == "snapshot folder":
        shutil.rmtree(snap)
        os.symlink(os.path.join(outside, "folder"), snap)
    else:
        moved = os.path.join(outside, "moved-repo")
        shutil.move(repo_dir, moved)
        os.symlink(moved, repo_dir)
    before = contents(outside)

    try:
        result = run_plan(plan, None if fresh else inventory)
    except UnsafePlan as e:
        assert swap == "repo folder" and "through a symlink" in str(e)
    else:
        unit = next(r for r in result.results if r.unit.revision == old)
        if fresh or swap == "repo folder":
            assert unit.status == "skipped", unit
        other = next(r for r in result.results if r.unit.revision == commit("org--b-old"))
        assert other.status == "deleted"
    assert contents(outside) == before


# ---------------------------------------------------------------------------------------------
# Live use: downloads, readers, reads since the plan


def test_a_running_download_into_the_repo_keeps_it_and_completes(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        c1 = hub.push("org/m", {"config.json": b'{"v": 1}', "w.bin": payload(5000, 1)})
        get(hub, root, "org/m", "config.json")
        get(hub, root, "org/m", "w.bin")
        age_everything(root, 60)
        big = payload(400_000, 2)
        c2 = hub.push("org/m", {"w.bin": big})
        hub.delay = 3.0
        got: dict[str, str] = {}
        thread = threading.Thread(target=lambda: got.setdefault("path", get(hub, root, "org/m", "w.bin", revision=c2)))
        thread.start()
        blobs = os.path.join(root, "models--org--m", "blobs")
        deadline = time.time() + 20
        while not any(n.endswith(".incomplete") for n in os.listdir(blobs)):
            assert time.time() < deadline, "the download never started"
            time.sleep(0.02)

        code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json")
        assert code == 0, done
        (unit,) = done["delete"]
        assert unit["revision"] == c1
        assert unit["status"] == "skipped" and "download" in unit["error"], unit
        thread.join(30)
        with open(got["path"], "rb") as f:
            assert f.read() == big

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for rev, name in ((c1, "w.bin"), (c2, "w.bin"), (c1, "config.json")):
        assert os.path.exists(hf_hub_download("org/m", name, revision=rev, cache_dir=root, local_files_only=True))
    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json")  # now nothing runs
    assert code == 0 and [u["status"] for u in done["delete"]] == ["deleted"], done
    with open(hf_hub_download("org/m", "w.bin", revision=c2, cache_dir=root, local_files_only=True), "rb") as f:
        assert f.read() == big


def test_a_young_partial_download_in_the_repo_keeps_it(tmp_path):
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    write(os.path.join(repos["org--a"], "blobs", "e9.1a2b3c4d.incomplete"), 10)  # no lock: judged by age
    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json")
    assert code == 0, done
    status = {u["id"]: (u["status"], u["error"]) for u in done["delete"]}
    assert status["org/a"][0] == "skipped" and "may be running" in status["org/a"][1]
    assert status["org/b"] == ("deleted", None)
    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--junk-grace", "0s", "--yes", "--json")
    assert {u["id"]: u["status"] for u in done["delete"]} == {"org/a": "deleted"}, done


HOLDERS = {
    "open": "f = open(sys.argv[1], 'rb')",
    "mmap": "import mmap; f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); f.close()",
}


@pytest.mark.parametrize("how", HOLDERS)
def test_a_blob_open_or_mapped_by_a_process_keeps_its_revision(tmp_path, how):
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    held = os.path.join(repos["org--a"], "snapshots", commit("org--a-old"), "w.bin")  # through the snapshot link
    code = f"import sys\n{HOLDERS[how]}\nprint('ready', flush=True)\nsys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, held], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        # By mtime: mapping a file moves its atime (the kernel's file_accessed), so by atime the
        # plan would not select it in the first place.
        code_, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--age-by", "mtime", "--yes", "--json")
        assert code_ == 0, done
        status = {u["id"]: u for u in done["delete"]}
        assert status["org/a"]["status"] == "skipped"
        assert f"pid {holder.pid}" in status["org/a"]["error"] and "memory-mapped" in status["org/a"]["error"]
        assert status["org/b"]["status"] == "deleted"
    finally:
        holder.communicate("")
    code_, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--age-by", "mtime", "--yes", "--json")
    assert [(u["id"], u["status"]) for u in done["delete"]] == [("org/a", "deleted")]


def test_units_read_or_gone_since_the_plan_are_skipped(tmp_path):
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    inventory = hfcache.scan([root])
    plan = make_plan(inventory, Policy(overrides=Settings(max_age=30 * DAY)), now=time.time())
    with open(os.path.join(repos["org--a"], "snapshots", commit("org--a-old"), "w.bin"), "rb") as f:
        f.read()  # a read moves atime (the blob was 60 days old, so even relatime moves it)
    os.utime(os.path.join(repos["org--a"], "blobs", "org--a-e1"), (time.time(), time.time() - 60 * DAY))
    shutil.rmtree(os.path.join(repos["org--b"], "snapshots", commit("org--b-old")))
    result = execute_plan(plan, inventory)  # the scan the plan came from, as `prune --yes` does
    status = {r.unit.id: (r.status, r.error) for r in result.results}
    assert status["org/a"][0] == "skipped" and "read since the plan" in status["org/a"][1]
    assert status["org/b"] == ("skipped", "no longer in the cache")
    assert os.path.isdir(os.path.join(repos["org--a"], "snapshots", commit("org--a-old")))


def _run_with_unreadable(tmp_path, *, sees_all: bool):
    root = str(tmp_path / "hub")
    small_cache(root)
    inventory = hfcache.scan([root])
    plan = make_plan(inventory, Policy(overrides=Settings(max_age=30 * DAY)), now=time.time())
    unreadable = ("pid 7 (a)", "pid 8 (b)", "pid 9 (c)")
    live = LiveChecks([root], list_open_files=lambda roots: OpenFiles({}, 3, unreadable), sees_all=lambda: sees_all)
    result = execute_plan(plan, inventory, live=live)
    assert {r.status for r in result.results} == {"deleted"}
    return result


def test_processes_whose_files_cannot_be_seen_are_reported(tmp_path, monkeypatch):
    """Without root another user's process may hold a unit's files: said, with how to check all."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = _run_with_unreadable(tmp_path, sees_all=False)
    [note] = [w for w in result.warnings if "could not be read" in w]
    assert "3 process(es)" in note and "run as root" in note


def test_root_without_ptrace_says_what_it_lacks_not_to_run_as_root(tmp_path, monkeypatch):
    """Root in a container (no CAP_SYS_PTRACE) cannot read other users' processes: "run as root" would be wrong."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    result = _run_with_unreadable(tmp_path, sees_all=False)
    [note] = [w for w in result.warnings if "could not be read" in w]
    assert "CAP_SYS_PTRACE" in note and "run as root" not in note


def test_processes_no_one_may_read_are_no_warning_but_named_under_verbose(tmp_path, caplog):
    """Root that may read every process: what it still cannot read, no one can; not a warning every night."""
    with caplog.at_level(logging.INFO, logger="hfcache.execute.checks"):
        result = _run_with_unreadable(tmp_path, sees_all=True)
    assert not any("could not be read" in w for w in result.warnings)
    [line] = [r.getMessage() for r in caplog.records if "not readable" in r.getMessage()]
    assert "pid 7 (a), pid 8 (b), pid 9 (c)" in line


def test_sees_every_process_reads_the_capability_of_this_process():
    """root with CAP_SYS_PTRACE in its effective set, and no one else."""
    with open("/proc/self/status") as f:
        caps = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    assert sees_every_process() == (os.geteuid() == 0 and bool(caps & (1 << 19)))


# ---------------------------------------------------------------------------------------------
# Kills, concurrent prunes, failures


@pytest.mark.parametrize("after", [2, 25])
def test_kill_9_mid_prune_leaves_a_loadable_cache_and_a_later_prune_finishes(tmp_path, monkeypatch, after):
    root = str(tmp_path / "hub")
    policy = many_repos(root, 16)
    before = scan_cache_dir(root)
    code, plan = cli("prune", "--cache-dir", root, "--config", policy, "--dry-run", "--json")
    assert code == 0 and len(plan["delete"]) == 8 * 4 + 8 * 3, plan
    deleted = {u["revision"] for u in plan["delete"]}
    log = str(tmp_path / "audit.log")

    proc = slow_cli(0.004, "prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--log", log)
    deadline = time.time() + 60
    while len(list(read_log(log))) < after:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -9
    with open(log) as f:
        lines = [json.loads(line) for line in f]  # every line whole
    assert after <= len(lines) < len(plan["delete"])

    assert_kept_revisions_load_offline(root, before, deleted, monkeypatch)  # scan_cache_dir: no warnings
    code, done = cli("prune", "--cache-dir", root, "--config", policy, "--junk", "--junk-grace", "0s", "--yes", "--json")
    assert code == 0, done
    assert {u["status"] for u in done["delete"]} <= {"deleted"}, [u["error"] for u in done["delete"] if u["status"] != "deleted"]
    after_scan = hfcache.scan([root]).caches[0]
    remaining = {(i.id, r.revision) for i in after_scan.items for r in i.revisions}
    expected = {(r.repo_id, r2.commit_hash) for r in before.repos for r2 in r.revisions if r2.commit_hash not in deleted}
    assert remaining == expected
    assert not after_scan.orphan_files and not after_scan.leftovers and not after_scan.partial_files
    assert scan_cache_dir(root).warnings == []
    assert sorted(os.listdir(root)) == sorted({".locks", *(f"models--org--new-{i}" for i in range(1, 16, 2))})


def test_two_prunes_at_once_delete_each_unit_once(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    policy = many_repos(root, 6)
    before = scan_cache_dir(root)
    files_before = files_under(root)
    code, plan = cli("prune", "--cache-dir", root, "--config", policy, "--dry-run", "--json")
    planned = {u["path"] for u in plan["delete"]}
    args = ("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--lock-wait", "2m")
    first, second = slow_cli(0.008, *args), slow_cli(0.008, *args)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    runs = [json.loads(out) for out, _ in outs]
    deleted = [u["path"] for run in runs for u in run["delete"] if u["status"] == "deleted"]
    assert sorted(deleted) == sorted(planned), "each unit deleted exactly once, by one of them"
    skipped = [u for run in runs for u in run["delete"] if u["status"] == "skipped"]
    assert skipped, "the second prune planned while the first ran, waited for it, and found its units gone"
    assert all(u["error"] == "no longer in the cache" for u in skipped)
    files_after = files_under(root)
    gone = sum(size for key, size in files_before.items() if key not in files_after)
    assert sum(run.get("freed_bytes", 0) for run in runs) == gone
    assert_kept_revisions_load_offline(root, before, {u["revision"] for u in plan["delete"]}, monkeypatch)


def test_a_second_prune_waits_then_exits_busy_with_nothing_deleted(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    before = contents(root)
    lock = os.path.join(root, ".locks", "hfcache-prune.lock")
    holder_code = (
        "import sys\nfrom hfcache.execute.prune_lock import PruneLocks\n"
        "with PruneLocks({sys.argv[1]: sys.argv[2]}, wait=0):\n    print('ready', flush=True)\n    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, root, lock], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o664  # group-writable, as the hub's own locks
        started = time.monotonic()
        code, out = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--lock-wait", "1s")
        assert code == 75, out
        assert time.monotonic() - started >= 1
        assert "another hfcache prune is running" in out and len(out.strip().splitlines()) == 1
    finally:
        holder.communicate("")
    assert {k: v for k, v in contents(root).items() if "hfcache-prune" not in k} == before
    assert scan_cache_dir(root).warnings == []  # the lock lives where the hub's scan does not look
    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json", "--lock-wait", "0s")
    assert code == 0 and {u["status"] for u in done["delete"]} == {"deleted"}


@pytest.fixture
def undeletable(need_tool):
    """Make a folder's entries undeletable: ``chattr +i`` as root (who ignores modes), a read-only mode otherwise."""
    made: list[str] = []

    def freeze(folder: str) -> None:
        if os.geteuid() == 0:
            done = subprocess.run([need_tool("chattr"), "+i", folder], capture_output=True, text=True)
            if done.returncode:  # (a file system without the immutable flag: tmpfs before 6.x, overlayfs)
                pytest.skip(f"running as root, and chattr +i failed here: {done.stderr.strip()}")
        else:
            os.chmod(folder, 0o555)
        made.append(folder)

    yield freeze
    for folder in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", folder], check=True)
        else:
            os.chmod(folder, 0o755)


def test_an_undeletable_unit_fails_truthfully(tmp_path, undeletable, monkeypatch):
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    before = scan_cache_dir(root)
    files_before = files_under(root)
    stuck = os.path.join(repos["org--a"], "snapshots", commit("org--a-old"))
    undeletable(stuck)

    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json")
    assert code == 1, done
    status = {u["id"]: u for u in done["delete"]}
    assert status["org/a"]["status"] == "failed" and status["org/a"]["error"]
    assert "w.bin" in status["org/a"]["error"] or stuck in status["org/a"]["error"]
    assert status["org/b"]["status"] == "deleted"
    files_after = files_under(root)
    gone = sum(size for key, size in files_before.items() if key not in files_after)
    assert done["freed_bytes"] == gone == sum(u["freed_bytes"] for u in done["delete"])
    # The failed revision keeps every blob it links to: the hub still reads the cache cleanly.
    assert os.path.exists(os.path.join(repos["org--a"], "blobs", "org--a-e1"))
    assert scan_cache_dir(root).warnings == []
    assert_kept_revisions_load_offline(root, before, {commit("org--b-old")}, monkeypatch)


# ---------------------------------------------------------------------------------------------
# The audit log


def test_every_deleted_unit_is_logged_and_the_log_is_never_deleted(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json")
    assert code == 0
    records = list(read_log())
    assert default_log_path().startswith(os.environ["XDG_STATE_HOME"])
    # Each unit: a "started" line (with its refs and version) before its first step, its outcome later
    # (outcomes may come after the next unit's start: the hub's blobs wait out a settling time).
    started = [(r["id"], r["revision"], r["refs"]) for r in records if r["status"] == "started"]
    outcomes = [(r["id"], r["revision"], r["status"], r["bytes"]) for r in records if r["status"] != "started"]
    assert started == [(u["id"], u["revision"], u["refs"]) for u in done["delete"]]
    assert outcomes == [(u["id"], u["revision"], "deleted", u["freed_bytes"]) for u in done["delete"]]
    for i, r in enumerate(records):
        if r["status"] != "started":
            assert any(s["status"] == "started" and s["path"] == r["path"] for s in records[:i])
    for r in records:
        assert {"time", "user", "host", "kind", "path", "reasons", "root", "run"} <= r.keys()
        assert r["kind"] == "huggingface" and r["reasons"] and r["user"] and r["host"]

    other = str(tmp_path / "other" / "log.jsonl")
    small_cache(str(tmp_path / "hub2"))
    code, _ = cli("prune", "--cache-dir", str(tmp_path / "hub2"), "--max-age", "30d", "--yes", "--log", other)
    assert code == 0 and len(list(read_log(other))) == 4 and len(list(read_log())) == 4

    root3 = str(tmp_path / "hub3")
    repos = small_cache(root3)
    inside = os.path.join(repos["org--a"], "blobs", "audit.log")  # a log where a unit would take it
    before3 = contents(root3)
    code, out = cli(
        "prune", "--cache-dir", root3, "--max-age", "30d", "--allow-remove-all", "--keep", "1", "--yes", "--log", inside
    )
    assert code == 2 and "inside the cache" in out, out  # a log in a cache is refused outright (issue 15)
    assert contents(root3) == before3 and not os.path.exists(inside)


def test_an_unwritable_log_stops_the_run_before_anything_is_deleted(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    before = contents(root)
    blocker = write(str(tmp_path / "file"), b"")
    code, out = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--log", os.path.join(blocker, "log"))
    assert code == 2 and "cannot open the audit log" in out, out
    assert contents(root) == before


def test_kinds_other_than_the_hub_keep_their_lock_file_out_of_the_scan(tmp_path):
    root = str(tmp_path / "torch" / "hub")
    write(os.path.join(root, "checkpoints", "resnet18-5c106cde.pth"), 100)
    write(os.path.join(root, ".hfcache-prune.lock"), b"")
    (cache,) = hfcache.scan([root], kinds=["torch"]).caches
    assert [i.id for i in cache.items] == ["resnet18"] and not cache.all_warnings
    assert target_problem(os.path.join(root, "checkpoints", "resnet18-5c106cde.pth"), cache, TORCH.shapes) is None


def test_a_repo_folder_that_cannot_be_emptied_stays_a_valid_repo(tmp_path, undeletable):
    """Whole-repo removal takes snapshots/ last: stopped half-way, the hub still reads the cache cleanly."""
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    age_everything(root, 60)
    undeletable(os.path.join(repos["org--a"], "blobs"))
    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--kind", "huggingface", "--yes", "--json")
    assert code == 1, done
    status = {(u["id"], u["status"]) for u in done["delete"]}
    assert ("org/a", "failed") in status and ("org/b", "deleted") in status
    assert os.path.isdir(os.path.join(repos["org--a"], "snapshots"))
    assert scan_cache_dir(root).warnings == []


def test_an_emptied_repo_folder_is_junk_once_its_grace_period_is_over(tmp_path):
    """What a removal of a whole repo killed half-way leaves: folders, no revision, ref or blob."""
    root = str(tmp_path / "hub")
    small_cache(root)
    shell = os.path.join(root, "models--org--gone")
    for sub in ("snapshots", "blobs", "refs", os.path.join(".no_exist", commit("gone"))):
        os.makedirs(os.path.join(shell, sub))
    write(os.path.join(shell, ".no_exist", commit("gone"), "missing.txt"), b"")
    (cache,) = hfcache.scan([root]).caches
    assert [(lo.path, lo.commit) for lo in cache.leftovers] == [(shell, None)]
    code, done = cli("prune", "--cache-dir", root, "--junk", "--yes", "--json")
    assert code == 0 and done["delete"] == [], done  # just emptied: a download may be about to fill it
    old = time.time() - 2 * DAY
    for folder, _, names in os.walk(shell):
        for path in (folder, *(os.path.join(folder, n) for n in names)):
            os.utime(path, (old, old))
    code, done = cli("prune", "--cache-dir", root, "--junk", "--yes", "--json")
    assert [(u["path"], u["status"]) for u in done["delete"]] == [(shell, "deleted")], done
    assert not os.path.exists(shell) and scan_cache_dir(root).warnings == []


def test_a_cache_whose_lock_cannot_be_created_fails_its_units_and_deletes_nothing(tmp_path, undeletable):
    root = str(tmp_path / "hub")
    small_cache(root)
    before = contents(root)
    undeletable(root)  # no .locks/ can be made in it (nor anything deleted from it)
    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json")
    assert code == 1, done
    assert {u["status"] for u in done["delete"]} == {"failed"} and done["freed_bytes"] == 0
    assert all("cannot take the prune lock" in u["error"] for u in done["delete"])
    assert contents(root) == before
