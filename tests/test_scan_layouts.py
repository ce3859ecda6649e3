"""The hub scanner on hand-built trees (pyfakefs): one test per layout case of CACHE-LAYOUTS.md section 2."""

from __future__ import annotations

import os

import pytest

from hfcache.caches.huggingface import scan as hf
from hfcache.errors import CacheNotADirectory, CacheNotFound, CacheUnreadable, NotACache
from hfcache.model import CacheInventory, Item
from tests.trees import commit, link, repo, sha256, share, shared_store, write

ROOT = "/cache/hub"
C1, C2, C3 = commit(1), commit(2), commit(3)


def scan(root: str = ROOT) -> CacheInventory:
    return hf.scan(root)


def only(inv: CacheInventory) -> Item:
    assert len(inv.items) == 1, inv.items
    return inv.items[0]


def revision_of(item: Item, revision: str):
    return next(r for r in item.revisions if r.revision == revision)


def test_repo_ids_and_types_decoded_as_the_hub_does(fs):
    for folder in ("models--org--name", "models--gpt2", "datasets--org--data", "spaces--a--b", "kernels--k--n"):
        repo(ROOT, folder, snapshots={C1: {"f": "e1"}}, blobs={"e1": 1}, refs={"main": C1})
    got = {(i.type, i.id) for i in scan().items}
    assert got == {("model", "org/name"), ("model", "gpt2"), ("dataset", "org/data"), ("space", "a/b"), ("kernel", "k/n")}


def test_refs_nested_tags_short_hashes_and_detached(fs):
    repo(
        ROOT,
        "models--org--m",
        snapshots={C1: {"a": "e1"}, C2: {"a": "e2"}, C3: {"a": "e3"}},
        blobs={"e1": 1, "e2": 2, "e3": 3},
        refs={"main": C1, "v1.0": C1, "refs/pr/1": C2, C1[:8]: C1},
    )
    write(f"{ROOT}/models--org--m/refs/main.1a2b3c4d.tmp", C3.encode())  # interrupted atomic write: ignored
    item = only(scan())
    assert revision_of(item, C1).refs == (C1[:8], "main", "v1.0")
    assert revision_of(item, C2).refs == ("refs/pr/1",)
    assert revision_of(item, C3).refs == () and revision_of(item, C3).detached
    assert [revision_of(item, c).default for c in (C1, C2, C3)] == [True, False, False]  # main: what loads without a revision
    assert item.deletable and item.warnings == ()


def test_blob_shared_by_two_revisions_counted_once(fs):
    big = sha256("weights")
    repo(
        ROOT,
        "models--org--m",
        snapshots={C1: {"model.bin": big, "config.json": "c1"}, C2: {"model.bin": big, "config.json": "c2"}},
        blobs={big: 5000, "c1": 10, "c2": 20},
        refs={"main": C2},
    )
    item = only(scan())
    assert revision_of(item, C1).size_bytes == 5010
    assert revision_of(item, C2).size_bytes == 5020
    assert item.size_bytes == 5030  # the shared blob once
    assert revision_of(item, C1).reclaimable_bytes == 10  # only its own config
    assert revision_of(item, C2).reclaimable_bytes == 20
    assert item.nb_blobs == 3
    assert scan().size_bytes == 5030


def test_files_in_subfolders_and_same_blob_twice_in_one_revision(fs):
    repo(
        ROOT,
        "models--org--m",
        snapshots={C1: {"unet/model.bin": "e1", "vae/model.bin": "e1", "a/b/c.txt": "e2"}},
        blobs={"e1": 100, "e2": 7},
        refs={"main": C1},
    )
    r = only(scan()).revisions[0]
    assert r.nb_files == 3 and r.size_bytes == 107 and r.reclaimable_bytes == 107


def test_no_symlink_mode_and_mixed_mode(fs):
    # No-symlink mode (Windows, HF_HUB_DISABLE_SYMLINKS): snapshot entries are the files themselves.
    write(f"{ROOT}/models--org--plain/snapshots/{C1}/model.bin", 300)
    write(f"{ROOT}/models--org--plain/snapshots/{C2}/model.bin", 300)
    write(f"{ROOT}/models--org--plain/refs/main", C2.encode())
    # Mixed: one file copied in place, one still a link.
    repo(ROOT, "models--org--mixed", snapshots={C1: {"a": "e1"}}, blobs={"e1": 11}, refs={"main": C1})
    write(f"{ROOT}/models--org--mixed/snapshots/{C1}/b", 22)
    inv = scan()
    plain, mixed = (next(i for i in inv.items if i.id == n) for n in ("org/plain", "org/mixed"))
    assert plain.size_bytes == 600  # nothing is shared between revisions in this mode
    assert revision_of(plain, C1).reclaimable_bytes == 300
    assert mixed.size_bytes == 33 and mixed.revisions[0].nb_files == 2
    assert inv.size_bytes == 633
    assert plain.deletable and mixed.deletable


def test_shared_store_payload_counted_once_in_cache_total(fs):
    store = shared_store(ROOT)
    x = sha256("xet-payload")
    a = repo(ROOT, "models--org--a", snapshots={C1: {"m.bin": "ea", "cfg": "ca"}}, blobs={"ea": 0, "ca": 5}, refs={"main": C1})
    b = repo(ROOT, "models--org--b", snapshots={C2: {"m.bin": "eb"}}, blobs={"eb": 0}, refs={"main": C2})
    share(ROOT, a, "ea", x, 4000)
    share(ROOT, b, "eb", x, 4000)
    inv = scan()
    ia, ib = inv.items
    assert (ia.size_bytes, ib.size_bytes) == (4005, 4000)  # per repo: logical, as the hub reports
    assert inv.size_bytes == 4005  # cache total: the payload once
    assert inv.shared_store
    # Deleting a's revision frees its config but not the payload b still links to.
    assert ia.revisions[0].reclaimable_bytes == 5
    assert ib.revisions[0].reclaimable_bytes == 0
    assert inv.unreferenced_payloads == ()
    assert os.path.isdir(store)


def test_payload_used_by_one_repo_only_is_reclaimable(fs):
    shared_store(ROOT)
    x = sha256("solo")
    a = repo(
        ROOT, "models--org--a", snapshots={C1: {"m.bin": "ea"}, C2: {"cfg": "c2"}}, blobs={"ea": 0, "c2": 1}, refs={"main": C2}
    )
    share(ROOT, a, "ea", x, 900)
    item = only(scan())
    assert revision_of(item, C1).reclaimable_bytes == 900


def test_unreferenced_payload_reported_and_counted_in_total(fs):
    shared_store(ROOT)
    x, y = sha256("kept"), sha256("dropped")
    a = repo(ROOT, "models--org--a", snapshots={C1: {"m": "ea"}}, blobs={"ea": 0}, refs={"main": C1})
    share(ROOT, a, "ea", x, 100)
    write(f"{ROOT}/blobs/{y[:2]}/{y}", 55)
    write(f"{ROOT}/blobs/{y[:2]}/{y}.refs", b"models--org--gone/blobs/e\n")
    inv = scan()
    assert [(p.path, p.size_bytes, p.has_manifest) for p in inv.unreferenced_payloads] == [
        (f"{ROOT}/blobs/{y[:2]}/{y}", 55, True)
    ]
    assert inv.size_bytes == 155  # huggingface_hub counts store-only payloads too


def test_blobs_folder_without_marker_is_not_a_store(fs):
    write(f"{ROOT}/blobs/ab/" + "ab" * 32, 10)
    repo(ROOT, "models--org--a", snapshots={C1: {"m": "e"}}, blobs={"e": 1}, refs={"main": C1})
    inv = scan()
    assert not inv.shared_store and inv.size_bytes == 1
    assert any("shared-store marker" in w.message for w in inv.warnings)


def test_partial_downloads_both_schemes_and_temporaries(fs):
    repo(ROOT, "models--org--m", snapshots={C1: {"m": "e1"}}, blobs={"e1": 1}, refs={"main": C1})
    write(f"{ROOT}/models--org--m/blobs/{sha256(1)}.incomplete", 123)
    write(f"{ROOT}/models--org--m/blobs/{sha256(2)}.0badcafe.incomplete", 456)
    write(f"{ROOT}/models--org--m/blobs/tmp_0f8fad5b-d9cb-469f-a165-70867728950e", 0)
    write(f"{ROOT}/.locks/models--org--m/{sha256(1)}.lock")
    os.utime(f"{ROOT}/models--org--m/blobs/{sha256(1)}.incomplete", (1000, 1000))
    inv = scan()
    parts = {os.path.basename(p.path): p for p in inv.partial_files}
    old = parts[f"{sha256(1)}.incomplete"]
    assert (old.scheme, old.size_bytes, old.last_modified, old.item_id) == ("resumable", 123, 1000, "org/m")
    assert old.lock_path == f"{ROOT}/.locks/models--org--m/{sha256(1)}.lock"
    new = parts[f"{sha256(2)}.0badcafe.incomplete"]
    assert new.scheme == "per-process" and new.lock_path.endswith(f"/{sha256(2)}.lock") and new.lock_held is None
    assert parts["tmp_0f8fad5b-d9cb-469f-a165-70867728950e"].scheme == "temporary"
    assert only(inv).size_bytes == 1 and inv.size_bytes == 1  # partials are not part of any revision


def test_orphan_blobs(fs):
    old = sha256("old")  # an orphan has a blob's name (tests/test_hub_writers.py: other names are left alone)
    repo(ROOT, "models--org--m", snapshots={C1: {"m": "e1"}}, blobs={"e1": 1, old: 77}, refs={"main": C1})
    inv = scan()
    assert [(os.path.basename(o.path), o.size_bytes, o.item_id) for o in inv.orphan_files] == [(old, 77, "org/m")]
    assert inv.size_bytes == 1 and only(inv).size_bytes == 1


def test_repo_with_blobs_but_no_snapshots(fs):
    write(f"{ROOT}/models--org--migrated/blobs/{commit('migrated')}", 40)
    inv = scan()
    item = only(inv)
    assert item.revisions == () and item.size_bytes == 0
    assert [o.size_bytes for o in inv.orphan_files] == [40]
    assert item.deletable  # documented as a normal leftover (diffusers migration, interrupted delete)
    assert any("no snapshots" in w.message for w in item.warnings)


def test_times_are_newest_blob_times(fs):
    repo(ROOT, "models--org--m", snapshots={C1: {"a": "e1"}, C2: {"a": "e2"}}, blobs={"e1": 1, "e2": 2}, refs={"main": C2})
    os.utime(f"{ROOT}/models--org--m/blobs/e1", (5000, 100))
    os.utime(f"{ROOT}/models--org--m/blobs/e2", (3000, 200))
    item = only(scan())
    assert (revision_of(item, C1).last_accessed, revision_of(item, C1).last_modified) == (5000, 100)
    assert (revision_of(item, C2).last_accessed, revision_of(item, C2).last_modified) == (3000, 200)
    assert (item.last_accessed, item.last_modified) == (5000, 200)


# --- odd things: a warning on the repo, the scan goes on, nothing deletes through it ---------------


def _assert_odd(inv: CacheInventory, repo_id: str, fragment: str) -> Item:
    item = next(i for i in inv.items if i.id == repo_id)
    messages = [w.message for w in item.warnings] + [w.message for r in item.revisions for w in r.warnings]
    assert any(fragment in m for m in messages), messages
    assert not item.deletable
    # The scan went on: the healthy neighbour is still there and intact.
    healthy = next(i for i in inv.items if i.id == "org/healthy")
    assert healthy.deletable and healthy.size_bytes == 3
    return item


@pytest.fixture
def healthy(fs):
    repo(ROOT, "models--org--healthy", snapshots={C1: {"f": "e"}}, blobs={"e": 3}, refs={"main": C1})
    return fs


def test_broken_symlink(healthy):
    repo(ROOT, "models--org--odd", snapshots={C1: {"a": "e1", "b": "missing"}}, blobs={"e1": 1}, refs={"main": C1})
    item = _assert_odd(scan(), "org/odd", "broken symlink")
    assert item.size_bytes == 1


def test_ref_to_missing_commit(healthy):
    repo(ROOT, "models--org--odd", snapshots={C1: {"a": "e1"}}, blobs={"e1": 1}, refs={"main": C1, "v2": C2})
    _assert_odd(scan(), "org/odd", f"point to missing commit {C2}")


def test_ref_to_a_commit_known_only_from_no_exist_is_not_damage(healthy):
    repo(ROOT, "models--org--probe", snapshots={C1: {"a": "e1"}}, blobs={"e1": 1}, refs={"main": C2})
    write(f"{ROOT}/models--org--probe/.no_exist/{C2}/adapter_config.json")
    item = next(i for i in scan().items if i.id == "org/probe")
    assert item.deletable and [w.blocks_deletion for w in item.warnings] == [False]


def test_ref_with_garbage(healthy):
    repo(ROOT, "models--org--odd", snapshots={C1: {"a": "e1"}}, blobs={"e1": 1}, refs={"main": "not a hash"})
    _assert_odd(scan(), "org/odd", "does not hold a commit hash")


def test_stray_file_in_snapshots_and_in_repo(healthy):
    repo(ROOT, "models--org--odd", snapshots={C1: {"a": "e1"}}, blobs={"e1": 1}, refs={"main": C1})
    write(f"{ROOT}/models--org--odd/snapshots/notes.txt", b"hi")
    write(f"{ROOT}/models--org--odd/version.txt", b"1")
    inv = scan()
    _assert_odd(inv, "org/odd", "unexpected file in snapshots/")
    _assert_odd(inv, "org/odd", "unexpected entry in repo folder")


def test_root_markers_are_quiet_and_stray_root_entries_warn(healthy):
    for name in ("version.txt", "version_diffusers_cache.txt", "CACHEDIR.TAG", ".DS_Store"):
        write(f"{ROOT}/{name}", b"1")
    write(f"{ROOT}/.locks/models--org--healthy/e.lock")
    write(f"{ROOT}/random.bin", 5)
    inv = scan()
    assert [(os.path.basename(w.path), w.message) for w in inv.warnings] == [("random.bin", "not a repo folder, left alone")]
    assert [i.id for i in inv.items] == ["org/healthy"]


def test_snapshot_symlink_leaving_the_cache_is_not_followed(healthy):
    write("/outside/secret.bin", 10_000)
    repo(ROOT, "models--org--odd", snapshots={C1: {"a": "e1"}}, blobs={"e1": 1}, refs={"main": C1})
    link(f"{ROOT}/models--org--odd/snapshots/{C1}/evil", "/outside/secret.bin")
    link(f"{ROOT}/models--org--odd/snapshots/{C1}/evil2", "../../../../../outside/secret.bin")
    item = _assert_odd(scan(), "org/odd", "leaves the cache")
    assert item.size_bytes == 1  # the 10 kB outside are not counted


def test_blob_symlink_leaving_the_cache(healthy):
    write("/outside/big.bin", 10_000)
    repo(ROOT, "models--org--odd", snapshots={C1: {"a": "e1"}}, blobs={}, refs={"main": C1})
    link(f"{ROOT}/models--org--odd/blobs/e1", "/outside/big.bin")
    item = _assert_odd(scan(), "org/odd", "leaves the cache")
    assert item.size_bytes == 0


def test_snapshot_folder_and_repo_folder_symlinks_are_not_followed(healthy):
    repo("/outside", "models--org--real", snapshots={C1: {"a": "e1"}}, blobs={"e1": 500}, refs={"main": C1})
    link(f"{ROOT}/models--org--odd", "/outside/models--org--real")
    repo(ROOT, "models--org--odd2", snapshots={C1: {"a": "e1"}}, blobs={"e1": 1}, refs={"main": C1})
    link(f"{ROOT}/models--org--odd2/snapshots/{C2}", f"/outside/models--org--real/snapshots/{C1}")
    inv = scan()
    odd = _assert_odd(inv, "org/odd", "repo folder is a symlink")
    assert odd.size_bytes == 0 and odd.revisions == ()
    odd2 = _assert_odd(inv, "org/odd2", "snapshot is a symlink")
    assert [r.revision for r in odd2.revisions] == [C1] and odd2.size_bytes == 1


def test_snapshot_not_named_after_a_commit(healthy):
    repo(ROOT, "models--org--odd", snapshots={"main": {"a": "e1"}}, blobs={"e1": 1}, refs={})
    _assert_odd(scan(), "org/odd", "not named after a commit hash")


def test_absolute_links_through_a_symlinked_root(fs):
    """The cache root itself is a symlink and the hub fell back to absolute links under the given path."""
    real = "/data/hf-hub"
    os.makedirs("/home/me/.cache/huggingface")
    repo(real, "models--org--m", snapshots={C1: {}}, blobs={"e1": 9}, refs={"main": C1})
    link("/home/me/.cache/huggingface/hub", real)
    link(f"{real}/models--org--m/snapshots/{C1}/a", "/home/me/.cache/huggingface/hub/models--org--m/blobs/e1")
    inv = hf.scan("/home/me/.cache/huggingface/hub")
    assert inv.root == real
    item = only(inv)
    assert item.deletable and item.size_bytes == 9


# --- roots ---------------------------------------------------------------------------------------


def test_missing_default_root_means_nothing_cached(fs):
    inv = hf.scan("/nowhere/hub", explicit=False)
    assert not inv.exists and inv.items == () and inv.size_bytes == 0


def test_missing_explicit_root(fs):
    with pytest.raises(CacheNotFound):
        hf.scan("/nowhere/hub")


def test_root_that_is_a_file(fs):
    write("/cache/file")
    with pytest.raises(CacheNotADirectory):
        hf.scan("/cache/file")
    with pytest.raises(CacheNotADirectory):
        hf.scan("/cache/file", explicit=False)


def test_root_that_is_not_a_cache(fs):
    write("/home/me/Documents/cv.pdf", 10)
    write("/home/me/.cache/huggingface/hub/CACHEDIR.TAG")
    with pytest.raises(NotACache, match="not a Hugging Face hub cache"):
        hf.scan("/home/me")
    with pytest.raises(NotACache, match=r"did you mean /home/me/.cache/huggingface/hub\?"):
        hf.scan("/home/me/.cache/huggingface")


def test_empty_folder_is_an_empty_cache(fs):
    os.makedirs("/cache/new")
    inv = hf.scan("/cache/new")
    assert inv.exists and inv.items == ()


def test_unreadable_root_and_unreadable_repo():
    from pyfakefs.fake_filesystem_unittest import Patcher

    with Patcher(allow_root_user=False) as patcher:
        patcher.fs.create_dir("/locked/hub")
        write("/locked/hub/CACHEDIR.TAG")
        os.chmod("/locked/hub", 0o000)
        with pytest.raises(CacheUnreadable):
            hf.scan("/locked/hub")
        repo(ROOT, "models--org--healthy", snapshots={C1: {"f": "e"}}, blobs={"e": 3}, refs={"main": C1})
        repo(ROOT, "models--org--odd", snapshots={C1: {"f": "e"}}, blobs={"e": 3}, refs={"main": C1})
        os.chmod(f"{ROOT}/models--org--odd", 0o000)
        _assert_odd(hf.scan(ROOT), "org/odd", "cannot read repo folder")
