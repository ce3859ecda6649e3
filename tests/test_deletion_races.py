"""Issue 15: deletion that no race, mount, kill or stale plan can turn against the user.

Races are driven deterministically through the last hook before units go (the table of
open files, which :class:`~hfcache.execute.checks.LiveChecks` builds just before each model), or
by patching one step in a child process that then kills itself; and for the hub's
download race, also by a real ``hf_hub_download`` running beside real prunes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
from huggingface_hub import constants, hf_hub_download, scan_cache_dir

import hfcache
from hfcache.caches.huggingface import delete as hub_delete
from hfcache.caches.huggingface.delete import HubDeletion
from hfcache.caches.huggingface.trash import TRASH
from hfcache.execute.audit import read_log
from hfcache.execute.run import execute_plan
from hfcache.plan.build import make_plan
from hfcache.plan.settings import Policy, Settings
from hfcache.prune import rescan, run_plan
from tests.fakehub import FakeHub
from tests.support import (
    DAY,
    age_everything,
    assert_kept_revisions_load_offline,
    cli,
    contents,
    get,
    live_hook,
    many_repos,
    payload,
    slow_cli,
    small_cache,
)
from tests.trees import commit, repo, write

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true", reason="mounts need root (they run on CI, as root)"
)


def _outside(tmp_path) -> str:
    outside = str(tmp_path / "root-only")
    write(os.path.join(outside, "secret.txt"), b"not the cache's")
    return outside


def _plan(root: str, **settings):
    inventory = hfcache.scan([root])
    return inventory, make_plan(inventory, Policy(overrides=Settings(**settings)), now=time.time())


# ---------------------------------------------------------------------------------------------
# 1. A symlink planted during the run


@pytest.mark.parametrize("swap", ["blobs folder", "snapshot subfolder", "trash folder"])
def test_a_folder_swapped_for_a_symlink_during_the_run_redirects_no_deletion(tmp_path, swap):
    outside = str(tmp_path / "root-only")
    root = str(tmp_path / "hub")
    old, new = commit("old"), commit("new")
    repo_dir = repo(
        root,
        "models--org--a",
        snapshots={old: {"w.bin": "e1", "sub/t.json": "t1"}, new: {"w.bin": "e2", "sub/t.json": "t2"}},
        blobs={"e1": 1000, "e2": 2000, "t1": 10, "t2": 10},
        refs={"main": new},
    )
    age_everything(root, 60, but=())
    for key in ("e2", "t2"):
        os.utime(os.path.join(repo_dir, "blobs", key))
    # The same names outside, in a folder only root may write: what a redirected deletion would hit.
    for name in ("e1", "t1", "t.json", "secret.txt"):
        write(os.path.join(outside, name), b"precious")
    inventory, plan = _plan(root, max_age=30 * DAY)
    assert [u.revision for u in plan.delete] == [old]

    def plant():
        if swap == "blobs folder":
            shutil.move(os.path.join(repo_dir, "blobs"), str(tmp_path / "real-blobs"))
            os.symlink(outside, os.path.join(repo_dir, "blobs"))
        elif swap == "snapshot subfolder":
            sub = os.path.join(repo_dir, "snapshots", old, "sub")
            shutil.rmtree(sub)
            os.symlink(outside, sub)
        else:  # hfcache's trash (made by an earlier prune, kept) swapped for a link to the outside
            os.makedirs(os.path.join(root, TRASH))
            os.rename(os.path.join(root, TRASH), str(tmp_path / "real-trash"))
            os.symlink(outside, os.path.join(root, TRASH))

    before = contents(outside)
    result = execute_plan(plan, inventory, live=live_hook(plant)([root]))
    assert contents(outside) == before
    (unit,) = result.results
    if swap == "snapshot subfolder":  # the link itself goes with the snapshot; never its target
        assert unit.status == "deleted" and unit.freed_bytes == unit.unit.reclaim_bytes == 1010  # e1 and t1; the link: nothing
    else:
        assert unit.status == "failed" and "symlink" in unit.error, unit
        assert unit.freed_bytes == 0


# ---------------------------------------------------------------------------------------------
# 2. One mount


@ROOT_ONLY
def test_a_folder_mounted_into_a_snapshot_during_the_run_is_never_emptied(tmp_path, monkeypatch):
    outside = _outside(tmp_path)
    root = str(tmp_path / "hub")
    old, new = commit("old"), commit("new")
    repo_dir = repo(
        root,
        "models--org--a",
        snapshots={old: {"w.bin": "e1", "sub/t.json": "t1"}, new: {"w.bin": "e2"}},
        blobs={"e1": 1000, "e2": 2000, "t1": 10},
        refs={"main": new, "v1": old},
    )
    age_everything(root, 60)
    os.utime(os.path.join(repo_dir, "blobs", "e2"))
    before_scan = scan_cache_dir(root)
    inventory, plan = _plan(root, max_age=30 * DAY)
    assert [u.revision for u in plan.delete] == [old]
    sub = os.path.join(repo_dir, "snapshots", old, "sub")

    def mount():
        subprocess.run(["mount", "--bind", outside, sub], check=True)

    before = contents(outside)
    try:
        result = execute_plan(plan, inventory, live=live_hook(mount)([root]))
        assert contents(outside) == before
        (unit,) = result.results
        assert unit.status == "failed" and "mount point" in unit.error, unit
    finally:
        subprocess.run(["umount", "-l", sub], check=False)
    # What was left of the revision went back with its refs: it still loads by tag.
    with open(os.path.join(repo_dir, "refs", "v1")) as f:
        assert f.read() == old
    assert os.path.isdir(os.path.join(repo_dir, "snapshots", old))
    assert os.listdir(os.path.join(root, TRASH)) == []
    assert contents(outside) == before
    assert_kept_revisions_load_offline(root, before_scan, set(), monkeypatch)


@ROOT_ONLY
def test_a_folder_mounted_between_two_units_is_seen_before_the_second_loses_a_file(tmp_path, monkeypatch):
    # The mount table is read for the first unit; a mount made a moment later, before the
    # second, must still be seen before anything of the second is removed (not halfway
    # through its removal, when the mount point itself is met).
    outside = _outside(tmp_path)
    aged = time.time() - 60 * DAY  # (the live checks read through the mount: nothing there is fresh)
    os.utime(os.path.join(outside, "secret.txt"), (aged, aged))
    root = str(tmp_path / "hub")
    old, new = commit("old"), commit("new")
    repos = {}
    for name in ("a", "b"):
        repos[name] = repo(
            root,
            f"models--org--{name}",
            snapshots={old: {"w.bin": f"{name}1", "x.bin": f"{name}x", "sub/t.json": f"{name}t"}, new: {"w.bin": f"{name}2"}},
            blobs={f"{name}1": 1000, f"{name}x": 5, f"{name}t": 10, f"{name}2": 2000},
            refs={"main": new},
        )
    age_everything(root, 60)
    for name in ("a", "b"):
        os.utime(os.path.join(repos[name], "blobs", f"{name}2"))
    inventory, plan = _plan(root, max_age=30 * DAY)
    assert sorted(u.id for u in plan.delete) == ["org/a", "org/b"]
    second = plan.delete[1]
    sub = os.path.join(second.path, "sub")
    kept = sorted(os.listdir(second.path))
    remove_revision = HubDeletion.remove_revision

    def mount_after_the_first(self, tree, cache, item, unit, rev, out):
        done = remove_revision(self, tree, cache, item, unit, rev, out)
        if unit.path != second.path:
            subprocess.run(["mount", "--bind", outside, sub], check=True)
        return done

    monkeypatch.setattr(HubDeletion, "remove_revision", mount_after_the_first)
    before = contents(outside)
    try:
        result = execute_plan(plan, inventory)
    finally:
        subprocess.run(["umount", "-l", sub], check=False)
    assert contents(outside) == before
    first, last = result.results
    assert first.status == "deleted", first
    assert last.status == "failed" and "mount point" in last.error and last.freed_bytes == 0, last
    assert sorted(os.listdir(second.path)) == kept  # refused whole: not a file of it went


# ---------------------------------------------------------------------------------------------
# 4. Killed between two steps: the next run plans what the uninterrupted run would have


KILL_AT = """
import os, signal, sys
from hfcache.fs.ops import Tree
rename = Tree.rename
where = sys.argv[1]
def rename_then_die(self, src, dst):
    if where == "before-snapshot" and "/snapshots/" in src:
        os.kill(os.getpid(), signal.SIGKILL)
    rename(self, src, dst)
    if where == "after-blob" and "/hfcache-trash/" in dst and "+blob." in dst:
        os.kill(os.getpid(), signal.SIGKILL)
Tree.rename = rename_then_die
sys.argv = ["hfcache", *sys.argv[2:]]
from hfcache.cli import main
main()
"""


def tagged_cache(root: str) -> None:
    """One model whose version order is not its time order: --keep 2 keeps v3 and v2, deletes v1."""
    now = time.time()
    commits = {f"v{i}": commit(f"tagged-{i}") for i in (1, 2, 3)}
    repo_dir = repo(
        root,
        "models--org--tagged",
        snapshots={c: {"w.bin": f"w{v[1:]}", "config.json": "cfg"} for v, c in commits.items()},
        blobs={"w1": 1000, "w2": 1100, "w3": 1200, "cfg": 10},
        refs={"main": commits["v3"], "v1.0": commits["v1"], "v2.0": commits["v2"], "v3.0": commits["v3"]},
    )
    # v1 is the newest download, v2 the oldest: by time, --keep 2 would keep v1 and v3.
    for blob, age in (("w1", 1), ("w2", 90), ("w3", 5), ("cfg", 90)):
        t = now - age * DAY
        os.utime(os.path.join(repo_dir, "blobs", blob), (t, t))


@pytest.mark.parametrize("where", ["before-snapshot", "after-blob"])
def test_a_kill_mid_unit_changes_nothing_the_next_run_keeps(tmp_path, monkeypatch, where):
    root = str(tmp_path / "hub")
    tagged_cache(root)
    before = scan_cache_dir(root)
    code, plan = cli("prune", "--cache-dir", root, "--keep", "2", "--dry-run", "--json")
    assert code == 0 and [u["revision"] for u in plan["delete"]] == [commit("tagged-1")], plan
    log = str(tmp_path / "audit.log")
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT, where, "prune", "--cache-dir", root, "--keep", "2", "--yes", "--log", log],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    # The killed unit's "started" line is on disk, with its refs and version.
    (line,) = [json.loads(x) for x in open(log)]
    assert line["status"] == "started" and line["refs"] == ["v1.0"] and line["revision"] == commit("tagged-1")

    # Before any repair, the scan already reads the cache as the repair will leave it.
    (item,) = hfcache.scan([root]).caches[0].items
    if where == "before-snapshot":
        assert {r.revision: r.refs for r in item.revisions}[commit("tagged-1")] == ("v1.0",)
    code, again = cli("prune", "--cache-dir", root, "--keep", "2", "--dry-run", "--json")
    assert [u["revision"] for u in again["delete"]] == ([commit("tagged-1")] if where == "before-snapshot" else [])

    code, done = cli("prune", "--cache-dir", root, "--keep", "2", "--yes", "--json", "--log", log)
    assert code == 0, done
    (item,) = hfcache.scan([root]).caches[0].items
    assert {r.revision for r in item.revisions} == {commit("tagged-2"), commit("tagged-3")}
    assert os.listdir(os.path.join(root, TRASH)) == []  # the trash stays, empty
    assert_kept_revisions_load_offline(root, before, {commit("tagged-1")}, monkeypatch)


# ---------------------------------------------------------------------------------------------
# 5. Re-validated at the moment of deletion


def test_apply_skips_a_unit_a_ref_moved_onto_since_the_plan(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    before = scan_cache_dir(root)
    saved = str(tmp_path / "plan.json")
    code, plan = cli("prune", "--cache-dir", root, "--max-age", "30d", "--plan-out", saved, "--dry-run", "--json")
    old_a = commit("org--a-old")
    assert code == 0 and old_a in {u["revision"] for u in plan["delete"]}
    with open(os.path.join(repos["org--a"], "refs", "main"), "w") as f:
        f.write(old_a)  # main moved back onto the planned revision (a rollback by its owner)
    code, done = cli("apply", saved, "--yes", "--json")
    assert code == 0, done
    status = {u["revision"]: u for u in done["delete"]}
    assert status[old_a]["status"] == "skipped" and "refs changed" in status[old_a]["error"]
    assert status[commit("org--b-old")]["status"] == "deleted"
    with open(os.path.join(repos["org--a"], "refs", "main")) as f:
        assert f.read() == old_a
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf_hub_download("org/a", "w.bin", cache_dir=root, local_files_only=True)
    del before


def test_two_stale_plans_never_remove_a_models_last_revision(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    inventory, plan = _plan(root, keep=1)
    assert plan.delete and all(not u.item_removed for u in plan.delete)
    # A second plan made from the same scan by another policy: it keeps the old revisions instead.
    newest = [u for u in plan.keep if u.what == "revision"]
    other = replace(plan, delete=tuple(replace(u, item_removed=False) for u in newest), keep=())
    first = run_plan(plan, log=str(tmp_path / "a.log"))
    assert {r.status for r in first.results} == {"deleted"}
    second = run_plan(other, inventory, log=str(tmp_path / "b.log"))
    assert {r.status for r in second.results} == {"skipped"}, second.results
    assert all("last revision" in (r.error or "") for r in second.results)
    cache = rescan(plan).caches[0]
    assert sorted(len(i.revisions) for i in cache.items) == [1, 1]


# ---------------------------------------------------------------------------------------------
# The hub's download race: a blob a new revision links while the prune removes the old one


def test_a_blob_linked_by_a_download_after_it_was_set_aside_goes_back(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    repo_dir = repos["org--a"]
    inventory, plan = _plan(root, max_age=30 * DAY)
    late = commit("late")
    set_aside = hub_delete.set_aside
    calls = []

    def link_then_check(tree, repo_, *args):
        aside = set_aside(tree, repo_, *args)
        # What hf_hub_download does when it found the blob before the prune set it aside: it
        # takes the blob's lock after us, then links the (now missing) blob without looking.
        if repo_ == repo_dir and aside and not calls:
            calls.append(1)
            os.makedirs(os.path.join(repo_dir, "snapshots", late))
            os.symlink("../../blobs/org--a-e1", os.path.join(repo_dir, "snapshots", late, "w.bin"))
            with open(os.path.join(repo_dir, "refs", "late"), "w") as f:
                f.write(late)
        return aside

    monkeypatch.setattr(hub_delete, "set_aside", link_then_check)
    result = execute_plan(plan, inventory)
    assert calls, "the blobs were set aside"
    unit = next(r for r in result.results if r.unit.id == "org/a")
    assert unit.status == "deleted"
    with open(os.path.join(repo_dir, "snapshots", late, "w.bin"), "rb") as f:
        assert len(f.read()) == 1000  # the link heals: the blob went back under its name
    assert unit.freed_bytes == 0  # nothing of its accounting left the disk


def test_a_blob_a_revision_newer_than_the_plan_links_goes_back_at_once(tmp_path, monkeypatch):
    # The plan is stale: since it was made, a new revision arrived that links a blob the plan
    # counted as the old revision's alone. The snapshots differ from the plan's, so the links
    # are read as soon as the blobs are set aside: the blob is back before the settling time,
    # not missing for it.
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    repo_dir = repos["org--a"]
    inventory, plan = _plan(root, max_age=30 * DAY)
    late = commit("late")
    os.makedirs(os.path.join(repo_dir, "snapshots", late))
    os.symlink("../../blobs/org--a-e1", os.path.join(repo_dir, "snapshots", late, "w.bin"))
    finish = hub_delete.finish_blobs
    seen = []

    def look_then_finish(tree, repo_, aside, *args):
        if repo_ == repo_dir:
            seen.append(os.path.exists(os.path.join(repo_dir, "blobs", "org--a-e1")))
        return finish(tree, repo_, aside, *args)

    monkeypatch.setattr(hub_delete, "finish_blobs", look_then_finish)
    result = execute_plan(plan, inventory)
    assert seen == [True], "the linked blob was back before the settling time was over"
    unit = next(r for r in result.results if r.unit.id == "org/a")
    assert unit.status == "deleted" and unit.freed_bytes == 0
    with open(os.path.join(repo_dir, "snapshots", late, "w.bin"), "rb") as f:
        assert len(f.read()) == 1000


def test_a_real_download_racing_real_prunes_never_ends_with_a_dangling_link(tmp_path):
    with FakeHub() as hub:
        for round_ in range(6):
            root = str(tmp_path / f"hub{round_}")
            shared = payload(200_000, round_)
            hub.push(f"org/m{round_}", {"w.bin": shared, "config.json": b'{"v": 1}'})
            get(hub, root, f"org/m{round_}", "w.bin")
            get(hub, root, f"org/m{round_}", "config.json")
            age_everything(root, 60)
            # The plan: the model's only revision goes (a stale plan, as a cron job's saved one is).
            saved = str(tmp_path / f"plan{round_}.json")
            code, plan = cli(
                "prune", "--cache-dir", root, "--max-age", "30d", "--allow-remove-all", "--plan-out", saved, "--dry-run", "--json"
            )
            assert code == 0 and len(plan["delete"]) == 1, plan
            c2 = hub.push(f"org/m{round_}", {"w.bin": shared, "config.json": b'{"v": 2}'})  # reuses the blob
            got: dict[str, str] = {}
            start = threading.Event()

            def download(round_=round_, c2=c2, got=got, start=start, root=root):
                start.wait()
                time.sleep(0.01 * round_)
                got["path"] = get(hub, root, f"org/m{round_}", "w.bin", revision=c2)

            thread = threading.Thread(target=download)
            thread.start()
            start.set()
            code, done = cli("apply", saved, "--yes", "--json")
            thread.join(60)
            assert code in (0, 1), done
            with open(got["path"], "rb") as f:
                assert f.read() == shared, f"round {round_}: the download's file is broken"


# ---------------------------------------------------------------------------------------------
# 7. The audit log is a durable record; 12. freed bytes in the plan's accounting


def test_a_full_disk_under_the_log_stops_before_the_next_unit_with_exit_1(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    before = contents(root)
    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json", "--log", "/dev/full")
    assert code == 1, done
    assert {u["status"] for u in done["delete"]} == {"skipped"}
    assert all("audit log" in u["error"] for u in done["delete"])
    after = {k: v for k, v in contents(root).items() if not k.startswith(".locks/")}  # the prune lock was taken
    assert after == before  # the first "started" line failed: nothing was touched


def test_a_log_that_is_a_symlink_is_refused(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    target = write(str(tmp_path / "elsewhere.txt"), b"keep me")
    os.symlink(target, str(tmp_path / "log.jsonl"))
    code, out = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--log", str(tmp_path / "log.jsonl"))
    assert code == 2, out
    with open(target, "rb") as f:
        assert f.read() == b"keep me"


def test_freed_bytes_equal_the_plans_accounting_when_all_went_well(tmp_path):
    root = str(tmp_path / "hub")
    small_cache(root)
    code, done = cli("prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--json")
    assert code == 0 and done["delete"]
    for unit in done["delete"]:
        assert unit["status"] == "deleted" and unit["freed_bytes"] == unit["reclaim_bytes"], unit
    assert done["freed_bytes"] == done["reclaim_bytes"]


@ROOT_ONLY
def test_the_log_filling_up_mid_run_stops_before_the_next_unit(tmp_path):
    root = str(tmp_path / "hub")
    policy = many_repos(root, 6)  # 21 units: 42 log lines of about 600 bytes
    logs = tmp_path / "logfs"
    logs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(logs)], check=True)
    log = str(logs / "audit.log")
    try:
        code, done = cli("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--log", log)
        records = list(read_log(log))
    finally:
        subprocess.run(["umount", "-l", str(logs)], check=False)
    assert code == 1, done
    status = {u["path"]: u for u in done["delete"]}
    deleted = {p for p, u in status.items() if u["status"] == "deleted"}
    stopped = {p for p, u in status.items() if u["status"] == "skipped" and "audit log" in (u["error"] or "")}
    assert deleted and stopped and deleted | stopped == set(status), status
    # Every unit that went has its durable "started" line; every unit not attempted is whole.
    assert deleted <= {r["path"] for r in records if r["status"] == "started"}
    left = {r.path for i in hfcache.scan([root]).caches[0].items for r in i.revisions}
    assert stopped <= left and not (deleted & left)


def test_random_kills_of_a_real_prune_never_change_what_is_kept(tmp_path, monkeypatch):
    """The fault loop: a slowed real prune killed at random moments, each followed by an ordinary run."""
    rng = random.Random(15)
    root = str(tmp_path / "hub")
    for n in range(6):  # six tagged models whose version order is not their time order
        tagged_cache(os.path.join(str(tmp_path), f"m{n}"))
        shutil.move(os.path.join(str(tmp_path), f"m{n}", "models--org--tagged"), os.path.join(root, f"models--org--t{n}"))
    before = scan_cache_dir(root)
    code, plan = cli("prune", "--cache-dir", root, "--keep", "2", "--dry-run", "--json")
    planned = {(u["id"], u["revision"]) for u in plan["delete"]}
    assert code == 0 and len(planned) == 6
    log = str(tmp_path / "audit.log")
    args = ("prune", "--cache-dir", root, "--keep", "2", "--yes", "--json", "--log", log)
    for n in range(6):
        lines = len(open(log).readlines()) if os.path.exists(log) else 0
        proc = slow_cli(0.02, *args)
        # Killed once the run has written one or two more lines, then at a random moment after.
        deadline = time.time() + 60
        while (len(open(log).readlines()) if os.path.exists(log) else 0) < lines + rng.choice((1, 2)):
            assert proc.poll() is None or n > 0, proc.communicate()
            if proc.poll() is not None or time.time() > deadline:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.15))
        proc.kill()
        proc.communicate()
        # After every kill: a cache the hub reads without a warning, and the same plan as before.
        assert scan_cache_dir(root).warnings == []
        code, again = cli("prune", "--cache-dir", root, "--keep", "2", "--dry-run", "--json")
        left = {(i.id, r.revision) for i in hfcache.scan([root]).caches[0].items for r in i.revisions}
        assert {(u["id"], u["revision"]) for u in again["delete"]} == planned & left
    code, done = cli(*args)
    assert code == 0, done
    left = {(i.id, r.revision) for i in hfcache.scan([root]).caches[0].items for r in i.revisions}
    assert left == {(c.repo_id, r.commit_hash) for c in before.repos for r in c.revisions} - planned
    for cached in before.repos:  # two revisions stay per model
        assert sum((cached.repo_id, r.commit_hash) not in planned for r in cached.revisions) == 2
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for cached in before.repos:  # and loads offline, by commit and by every tag
        for r in cached.revisions:
            if (cached.repo_id, r.commit_hash) not in planned:
                for rev in (r.commit_hash, *r.refs):
                    assert hf_hub_download(cached.repo_id, "w.bin", revision=rev, cache_dir=root, local_files_only=True)
    gone = {(r["id"], r["revision"]) for r in (json.loads(x) for x in open(log)) if r["status"] in ("started", "deleted")}
    assert planned <= gone  # every removed revision is in the audit log
    records = [json.loads(x) for x in open(log)]
    cut = {(r["run"], r["path"]) for r in records if r["status"] == "started"}
    cut -= {(r["run"], r["path"]) for r in records if r["status"] != "started"}
    assert len(cut) >= 3, "most kills landed inside a unit, between its first step and its outcome"


def test_with_the_locks_folder_a_symlink_no_revision_goes_and_each_says_why(tmp_path):
    # hfcache's trash lives in .locks/ (README, limits): never reached through a link, even one
    # pointing at a folder of the same cache's owner; the revisions stay, whole, loadable.
    root = str(tmp_path / "hub")
    small_cache(root)
    elsewhere = str(tmp_path / "elsewhere-locks")
    if os.path.isdir(os.path.join(root, ".locks")):
        shutil.move(os.path.join(root, ".locks"), elsewhere)
    else:
        os.makedirs(elsewhere)
    os.symlink(elsewhere, os.path.join(root, ".locks"))
    before = contents(root)
    inventory, plan = _plan(root, max_age=30 * DAY)
    assert plan.delete
    result = execute_plan(plan, inventory)
    assert {r.status for r in result.results} == {"failed"}
    assert all(".locks" in (r.error or "") and "symlink" in (r.error or "") and r.freed_bytes == 0 for r in result.results)
    assert contents(root) == before
    assert "hfcache-trash" not in os.listdir(elsewhere)  # nothing made through the link
