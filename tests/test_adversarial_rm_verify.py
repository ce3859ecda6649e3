"""Adversarial tests of file units (``rm hf://org/name/path``), ``verify --repair`` and the llama.cpp flat kind.

Each test asserts the SAFE behaviour: a deletion removes exactly what its plan says and
nothing else, the cache stays loadable, freed bytes are what left the disk, and every error
is one line with a documented exit code. Caches are built by hand (tests/trees.py) where the
layout is the point, by huggingface_hub against the loopback hub where the client matters.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest

import hfcache
from hfcache.caches.registry import KINDS
from hfcache.execute.run import execute_plan
from hfcache.plan.removal import parse_target, removal_plan
from tests.support import contents, live_hook, run_cli
from tests.trees import commit, link, repo, sha256, write

C1, C2, C3 = commit("adv-1"), commit("adv-2"), commit("adv-3")
W, CFG, OTHER = sha256("w"), sha256("cfg"), sha256("other")


def _plan(root: str, *targets: str):
    inventory = hfcache.scan([root])
    return inventory, removal_plan(inventory, [parse_target(t, kinds=KINDS.values()) for t in targets], now=time.time())


def _two_revisions(root: str) -> str:
    """org/m: C1 and C2 both hold sub/w.bin -> blob W (shared) and config.json -> CFG; main -> C2."""
    return repo(
        root,
        "models--org--m",
        snapshots={
            C1: {"sub/w.bin": W, "config.json": CFG},
            C2: {"sub/w.bin": W, "config.json": CFG},
        },
        blobs={W: 5000, CFG: 10},
        refs={"main": C2},
    )


def _resolves(path: str) -> bool:
    return os.path.exists(path)  # (follows the link)


def _apply(tmp_path, doc) -> object:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    return run_cli("apply", str(path), "--yes", "--json")


def _one_line(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3, result.stderr


# ---------------------------------------------------------------------------------------------
# 1. Another revision's links behind a mount point: never read, so never counted as links


def test_a_mount_on_another_revisions_subfolder_during_the_run_keeps_the_blob_it_links(tmp_path, mounts):
    """C2/sub is bind-mounted (on itself) after the plan: its link to W is a link all the same."""
    root = str(tmp_path / "hub")
    repo_dir = _two_revisions(root)
    inventory, plan = _plan(root, f"hf://org/m@{C1}/sub/w.bin")
    [unit] = plan.delete
    assert unit.reclaim_bytes == 0  # C2 still links W
    sub2 = os.path.join(repo_dir, "snapshots", C2, "sub")
    result = execute_plan(plan, inventory, live=live_hook(lambda: mounts.bind(sub2, sub2))([]))
    assert _resolves(os.path.join(sub2, "w.bin")), "blob W deleted while C2 (behind a mount point) still links it"
    assert os.path.exists(os.path.join(repo_dir, "blobs", W))
    assert sum(r.freed_bytes for r in result.results) == 0


def test_a_mount_on_another_revisions_subfolder_before_the_plan_keeps_the_blob_it_links(tmp_path, mounts):
    """The same with the mount there all along (the scan reads through it): rm must not free W."""
    root = str(tmp_path / "hub")
    repo_dir = _two_revisions(root)
    sub2 = os.path.join(repo_dir, "snapshots", C2, "sub")
    mounts.bind(sub2, sub2)
    result = run_cli("rm", f"hf://org/m@{C1}/sub/w.bin", "--cache-dir", root, "--yes", "--json")
    _one_line(result)
    assert _resolves(os.path.join(sub2, "w.bin")), result.output
    assert os.path.exists(os.path.join(repo_dir, "blobs", W))


def test_a_forged_plan_naming_the_mount_point_as_a_file_does_not_unlock_a_damaged_model(tmp_path, mounts):
    """The mount point is the model's damage; a file unit naming it must not make the rest of the model deletable."""
    root = str(tmp_path / "hub")
    repo_dir = _two_revisions(root)
    doc = json.loads(run_cli("rm", f"hf://org/m@{C1}/sub/w.bin", "--cache-dir", root, "--dry-run", "--json").stdout)
    [unit] = doc["delete"]
    sub2 = os.path.join(repo_dir, "snapshots", C2, "sub")
    forged = dict(unit, revision=C2, path=sub2, file="sub", reclaim_bytes=0)
    mounts.bind(sub2, sub2)
    result = _apply(tmp_path, dict(doc, delete=[unit, forged]))
    _one_line(result)
    assert result.exit_code in (1, 4), result.output
    assert _resolves(os.path.join(sub2, "w.bin")), result.output


# ---------------------------------------------------------------------------------------------
# 2. The shared store: a file whose blob is a link to a payload


def test_a_file_whose_blob_is_a_shared_store_link_frees_what_the_plan_said_and_leaks_no_payload(tmp_path):
    from tests.trees import share, shared_store

    root = str(tmp_path / "hub")
    shared_store(root)
    x = sha256("payload-x")
    repo_dir = repo(
        root,
        "models--org--a",
        snapshots={C1: {"w.bin": "ea", "cfg": "ca"}, C2: {"cfg": "ca"}},
        blobs={"ea": 0, "ca": 5},
        refs={"main": C2},
    )
    share(root, repo_dir, "ea", x, 4000)
    payload = os.path.join(root, "blobs", x[:2], x)
    result = run_cli("rm", "hf://org/a/w.bin", "--cache-dir", root, "--yes", "--json")
    _one_line(result)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    [unit] = doc["delete"]
    gone = 0 if os.path.exists(payload) else 4000
    assert unit["freed_bytes"] == gone, "freed_bytes is not what left the disk"
    inv = hfcache.scan([root])
    leaked = [p.path for p in inv.caches[0].unreferenced_payloads]
    assert (unit["reclaim_bytes"], unit["freed_bytes"], leaked) == (4000, 4000, []), "planned 4000, payload left unreferenced"


# ---------------------------------------------------------------------------------------------
# 3. Hand-edited plan files (hfcache apply)


@pytest.fixture
def hand(tmp_path):
    root = str(tmp_path / "hub")
    repo_dir = _two_revisions(root)
    other = repo(root, "models--org--other", snapshots={C3: {"x.bin": OTHER}}, blobs={OTHER: 300}, refs={"main": C3})
    doc = json.loads(run_cli("rm", f"hf://org/m@{C1}/config.json", "--cache-dir", root, "--dry-run", "--json").stdout)
    return root, repo_dir, other, doc


def _forged(doc, **edit):
    [unit] = doc["delete"]
    return dict(doc, delete=[dict(unit, **edit)])


@pytest.mark.parametrize(
    "edit",
    [
        "other-repo",
        "ref",
        "blob",
        "absolute",
        "dot",
        "empty-part",
        "folder",
        "torch-kind",
        "revision-not-named",
        "through-symlink",
        "path-to-other-file",
    ],
)
def test_a_forged_file_unit_removes_nothing_it_should_not(hand, tmp_path, edit):
    root, repo_dir, other, doc = hand
    [unit] = doc["delete"]
    snap1 = os.path.join(repo_dir, "snapshots", C1)
    if edit == "through-symlink":
        link(os.path.join(snap1, "lnk"), "../" + C2 + "/sub")  # a folder link inside the snapshot (scan damage)
    before = contents(root)
    links_before = {p: os.readlink(p) for p in _links(root)}
    edits = {
        "other-repo": dict(path=os.path.join(other, "snapshots", C3, "x.bin"), file="x.bin"),
        "ref": dict(path=os.path.join(repo_dir, "refs", "main"), file="../../refs/main"),
        "blob": dict(path=os.path.join(repo_dir, "blobs", CFG), file="config.json"),
        "absolute": dict(path=os.path.join(snap1, "config.json"), file="/etc/passwd"),
        "dot": dict(path=os.path.join(snap1, ".", "config.json"), file="./config.json"),
        "empty-part": dict(path=os.path.join(snap1, "sub", "w.bin"), file="sub//w.bin"),
        "folder": dict(path=os.path.join(snap1, "sub"), file="sub"),
        "torch-kind": dict(kind="torch"),
        "revision-not-named": dict(path=os.path.join(repo_dir, "snapshots", C2, "config.json"), revision=C1),
        "through-symlink": dict(path=os.path.join(snap1, "lnk", "w.bin"), file="lnk/w.bin"),
        "path-to-other-file": dict(path=os.path.join(snap1, "sub", "w.bin")),
    }[edit]
    result = _apply(tmp_path, _forged(doc, **edits))
    _one_line(result)
    assert result.exit_code in (0, 1, 2, 4), result.output
    after = contents(root)
    after.pop(".locks/hfcache-prune.lock", None)
    links_after = {p: os.readlink(p) for p in _links(root)}
    if edit == "empty-part" and result.exit_code == 0:
        # (sub//w.bin is sub/w.bin: the plan named that file of C1)
        assert set(links_before) - set(links_after) == {os.path.join(snap1, "sub", "w.bin")}
        return
    assert after == before and links_after == links_before, result.output
    if result.exit_code == 0:  # (apply: a unit skipped by its checks is no error; it must say why)
        assert {u["status"] for u in json.loads(result.stdout)["delete"]} == {"skipped"}


def _links(root: str) -> list[str]:
    return [os.path.join(d, n) for d, ds, ns in os.walk(root) for n in (*ns, *ds) if os.path.islink(os.path.join(d, n))]


def test_a_forged_plan_naming_one_file_twice_through_two_spellings_is_refused_or_counted_once(hand, tmp_path):
    root, repo_dir, _, doc = hand
    [unit] = doc["delete"]
    twin = dict(unit, path=unit["path"].replace("/snapshots/", "/snapshots//"))
    result = _apply(tmp_path, dict(doc, delete=[unit, twin]))
    _one_line(result)
    assert result.exit_code in (2, 4), result.output


# ---------------------------------------------------------------------------------------------
# 4. Races on the entry and the blob during the run


@pytest.mark.parametrize("swap", ["copy", "link-outside", "folder", "link-other-repo"])
def test_an_entry_swapped_during_the_run_never_takes_anything_outside_the_plan(tmp_path, swap):
    root = str(tmp_path / "hub")
    repo_dir = _two_revisions(root)
    other = repo(root, "models--org--other", snapshots={C3: {"x.bin": OTHER}}, blobs={OTHER: 300}, refs={"main": C3})
    outside = write(str(tmp_path / "outside" / "precious.bin"), b"P" * 700)
    inventory, plan = _plan(root, f"hf://org/m@{C1}/sub/w.bin")
    entry = os.path.join(repo_dir, "snapshots", C1, "sub", "w.bin")

    def act():
        os.unlink(entry)
        if swap == "copy":
            write(entry, b"C" * 5000)
        elif swap == "link-outside":
            os.symlink(outside, entry)
        elif swap == "folder":
            write(os.path.join(entry, "inner.bin"), b"I" * 10)
        else:
            os.symlink(os.path.relpath(os.path.join(other, "blobs", OTHER), os.path.dirname(entry)), entry)

    result = execute_plan(plan, inventory, live=live_hook(act)([]))
    [done] = result.results
    assert open(outside, "rb").read() == b"P" * 700
    assert os.path.getsize(os.path.join(other, "blobs", OTHER)) == 300
    assert os.path.exists(os.path.join(repo_dir, "blobs", W)) and _resolves(
        os.path.join(repo_dir, "snapshots", C2, "sub", "w.bin")
    )
    if swap == "folder":
        assert done.status != "deleted" and os.path.exists(os.path.join(entry, "inner.bin"))
    if swap == "copy":
        assert done.freed_bytes in (0, 5000)  # (the copy is the file the plan named; what it frees is its own)
    else:
        assert done.freed_bytes == 0


def test_a_blob_hard_linked_elsewhere_frees_nothing_and_the_other_link_keeps_its_bytes(tmp_path):
    root = str(tmp_path / "hub")
    repo_dir = repo(root, "models--org--m", snapshots={C1: {"w.bin": W, "c": CFG}, C2: {"c": CFG}}, blobs={W: 5000, CFG: 10})
    write(os.path.join(repo_dir, "refs", "main"), C2.encode())
    elsewhere = str(tmp_path / "mine.bin")
    inventory, plan = _plan(root, "hf://org/m/w.bin")
    [unit] = plan.delete
    result = execute_plan(plan, inventory, live=live_hook(lambda: os.link(os.path.join(repo_dir, "blobs", W), elsewhere))([]))
    [done] = result.results
    assert os.path.getsize(elsewhere) == 5000
    assert done.freed_bytes == 0, "bytes another hard link still holds were reported freed"


def test_blobs_swapped_for_a_symlink_during_the_run_deletes_nothing_through_it(tmp_path):
    root = str(tmp_path / "hub")
    repo_dir = repo(root, "models--org--m", snapshots={C1: {"w.bin": W, "c": CFG}, C2: {"c": CFG}}, blobs={W: 5000, CFG: 10})
    write(os.path.join(repo_dir, "refs", "main"), C2.encode())
    real = str(tmp_path / "real-blobs")
    inventory, plan = _plan(root, "hf://org/m/w.bin")

    def swap():
        shutil.move(os.path.join(repo_dir, "blobs"), real)
        os.symlink(real, os.path.join(repo_dir, "blobs"))

    result = execute_plan(plan, inventory, live=live_hook(swap)([]))
    [done] = result.results
    # (A descriptor of blobs/ held from before the swap still names the same folder, as rm -rf's do:
    # the planned blob W may go from it, and nothing else; its bytes are counted only if they went.)
    assert os.path.getsize(os.path.join(real, CFG)) == 10 and _resolves(os.path.join(repo_dir, "snapshots", C2, "c"))
    assert done.freed_bytes == (0 if os.path.exists(os.path.join(real, W)) else 5000)


def test_a_snapshots_folder_swapped_for_a_symlink_after_the_first_file_never_frees_a_blob_still_linked(tmp_path):
    """Two file units of one model; after the first, snapshots/ becomes a symlink to itself moved: the links are still there."""
    root = str(tmp_path / "hub")
    repo_dir = repo(
        root,
        "models--org--m",
        snapshots={C1: {"a.bin": W, "b.bin": CFG}, C2: {"a.bin": W, "b.bin": CFG}},
        blobs={W: 5000, CFG: 10},
        refs={"main": C2},
    )
    inventory, plan = _plan(root, f"hf://org/m@{C1}/a.bin", f"hf://org/m@{C1}/b.bin")
    assert len(plan.delete) == 2
    moved = os.path.join(repo_dir, "snapshots.real")
    import hfcache.caches.huggingface.files as files_mod

    real_remove = files_mod.remove_entry
    calls = []

    def remove_then_swap(tree, item, unit, rev):
        out = real_remove(tree, item, unit, rev)
        if not calls:
            calls.append(1)
            os.rename(os.path.join(repo_dir, "snapshots"), moved)
            os.symlink("snapshots.real", os.path.join(repo_dir, "snapshots"))  # same place, links resolve the same
        return out

    import hfcache.caches.huggingface.delete as delete_mod

    orig = delete_mod.remove_entry
    delete_mod.remove_entry = remove_then_swap
    try:
        execute_plan(plan, inventory, live=live_hook(lambda: None)([]))
    finally:
        delete_mod.remove_entry = orig
    for name in ("a.bin", "b.bin"):
        assert _resolves(os.path.join(moved, C2, name)), f"C2's {name} dangles: its blob went"


# ---------------------------------------------------------------------------------------------
# 5. Names


@pytest.mark.parametrize("name", ["file@1.txt", "with space.bin", "ünï cødé.bin", "a%2Fb.bin", "UPPER.bin"])
def test_odd_file_names_name_exactly_that_file(tmp_path, name):
    root = str(tmp_path / "hub")
    repo_dir = repo(
        root,
        "models--org--m",
        snapshots={C1: {name: W, "upper.bin": OTHER, "a/b.bin": OTHER, "c": CFG}},
        blobs={W: 5000, CFG: 10, OTHER: 20},
        refs={"main": C1},
    )
    snap = os.path.join(repo_dir, "snapshots", C1)
    result = run_cli("rm", f"hf://org/m/{name}", "--cache-dir", root, "--yes", "--json")
    _one_line(result)
    assert result.exit_code == 0, result.output
    assert sorted(u["file"] for u in json.loads(result.stdout)["delete"]) == [name]
    assert not os.path.lexists(os.path.join(snap, name))
    for kept in {"upper.bin", "a/b.bin", "c"} - {name}:
        assert _resolves(os.path.join(snap, kept)), kept


def test_a_file_in_some_revisions_only_goes_from_those_and_a_blob_two_files_share_goes_once(tmp_path):
    root = str(tmp_path / "hub")
    repo_dir = repo(
        root,
        "models--org--m",
        snapshots={C1: {"d/x.bin": W, "d/y.bin": W, "c": CFG}, C2: {"c": CFG}, C3: {"d/x.bin": W, "c": CFG}},
        blobs={W: 5000, CFG: 10},
        refs={"main": C2},
    )
    result = run_cli("rm", "hf://org/m/d", "--cache-dir", root, "--yes", "--json")
    _one_line(result)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["delete"]) == 3 and doc["reclaim_bytes"] == doc["freed_bytes"] == 5000
    assert not os.path.exists(os.path.join(repo_dir, "blobs", W))
    assert not os.path.exists(os.path.join(repo_dir, "snapshots", C1, "d"))  # emptied: gone
    assert sorted(os.listdir(os.path.join(repo_dir, "snapshots"))) == sorted([C1, C2, C3])


# ---------------------------------------------------------------------------------------------
# 6. verify --repair


def _hub_with_corrupt_blob(root: str, good: bytes, bad: bytes, *, revisions=(C1,)) -> tuple[str, str]:
    """org/m whose w.bin blob is named by sha256(good) but holds ``bad``; another file is fine. Returns (repo, blob)."""
    name = hashlib.sha256(good).hexdigest()
    fine = b"fine config"
    fine_name = hashlib.sha256(fine).hexdigest()
    repo_dir = repo(
        root,
        "models--org--m",
        snapshots={r: {"w.bin": name, "config.json": fine_name} for r in revisions},
        blobs={},
        refs={"main": revisions[-1]},
    )
    blob = write(os.path.join(repo_dir, "blobs", name), bad)
    write(os.path.join(repo_dir, "blobs", fine_name), fine)
    old = time.time() - 3 * 86400
    for path in (blob, os.path.join(repo_dir, "blobs", fine_name)):
        os.utime(path, (old, old))
    return repo_dir, blob


def _repair(tmp_path, *roots: str, extra=()):
    args = [a for r in roots for a in ("--cache-dir", r)]
    return run_cli(
        "verify", *args, "--state", str(tmp_path / "s.db"), "--repair", "--yes", "--json",
        "--log", str(tmp_path / "logs" / "audit.log"), *extra,
    )  # fmt: skip


def test_a_good_blob_put_back_before_the_repair_runs_is_not_deleted(tmp_path, monkeypatch):
    """The corrupt blob is replaced by a good copy (cp -p from a backup: old times kept) between verify and repair."""
    import hfcache.verify.repair as repair_mod

    root = str(tmp_path / "hub")
    good, bad = b"G" * 4096, b"B" * 4096
    repo_dir, blob = _hub_with_corrupt_blob(root, good, bad)
    st = os.stat(blob)
    original = repair_mod.quarantine

    def restore_then_quarantine(checks, folder, **kw):
        tmp = write(blob + ".restore", good)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # cp -p keeps the backup's times
        os.replace(tmp, blob)
        return original(checks, folder, **kw)

    monkeypatch.setattr(repair_mod, "quarantine", restore_then_quarantine)
    result = _repair(tmp_path, root)
    _one_line(result)
    entry = os.path.join(repo_dir, "snapshots", C1, "w.bin")
    assert os.path.exists(entry) and open(entry, "rb").read() == good, (
        "a good blob (not the content verify found corrupt) was deleted: " + result.output[-600:]
    )


def test_a_good_blob_downloaded_before_the_repair_runs_is_not_deleted(tmp_path, monkeypatch):
    """The same with a fresh download (new inode, times of now), in the same second as the verify's scan."""
    import hfcache.verify.repair as repair_mod

    root = str(tmp_path / "hub")
    good, bad = b"G" * 4096, b"B" * 4096
    repo_dir, blob = _hub_with_corrupt_blob(root, good, bad)
    now = time.time()
    os.utime(blob, (now, now))  # downloaded (corrupt) a moment ago
    original = repair_mod.quarantine

    def download_then_quarantine(checks, folder, **kw):
        tmp = write(blob + ".incomplete", good)
        os.replace(tmp, blob)
        return original(checks, folder, **kw)

    monkeypatch.setattr(repair_mod, "quarantine", download_then_quarantine)
    result = _repair(tmp_path, root)
    _one_line(result)
    entry = os.path.join(repo_dir, "snapshots", C1, "w.bin")
    assert os.path.exists(entry) and open(entry, "rb").read() == good, result.output[-600:]


def test_two_caches_with_the_same_corrupt_blob_name_each_keep_their_own_content_in_quarantine(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    good = b"G" * 2048
    _, blob_a = _hub_with_corrupt_blob(a, good, b"A" * 2048)
    _, blob_b = _hub_with_corrupt_blob(b, good, b"Z" * 2048)
    result = _repair(tmp_path, a, b)
    _one_line(result)
    kept = sorted(
        open(os.path.join(d, n), "rb").read(1) for d, _, names in os.walk(tmp_path / "logs" / "quarantine") for n in names
    )
    assert kept == [b"A", b"Z"], f"quarantine kept {kept}: one cache's corrupt content was overwritten by the other's"


def test_two_caches_quarantine_collision_never_writes_into_a_cache_file(tmp_path, monkeypatch):
    """The second content is copied over the first's hard link: if the first cache's unit then stays, its blob was rewritten."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    good = b"G" * 2048
    _, blob_a = _hub_with_corrupt_blob(a, good, b"A" * 2048)
    _, blob_b = _hub_with_corrupt_blob(b, good, b"Z" * 2048)
    ino_a = os.stat(blob_a).st_ino
    from hfcache.verify.repair import quarantine
    from hfcache.verify.run import verify as run_verify

    inventory = hfcache.scan([a, b])
    report = run_verify(inventory, kinds=KINDS)
    from hfcache.verify.repair import damaged

    quarantine(damaged(report), str(tmp_path / "q"))
    assert os.stat(blob_a).st_ino == ino_a
    assert open(blob_a, "rb").read() == b"A" * 2048, "quarantine wrote cache b's bytes into cache a's blob"


@pytest.mark.parametrize("where", ["inside", "symlink-into"])
def test_a_quarantine_in_a_cache_is_refused_and_nothing_is_repaired(tmp_path, where):
    root = str(tmp_path / "hub")
    _hub_with_corrupt_blob(root, b"G" * 100, b"B" * 100)
    if where == "inside":
        log = os.path.join(root, "logs", "audit.log")
    else:
        os.makedirs(os.path.join(root, "x"))
        os.symlink(os.path.join(root, "x"), str(tmp_path / "lnk"))
        log = str(tmp_path / "lnk" / "audit.log")
    before = contents(root)
    result = run_cli("verify", "--cache-dir", root, "--state", str(tmp_path / "s.db"), "--repair", "--yes", "--log", log)
    _one_line(result)
    assert result.exit_code == 2, result.output
    after = contents(root)
    after.pop(".locks/hfcache-prune.lock", None)
    assert after == before


def test_a_quarantine_on_another_file_system_is_a_copy_and_the_repair_goes_on(tmp_path, mounts):
    root = str(tmp_path / "hub")
    repo_dir, blob = _hub_with_corrupt_blob(root, b"G" * 3000, b"B" * 3000)
    mounts.mount("-t", "tmpfs", "tmpfs", str(tmp_path / "logs"))
    result = _repair(tmp_path, root)
    _one_line(result)
    assert result.exit_code == 0, result.output
    [kept] = [os.path.join(d, n) for d, _, ns in os.walk(tmp_path / "logs" / "quarantine") for n in ns]
    assert open(kept, "rb").read() == b"B" * 3000
    assert not os.path.exists(blob)
    assert _resolves(os.path.join(repo_dir, "snapshots", C1, "config.json"))


def test_a_repair_of_one_revision_keeps_the_blob_another_revision_still_links(tmp_path):
    root = str(tmp_path / "hub")
    repo_dir, blob = _hub_with_corrupt_blob(root, b"G" * 3000, b"B" * 3000, revisions=(C1, C2))
    result = _repair(tmp_path, root, extra=("--revision", C1))
    _one_line(result)
    assert os.path.exists(os.path.join(repo_dir, "snapshots", C2, "w.bin"))  # C2 was not named: its link resolves
    assert not os.path.lexists(os.path.join(repo_dir, "snapshots", C1, "w.bin"))
    doc = json.loads(result.stdout)
    assert doc["freed_bytes"] == 0


def test_a_quarantine_that_fills_up_repairs_nothing_in_one_line(tmp_path, mounts):
    root = str(tmp_path / "hub")
    _hub_with_corrupt_blob(root, b"G" * 200_000, b"B" * 200_000)
    mounts.mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tmp_path / "logs"))
    before = contents(root)
    result = _repair(tmp_path, root)
    _one_line(result)
    assert result.exit_code == 9, result.output
    after = contents(root)
    after.pop(".locks/hfcache-prune.lock", None)
    assert after == before


# ---------------------------------------------------------------------------------------------
# 7. llama.cpp's flat cache


def _manifest(root: str, model: str, tag: str, *files: str) -> str:
    doc: dict[str, object] = {"ggufFile": {"rfilename": files[0]}}
    if len(files) > 1:
        doc["mmprojFile"] = {"rfilename": files[1]}
    return write(os.path.join(root, f"manifest={model.replace('/', '=')}={tag}.json"), json.dumps(doc).encode())


def _flat(root: str, model: str, rfilename: str, size: int) -> str:
    path = write(os.path.join(root, f"{model}_{rfilename}".replace("/", "_")), b"G" * size)
    write(path + ".etag", b'"e"')
    return path


LLAMA = "llama-cpp-flat"


def test_two_models_whose_names_map_to_one_cached_file_keep_it_until_both_go(tmp_path):
    """org/A's B_c.gguf and org/A_B's c.gguf are both cached as org_A_B_c.gguf (llama.cpp's "/" made "_")."""
    root = str(tmp_path / "llama.cpp")
    shared = _flat(root, "org/A", "B_c.gguf", 1000)
    assert shared == os.path.join(root, "org_A_B_c.gguf")
    _manifest(root, "org/A", "latest", "B_c.gguf")
    _manifest(root, "org/A_B", "latest", "c.gguf")
    _flat(root, "org/Z", "z.gguf", 10)
    _manifest(root, "org/Z", "latest", "z.gguf")
    [cache] = hfcache.scan([root], kinds=[LLAMA]).caches
    on_disk = sum(os.path.getsize(os.path.join(root, n)) for n in os.listdir(root))
    result = run_cli("rm", "org/A_B", "--cache-dir", root, "--kind", LLAMA, "--yes", "--json")
    _one_line(result)
    assert os.path.exists(shared), "org/A's manifest still names the file; removing org/A_B deleted it"
    assert cache.size_bytes == on_disk, "the file two models name is counted twice in the cache's total"


def test_a_manifest_naming_traversal_or_another_models_file_reaches_nothing_outside_its_own(tmp_path):
    root = str(tmp_path / "llama.cpp")
    outside = write(str(tmp_path / "precious.gguf"), b"P" * 50)
    other = _flat(root, "org/Other", "o.gguf", 100)
    _manifest(root, "org/Other", "latest", "o.gguf")
    _manifest(root, "org/Evil", "latest", "../../precious.gguf", "/" + other)
    _manifest(root, "org/Evil", "t2", "../org_Other_o.gguf")
    os.symlink(outside, os.path.join(root, "org_Evil_x.gguf"))  # a link named like a model file
    os.symlink(outside, os.path.join(root, "loose.gguf"))
    result = run_cli("rm", "org/Evil", "--cache-dir", root, "--kind", LLAMA, "--yes", "--json")
    _one_line(result)
    assert open(outside, "rb").read() == b"P" * 50
    assert os.path.getsize(other) == 100
    assert os.path.islink(os.path.join(root, "org_Evil_x.gguf")) and os.path.islink(os.path.join(root, "loose.gguf"))
    result = run_cli("prune", "--cache-dir", root, "--kind", LLAMA, "--max-age", "0s", "--junk", "--yes", "--json")
    _one_line(result)
    assert open(outside, "rb").read() == b"P" * 50


def test_a_split_model_with_a_missing_part_removes_the_parts_there_and_nothing_of_another_split(tmp_path):
    root = str(tmp_path / "llama.cpp")
    p1 = _flat(root, "org/M", "big-00001-of-00003.gguf", 100)
    p3 = _flat(root, "org/M", "big-00003-of-00003.gguf", 100)
    _manifest(root, "org/M", "big", "big-00001-of-00003.gguf")
    _manifest(root, "org/M", "latest", "small.gguf")
    small = _flat(root, "org/M", "small.gguf", 10)
    # another split with the same prefix and another count: not a part of this one
    q2 = _flat(root, "org/M", "big-00002-of-00004.gguf", 100)
    du_before = _disk(root)
    result = run_cli("rm", "org/M@big", "--cache-dir", root, "--kind", LLAMA, "--yes", "--json")
    _one_line(result)
    assert result.exit_code == 0, result.output
    assert not os.path.exists(p1) and not os.path.exists(p3)
    assert os.path.exists(q2) and os.path.exists(small)
    assert json.loads(result.stdout)["freed_bytes"] == du_before - _disk(root)


def test_a_manifest_naming_a_companion_of_another_tags_file_does_not_take_it(tmp_path):
    """Tag t2's rfilename is t1's file's .etag: removing t2 must not strip t1's file of its ETag."""
    root = str(tmp_path / "llama.cpp")
    f = _flat(root, "org/M", "m.gguf", 100)
    _manifest(root, "org/M", "t1", "m.gguf")
    _manifest(root, "org/M", "t2", "m.gguf.etag")
    [cache] = hfcache.scan([root], kinds=[LLAMA]).caches
    paths = [p for i in cache.items for r in i.revisions for p in r.unit_paths]
    result = run_cli("rm", "org/M@t2", "--cache-dir", root, "--kind", LLAMA, "--yes", "--json")
    _one_line(result)
    assert os.path.exists(f) and os.path.exists(f + ".etag"), "t1's file lost its .etag to t2's removal"
    assert len(paths) == len(set(paths)), f"one file in two tags' units: {sorted(paths)}"


# ---------------------------------------------------------------------------------------------
# 8. More races and kills on the blob step


def test_a_link_made_while_the_blob_is_set_aside_puts_it_back(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    repo_dir = repo(root, "models--org--m", snapshots={C1: {"w.bin": W, "c": CFG}, C2: {"c": CFG}}, blobs={W: 5000, CFG: 10})
    write(os.path.join(repo_dir, "refs", "main"), C2.encode())
    inventory, plan = _plan(root, f"hf://org/m@{C1}/w.bin")
    import hfcache.caches.huggingface.files as files_mod

    real = files_mod.set_aside

    def set_aside_then_download(tree, repo_path, owner, out, *a):
        aside = real(tree, repo_path, owner, out, *a)
        link(os.path.join(repo_dir, "snapshots", C3, "w.bin"), f"../../blobs/{W}")  # a download links it meanwhile
        return aside

    monkeypatch.setattr(files_mod, "set_aside", set_aside_then_download)
    result = execute_plan(plan, inventory, live=live_hook(lambda: None)([]))
    [done] = result.results
    assert os.path.getsize(os.path.join(repo_dir, "snapshots", C3, "w.bin")) == 5000
    assert done.freed_bytes == 0


def test_a_folder_put_where_the_blob_was_is_never_removed(tmp_path):
    root = str(tmp_path / "hub")
    repo_dir = repo(root, "models--org--m", snapshots={C1: {"w.bin": W, "c": CFG}, C2: {"c": CFG}}, blobs={W: 5000, CFG: 10})
    write(os.path.join(repo_dir, "refs", "main"), C2.encode())
    inventory, plan = _plan(root, f"hf://org/m@{C1}/w.bin")
    blob = os.path.join(repo_dir, "blobs", W)

    def swap():
        os.unlink(blob)
        write(os.path.join(blob, "precious"), b"P" * 10)

    execute_plan(plan, inventory, live=live_hook(swap)([]))
    run_cli("prune", "--cache-dir", root, "--junk", "--junk-grace", "0s", "--yes")  # the next run's recovery
    found = [os.path.join(d, n) for d, _, ns in os.walk(root) for n in ns if n == "precious"]
    assert len(found) == 1 and open(found[0], "rb").read() == b"P" * 10


KILL_IN_RMDIR = """
import os, signal, sys
from hfcache.fs.ops import Tree
rmdir = Tree.rmdir
def rmdir_then_die(self, path):
    rmdir(self, path)
    os.kill(os.getpid(), signal.SIGKILL)
Tree.rmdir = rmdir_then_die
sys.argv = ["hfcache", *sys.argv[1:]]
from hfcache.cli import main
main()
"""


def test_a_kill_while_emptied_folders_go_leaves_a_cache_the_next_run_cleans(tmp_path):
    import subprocess
    import sys

    root = str(tmp_path / "hub")
    repo_dir = repo(
        root,
        "models--org--m",
        snapshots={C1: {"a/b/w.bin": W, "c": CFG}, C2: {"c": CFG}},
        blobs={W: 5000, CFG: 10},
        refs={"main": C2},
    )
    proc = subprocess.run(
        [sys.executable, "-c", KILL_IN_RMDIR, "rm", "hf://org/m/a", "--cache-dir", root, "--yes"],
        capture_output=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == -9, proc.stderr
    assert _resolves(os.path.join(repo_dir, "snapshots", C1, "c")) and _resolves(os.path.join(repo_dir, "snapshots", C2, "c"))
    result = run_cli("prune", "--cache-dir", root, "--junk", "--junk-grace", "0s", "--yes", "--json")
    _one_line(result)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(os.path.join(repo_dir, "blobs"))) == [CFG]
    assert _resolves(os.path.join(repo_dir, "snapshots", C1, "c"))


# ---------------------------------------------------------------------------------------------
# 9. Copies (the no-symlink mode) and hard links in snapshots: freed is what left the disk


@pytest.mark.parametrize("mode", ["copy", "hardlink-to-blob"])
def test_a_snapshot_file_that_is_not_a_link_frees_exactly_its_own_bytes(tmp_path, mode):
    root = str(tmp_path / "hub")
    repo_dir = repo(
        root,
        "models--org--m",
        snapshots={C1: {"c": CFG}, C2: {"c": CFG, "w.bin": W}},
        blobs={W: 5000, CFG: 10},
        refs={"main": C2},
    )
    entry = os.path.join(repo_dir, "snapshots", C1, "w.bin")
    if mode == "copy":
        write(entry, b"C" * 3000)
    else:
        os.link(os.path.join(repo_dir, "blobs", W), entry)
    du_before = _disk(root)
    result = run_cli("rm", f"hf://org/m@{C1}/w.bin", "--cache-dir", root, "--yes", "--json")
    _one_line(result)
    doc = json.loads(result.stdout)
    left = du_before - _disk(root)
    assert doc["freed_bytes"] == left, (doc["reclaim_bytes"], doc["freed_bytes"], left)
    assert _resolves(os.path.join(repo_dir, "snapshots", C2, "w.bin"))
    if mode == "copy":  # (a hard link: the plan estimates 5000 and 0 leave the disk; the run says 0, the truth)
        assert doc["reclaim_bytes"] == left, (doc["reclaim_bytes"], doc["freed_bytes"], left)


def _disk(root: str) -> int:
    seen, total = set(), 0
    for d, _, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(d, n))
            if (
                os.path.isfile(os.path.join(d, n))
                and not os.path.islink(os.path.join(d, n))
                and (st.st_dev, st.st_ino) not in seen
            ):
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def test_repair_of_a_corrupt_shared_store_payload_takes_the_payload_out_so_a_new_download_is_good(tmp_path):
    """Both repos' links to a corrupt payload go; the payload must go too, or the hub links a new download to it again."""
    from huggingface_hub.utils import _shared_blobs

    from tests.fakehub import FakeHub
    from tests.support import get, payload, publish

    root = str(tmp_path / "hub")
    same = payload(5000, 8)
    xet = "a1" * 32
    with FakeHub() as hub:
        pointers = []
        for repo_id in ("org/a", "org/b"):
            hub.push(repo_id, {"model.safetensors": same})
            pointers.append(get(hub, root, repo_id, "model.safetensors"))
    for pointer in pointers:
        publish(root, pointer, xet, len(same))
    store = os.path.realpath(pointers[0])
    with open(store, "r+b") as f:  # bit rot in the payload, same size
        f.write(b"!")
    result = _repair(tmp_path, root)
    _one_line(result)
    assert result.exit_code == 0, result.output
    assert not os.path.lexists(pointers[0]) and not os.path.lexists(pointers[1])
    # What the hub does next: a fresh (good) download of org/a's file, published to the store.
    etag = hashlib.sha256(same).hexdigest()
    blob = write(os.path.join(root, "models--org--a", "blobs", etag), same)
    link(pointers[0], os.path.relpath(blob, os.path.dirname(pointers[0])))
    _shared_blobs.publish_blob_to_shared_store(blob_path=blob, xet_hash=xet, cache_dir=root, expected_size=len(same))
    with open(pointers[0], "rb") as f:
        assert f.read() == same, "the corrupt payload stayed in the store and the new download was linked to it"
