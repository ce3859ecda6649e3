"""Mount points inside a cache (issue 15, items 2 and 10).

A mount point strictly inside a scanned root is reported on the cache; nothing beyond it is
counted; an item or revision that is, holds or lies beyond one is not deletable, with a
reason naming it, so a prune keeps it and never empties the mounted folder. One cache given
at two paths (a bind mount, a symlink) is scanned once, so a prune takes its lock once.

The first tests need no privilege: :func:`confine_to_mount` is handed the mount points, and
``mountinfo`` is a file written by the test. The others make real bind mounts: they need
root and ``mount``, and skip with the reason elsewhere, except under ``CI=true``, where
they must run. Every mount is lazily unmounted in teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from hfcache.caches import torch as torch_kind
from hfcache.caches.confine import confine_to_mount
from hfcache.caches.huggingface import scan as hf
from hfcache.caches.scan import scan_caches
from hfcache.fs import mounts
from hfcache.fs.mounts import mount_points_under, unescape
from hfcache.model import CacheInventory, Inventory, Item
from hfcache.output.words import describe_all
from hfcache.plan.build import make_plan
from hfcache.plan.settings import Policy, Settings
from tests.support import DAY, age_everything, contents, run_cli
from tests.trees import commit, link, repo, sha256, share, shared_store, write

C1, C2 = commit("mounts-1"), commit("mounts-2")
ON_CI = os.environ.get("CI") == "true"


def _why_no_mounts() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "bind mounts need root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount command"
    if not os.path.exists("/proc/self/mountinfo"):
        return "no /proc/self/mountinfo"
    return None


NO_MOUNTS = _why_no_mounts()
real_mounts = pytest.mark.skipif(NO_MOUNTS is not None and not ON_CI, reason=f"{NO_MOUNTS} (runs as root on CI)")


def as_json(result) -> dict:
    assert result.stdout.strip().startswith("{"), result.output
    return json.loads(result.stdout)


def item(inv: CacheInventory, item_id: str) -> Item:
    return next(i for i in inv.items if i.id == item_id)


def outside_folder(base: str) -> str:
    """A folder outside every cache, with files (5000 + 300 bytes) that a prune must never touch."""
    outside = os.path.join(base, "outside")
    write(os.path.join(outside, "big.bin"), b"x" * 5000)
    write(os.path.join(outside, "deep", "more.bin"), b"y" * 300)
    return outside


def hub_cache_with_data_folder(root: str) -> str:
    """org/a (two revisions; C1 gets a ``data/`` folder to mount on) and org/b (one revision)."""
    repo(
        root,
        "models--org--a",
        snapshots={C1: {"w.bin": "a1"}, C2: {"w.bin": "a2", "sub/x": "a3"}},
        blobs={"a1": 100, "a2": 200, "a3": 50},
        refs={"main": C2},
    )
    repo(root, "models--org--b", snapshots={C1: {"w.bin": "b1"}}, blobs={"b1": 7}, refs={"main": C1})
    data = os.path.join(root, "models--org--a", "snapshots", C1, "data")
    os.makedirs(data)
    return data


# ---------------------------------------------------------------------------------------------
# /proc/self/mountinfo


def test_octal_escapes_of_mountinfo_are_decoded():
    assert unescape(rb"/c/my\040models/a\011b\012c\134d") == "/c/my models/a\tb\nc\\d"
    assert unescape("/c/mod\u00e8le".encode()) == "/c/mod\u00e8le"


def test_mount_points_strictly_under_the_resolved_root(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    (tmp_path / "via").symlink_to(root)
    info = tmp_path / "mountinfo"
    lines = [
        "22 1 0:21 / / rw - ext4 /dev/vda rw",
        f"30 22 0:21 / {root} rw - ext4 /dev/vda rw",  # the root itself: its own file system, fine
        f"31 30 0:21 /x {root}/models--a/snapshots/c/my\\040data rw shared:1 - ext4 /dev/vda rw",
        f"32 30 0:21 /y {root}2/other rw - ext4 /dev/vda rw",  # a sibling sharing the prefix
        f"33 31 0:21 /z {root}/models--a/snapshots/c/my\\040data/inner rw - tmpfs tmpfs rw",
        f"34 30 0:21 /z {root}/models--a/snapshots/c/my\\040data/inner rw - tmpfs tmpfs rw",  # stacked twice
    ]
    info.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(mounts, "_is_mount_root", lambda path: True)
    expected = [f"{root}/models--a/snapshots/c/my data", f"{root}/models--a/snapshots/c/my data/inner"]
    assert mount_points_under(str(tmp_path / "via"), mountinfo=str(info)) == expected
    assert mount_points_under(str(root) + "/", mountinfo=str(info)) == expected


def test_a_listed_path_that_is_not_a_mount_root_now_is_left_out(tmp_path):
    """A mount hidden by a later mount over an ancestor is still listed; the path is then an ordinary folder."""
    (tmp_path / "hub" / "a").mkdir(parents=True)
    info = tmp_path / "mountinfo"
    info.write_text(f"31 30 0:21 /x {tmp_path}/hub/a rw - ext4 /dev/vda rw\n31 30 0:21 /x {tmp_path}/hub/gone rw - ext4 x rw\n")
    assert mount_points_under(str(tmp_path / "hub"), mountinfo=str(info)) == []


def test_no_mountinfo_means_no_mount_points(tmp_path):
    assert mount_points_under(str(tmp_path), mountinfo=str(tmp_path / "missing")) == []


# ---------------------------------------------------------------------------------------------
# The inventory, given the mount points (no privilege needed)


def _hub_pair(tmp_path) -> tuple[str, str, str]:
    """The same hub cache twice: ``data/`` holds a hub link in both, and files of its own only in ``with``."""
    made = []
    for name in ("with", "without"):
        root = str(tmp_path / name)
        data = hub_cache_with_data_folder(root)
        made.append(data)
    write(os.path.join(made[0], "plain.bin"), 4000)  # no-symlink mode: a file of the revision itself
    write(os.path.join(made[0], "deep", "more.bin"), 300)
    link(os.path.join(made[0], "w2.bin"), "../../../blobs/a1")  # a hub link: the blob is inside the cache
    link(os.path.join(made[1], "w2.bin"), "../../../blobs/a1")
    return str(tmp_path / "with"), str(tmp_path / "without"), made[0]


@pytest.mark.parametrize("ledger", [True, False])
def test_hub_counts_nothing_beyond_a_mount_point(tmp_path, ledger):
    root, bare, data = _hub_pair(tmp_path)
    walked = hf.scan(root, ledger=ledger)
    assert walked.size_bytes == 357 + 4300  # what today's walk counts
    got = confine_to_mount(walked, [data])
    want = hf.scan(bare, ledger=ledger)
    assert got.size_bytes == want.size_bytes == 357
    for mine, theirs in zip(got.items, want.items, strict=True):
        assert (mine.id, mine.size_bytes, mine.nb_blobs) == (theirs.id, theirs.size_bytes, theirs.nb_blobs)
        for r, w in zip(mine.revisions, theirs.revisions, strict=True):
            assert (r.revision, r.size_bytes, r.reclaimable_bytes) == (w.revision, w.size_bytes, w.reclaimable_bytes)
    assert [str(w) for w in got.warnings] == [f"mount point inside the cache: nothing beyond it is counted or deleted: {data}"]
    a, b = item(got, "org/a"), item(got, "org/b")
    assert not a.deletable and b.deletable
    (warning,) = next(r for r in a.revisions if r.revision == C1).warnings
    assert warning.path == data and warning.blocks_deletion and "mount point inside org/a revision" in warning.message
    assert data in got.protected


def test_plan_keeps_every_revision_of_the_item_with_the_mount_point_as_reason(tmp_path):
    root, _, data = _hub_pair(tmp_path)
    inv = scan_caches([root])
    inv = Inventory(caches=(confine_to_mount(inv.caches[0], [data]),), scanned_at=inv.scanned_at)
    policy = Policy(defaults=Settings(max_age=1.0, allow_remove_all=True))
    plan = make_plan(inv, policy, now=time.time() + 10 * DAY)
    assert {(u.id, u.revision) for u in plan.delete} == {("org/b", C1)}
    kept = {u.revision: describe_all(u.reasons) for u in plan.keep if u.id == "org/a"}
    assert set(kept) == {C1, C2}
    assert all(any(r.startswith("damaged: not deletable:") and data in r for r in reasons) for reasons in kept.values())


def test_hub_blobs_folder_a_mount_point_and_junk_beyond_it(tmp_path):
    root = str(tmp_path / "hub")
    hub_cache_with_data_folder(root)
    blobs = os.path.join(root, "models--org--a", "blobs")
    write(os.path.join(blobs, "e" * 40), 9)  # an orphan blob (a git sha1 name), beyond the mount point
    write(os.path.join(blobs, "e9.incomplete"), 11)
    assert [o.size_bytes for o in hf.scan(root).orphan_files] == [9]
    got = confine_to_mount(hf.scan(root), [blobs])
    a = item(got, "org/a")
    assert not a.deletable and a.size_bytes == 0 and all(r.size_bytes == 0 for r in a.revisions)
    assert any(w.path == blobs and "org/a is" not in w.message for w in a.warnings)  # the repo holds it
    assert got.size_bytes == 7  # org/b only
    assert not any(o.path.startswith(blobs) for o in got.orphan_files)
    assert not any(p.path.startswith(blobs) for p in got.partial_files)


def test_hub_shared_payload_beyond_a_mount_point(tmp_path):
    root = str(tmp_path / "hub")
    shared_store(root)
    a = repo(root, "models--org--a", snapshots={C1: {"w.bin": "e1"}}, blobs={"e1": 1}, refs={"main": C1})
    b = repo(root, "models--org--b", snapshots={C1: {"w.bin": "f1"}}, blobs={"f1": 1}, refs={"main": C1})
    h1, h2, h3 = sha256("p1"), sha256("p2"), sha256("p3")
    share(root, a, "e1", h1, 1000)
    share(root, b, "f1", h2, 20)
    write(os.path.join(root, "blobs", h3[:2], h3), 30)  # no repo links to it
    assert len({h1[:2], h2[:2], h3[:2]}) == 3
    prefixes = sorted(os.path.join(root, "blobs", h[:2]) for h in (h1, h3))  # a's payload and the unreferenced one
    for ledger in (True, False):
        walked = hf.scan(root, ledger=ledger)
        got = confine_to_mount(walked, prefixes)
        assert walked.size_bytes == 1050 and got.size_bytes == 20
        assert not item(got, "org/a").deletable and item(got, "org/a").size_bytes == 0
        assert item(got, "org/b").deletable
        assert all(not p.path.startswith(tuple(prefixes)) for p in got.unreferenced_payloads)


def _torch_pair(tmp_path) -> tuple[str, str, str]:
    made = []
    for name in ("with", "without"):
        root = str(tmp_path / name)
        write(f"{root}/me_repo_main/hubconf.py", 40)
        write(f"{root}/me_repo_v1/hubconf.py", 41)
        write(f"{root}/checkpoints/resnet-0123abcd.pth", 500)
        os.makedirs(f"{root}/me_repo_main/weights")
        made.append(f"{root}/me_repo_main/weights")
    write(f"{made[0]}/big.bin", 5000)
    return str(tmp_path / "with"), str(tmp_path / "without"), made[0]


def test_torch_counts_nothing_beyond_a_mount_point(tmp_path):
    root, bare, weights = _torch_pair(tmp_path)
    got = confine_to_mount(torch_kind.scan(root), [weights])
    want = torch_kind.scan(bare)
    assert got.size_bytes == want.size_bytes == 581
    assert [(i.id, i.size_bytes, i.nb_blobs) for i in got.items] == [(i.id, i.size_bytes, i.nb_blobs) for i in want.items]
    repo_item = item(got, "me/repo")
    assert not repo_item.deletable and item(got, "resnet").deletable
    main = next(r for r in repo_item.revisions if r.revision == "main")
    assert main.size_bytes == 40 and any(w.path == weights for w in main.warnings)


def test_torch_items_wholly_beyond_a_mount_point_are_not_counted(tmp_path):
    root, _, _ = _torch_pair(tmp_path)
    checkpoints = os.path.join(root, "checkpoints")
    got = confine_to_mount(torch_kind.scan(root), [checkpoints])
    assert [i.id for i in got.items] == ["me/repo"]
    assert got.size_bytes == 81 + 5000 and checkpoints in got.protected


def test_no_mount_point_leaves_the_inventory_as_it_is(tmp_path):
    root, _, _ = _hub_pair(tmp_path)
    inv = hf.scan(root)
    assert confine_to_mount(inv, []) is inv


# ---------------------------------------------------------------------------------------------
# Real bind mounts


@real_mounts
def test_hub_bind_mount_on_a_snapshot_folder_is_warned_kept_and_left_intact(tmp_path, mounts):
    root = str(tmp_path / "hub")
    data = hub_cache_with_data_folder(root)
    outside = outside_folder(str(tmp_path))
    age_everything(root, 60)  # (before any mount: the mounted folder keeps its times)
    before = contents(outside)
    mounts.bind(outside, data)
    assert mount_points_under(root) == [data]

    scan = run_cli("scan", "--cache-dir", root)
    assert scan.exit_code == 0, scan.output
    assert f"mount point inside the cache: nothing beyond it is counted or deleted: {data}" in scan.stderr
    shown = as_json(run_cli("scan", "--cache-dir", root, "--json"))
    assert shown["caches"][0]["size_bytes"] == 357  # 5300 bytes beyond the mount point are not counted

    result = run_cli("prune", "--cache-dir", root, "--max-age", "30d", "--allow-remove-all", "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = as_json(result)
    assert [(u["id"], u["status"]) for u in report["delete"]] == [("org/b", "deleted")]
    kept = {u["revision"]: u["reasons"] for u in report["keep"] if u["id"] == "org/a"}
    assert set(kept) == {C1, C2} and all(any(data in r for r in reasons) for reasons in kept.values())
    assert os.path.isdir(os.path.join(root, "models--org--a", "snapshots", C1))
    assert os.path.isdir(os.path.join(root, "models--org--a", "snapshots", C2))
    assert contents(data) == before  # seen through the mount
    assert not os.path.exists(os.path.join(root, "models--org--b"))


@real_mounts
def test_torch_bind_mounts_in_a_repo_folder_and_on_a_checkpoint_file(tmp_path, mounts):
    root = str(tmp_path / "torch" / "hub")
    write(f"{root}/me_repo_main/hubconf.py", 40)
    write(f"{root}/you_other_main/hubconf.py", 41)
    weights = f"{root}/me_repo_main/weights"
    os.makedirs(weights)
    checkpoint = write(f"{root}/checkpoints/resnet-0123abcd.pth", 500)
    outside = outside_folder(str(tmp_path))
    weight_file = write(str(tmp_path / "elsewhere" / "resnet.pth"), b"w" * 700)
    age_everything(root, 60)
    age_everything(os.path.dirname(weight_file), 60)  # the checkpoint's only times are the mounted file's
    before = contents(outside)
    mounts.bind(outside, weights)
    mounts.bind(weight_file, checkpoint)
    assert mount_points_under(root) == sorted([weights, checkpoint])

    scan = run_cli("scan", "--cache-dir", root)
    assert scan.exit_code == 0, scan.output
    assert weights in scan.stderr and checkpoint in scan.stderr
    shown = as_json(run_cli("scan", "--cache-dir", root, "--json"))
    assert shown["caches"][0]["size_bytes"] == 81

    result = run_cli("prune", "--cache-dir", root, "--max-age", "30d", "--allow-remove-all", "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = as_json(result)
    assert [(u["id"], u["status"]) for u in report["delete"]] == [("you/other", "deleted")]
    kept = {u["id"]: u["reasons"] for u in report["keep"]}
    assert any(weights in r for r in kept["me/repo"]) and any(checkpoint in r for r in kept["resnet"])
    assert contents(weights) == before and os.path.isfile(f"{root}/me_repo_main/hubconf.py")
    with open(checkpoint, "rb") as f:
        assert f.read() == b"w" * 700


@real_mounts
def test_mount_point_names_with_spaces_are_decoded(tmp_path, mounts):
    root = str(tmp_path / "hub")
    data = os.path.join(hub_cache_with_data_folder(root), "my data\tset")
    os.makedirs(data)
    mounts.bind(outside_folder(str(tmp_path)), data)
    assert mount_points_under(root) == [data]
    assert mount_points_under(str(tmp_path / "hub" / ".." / "hub")) == [data]


@real_mounts
def test_a_mount_hidden_by_a_mount_over_its_parent_is_left_out(tmp_path, mounts):
    root = str(tmp_path / "hub")
    hub_cache_with_data_folder(root)
    upper = os.path.join(root, "models--org--b", "snapshots")
    lower = os.path.join(upper, C1)
    mounts.bind(outside_folder(str(tmp_path)), lower)
    assert mount_points_under(root) == [lower]
    mounts.mount("-t", "tmpfs", "tmpfs", upper)
    assert mount_points_under(root) == [upper]


@real_mounts
def test_one_cache_at_two_paths_through_a_bind_mount_is_scanned_once_and_locked_once(tmp_path, mounts):
    root = str(tmp_path / "hub")
    hub_cache_with_data_folder(root)
    age_everything(root, 60)
    other = str(tmp_path / "same-hub")
    os.makedirs(other)
    mounts.bind(root, other)

    inv = scan_caches([other, root])
    assert [c.root for c in inv.caches] == [other]  # the path given first
    shown = as_json(run_cli("scan", "--cache-dir", root, "--cache-dir", other, "--json"))
    assert [c["root"] for c in shown["caches"]] == [root]

    result = run_cli("prune", "--cache-dir", root, "--cache-dir", other, "--keep", "1", "--yes", "--json", "--lock-wait", "1s")
    assert result.exit_code == 0, result.output
    report = as_json(result)
    assert [(u["id"], u["revision"], u["status"]) for u in report["delete"]] == [("org/a", C1, "deleted")]
    assert not os.path.exists(os.path.join(root, "models--org--a", "snapshots", C1))


def test_a_mount_point_beyond_another_is_not_reported(tmp_path):
    root, _, data = _hub_pair(tmp_path)
    got = confine_to_mount(hf.scan(root), [os.path.join(data, "deep"), data])
    assert [w.path for w in got.warnings] == [data]
