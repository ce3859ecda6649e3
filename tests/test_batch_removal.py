"""Tree.remove_later and unlink_later: walked and checked when queued, removed back to back with the batch.

What can change between the two (a folder swapped for a symlink, a mount, a file added) must
never make the batch act outside what was walked.
"""

from __future__ import annotations

import os
import subprocess

import pytest

import hfcache
from hfcache.caches.huggingface.trash import TRASH, trash_name
from hfcache.execute.run import recover
from hfcache.fs import ops as fsops
from hfcache.fs import removal
from hfcache.model import Inventory
from tests.support import need_mounts
from tests.trees import commit, repo, sha256, write


def results():
    got: list[tuple[int, str | None]] = []
    return got, lambda freed, error: got.append((freed, error))


def test_a_tree_is_removed_with_the_batch_and_its_files_counted_once(tmp_path):
    root = str(tmp_path)
    held = os.path.join(root, "trash", "held")
    write(os.path.join(held, "a.bin"), b"a" * 100)
    write(os.path.join(held, "sub", "deeper", "b.bin"), b"b" * 10)
    os.symlink("../../blobs/x", os.path.join(held, "link"))
    os.link(os.path.join(held, "a.bin"), os.path.join(root, "other-name"))  # a second link: nothing freed
    write(os.path.join(held, "c.bin"), b"c" * 7)
    got, done = results()
    with fsops.Tree(root) as tree:
        assert tree.remove_later(held, done) is None
        assert os.path.isdir(held) and got == []  # nothing removed before the batch
        tree.unlink_pending()
        assert got == [(17, None)]
    assert not os.path.lexists(held) and os.path.exists(os.path.join(root, "other-name"))


def test_also_goes_first_uncounted_and_a_tree_that_cannot_be_walked_queues_nothing(tmp_path):
    root, outside = str(tmp_path / "root"), str(tmp_path / "outside")
    write(os.path.join(outside, "precious"), b"p")
    held = os.path.join(root, "trash", "held")
    write(os.path.join(held, "f"), b"f")
    os.symlink(outside, os.path.join(held, "sub"))  # a link: unlinked, never followed
    write(os.path.join(root, "trash", "ref"), b"r" * 40)
    write(os.path.join(root, "marker", "m"), b"")
    bad = os.path.join(root, "bad")
    os.makedirs(bad)
    got, done = results()
    with fsops.Tree(root) as tree:
        also = [os.path.join(root, "trash", "ref"), os.path.join(root, "marker")]
        assert tree.remove_later(held, done, also=also) is None
        tree.unlink_pending()
        assert got == [(1, None)]  # the ref is not counted
        assert not os.path.lexists(held) and not os.path.lexists(also[0]) and not os.path.lexists(also[1])
        # A folder on the way swapped for a symlink: refused at once, nothing queued, done not called.
        os.rmdir(bad)
        os.symlink(outside, bad)
        assert "not followed" in (tree.remove_later(os.path.join(bad, "x"), done) or "")
        tree.unlink_pending()
    assert got == [(1, None)] and os.listdir(outside) == ["precious"]


def test_a_folder_swapped_for_a_symlink_after_the_walk_sends_nothing_outside(tmp_path):
    root, outside = str(tmp_path / "root"), str(tmp_path / "outside")
    write(os.path.join(outside, "f"), b"precious")  # the same name as what the batch removes
    held = os.path.join(root, "trash", "held")
    write(os.path.join(held, "sub", "f"), b"ours")
    got, done = results()
    with fsops.Tree(root) as tree:
        assert tree.remove_later(held, done) is None
        os.rename(os.path.join(held, "sub"), os.path.join(root, "moved"))  # swapped after the walk
        os.symlink(outside, os.path.join(held, "sub"))
        tree.unlink_pending()
    [(freed, error)] = got
    assert error is not None and "held" in error  # the folder could not go: said
    assert freed == 4  # what was walked went: the file the walk found, through the folder it opened
    with open(os.path.join(outside, "f"), "rb") as f:
        assert f.read() == b"precious"
    assert os.path.islink(os.path.join(held, "sub"))  # the link stays, its target untouched


def test_a_file_added_after_the_walk_stays_and_its_folder_with_it(tmp_path):
    root = str(tmp_path)
    held = os.path.join(root, "trash", "held")
    write(os.path.join(held, "f"), b"ours")
    got, done = results()
    with fsops.Tree(root) as tree:
        assert tree.remove_later(held, done) is None
        write(os.path.join(held, "new"), b"someone else's")
        tree.unlink_pending()
    [(freed, error)] = got
    assert freed == 4 and error is not None and "not empty" in error.lower()
    assert os.listdir(held) == ["new"]


def mount_case(tmp_path):
    """Root and mount tools, or skip; (the cache root, a folder to mount with one file, a folder to remove)."""
    need_mounts("mount", "umount")
    root, other = str(tmp_path / "root"), str(tmp_path / "other")
    write(os.path.join(other, "f"), b"on another mount")
    return root, other, os.path.join(root, "trash", "held")


def test_a_mount_made_after_the_walk_is_neither_entered_nor_removed(tmp_path):
    root, other, held = mount_case(tmp_path)
    write(os.path.join(held, "sub", "f"), b"ours")
    got, done = results()
    with fsops.Tree(root) as tree:
        assert tree.remove_later(held, done) is None
        subprocess.run(["mount", "--bind", other, os.path.join(held, "sub")], check=True)
        try:
            tree.unlink_pending()
        finally:
            subprocess.run(["umount", "-l", os.path.join(held, "sub")], check=True)
    [(_, error)] = got
    assert error is not None
    assert os.listdir(other) == ["f"]


def test_a_mount_inside_is_refused_when_queued(tmp_path):
    root, other, held = mount_case(tmp_path)
    write(os.path.join(held, "f"), b"ours")
    os.makedirs(os.path.join(held, "sub"))
    subprocess.run(["mount", "--bind", other, os.path.join(held, "sub")], check=True)
    try:
        got, done = results()
        with fsops.Tree(root) as tree:
            error = tree.remove_later(held, done)
            tree.unlink_pending()
        assert error is not None and "mount point" in error and got == []
        assert os.path.exists(os.path.join(held, "f")) and os.listdir(other) == ["f"]  # nothing of it removed
    finally:
        subprocess.run(["umount", "-l", os.path.join(held, "sub")], check=True)


def test_a_batch_holding_many_folders_is_carried_out_before_it_holds_more(tmp_path, monkeypatch):
    monkeypatch.setattr(removal, "BATCH_FDS", 8)
    root = str(tmp_path)
    got, done = results()
    with fsops.Tree(root) as tree:
        for i in range(20):
            held = os.path.join(root, "trash", f"held{i}")
            write(os.path.join(held, "sub", "f"), b"x")
            assert tree.remove_later(held, done) is None
            assert tree._batch is None or len(tree._batch.fds) <= 8
        tree.unlink_pending()
    assert got == [(1, None)] * 20 and os.listdir(os.path.join(root, "trash")) == []


def test_unlink_later_acts_in_the_folder_it_reached_when_queued(tmp_path):
    root, outside = str(tmp_path / "root"), str(tmp_path / "outside")
    write(os.path.join(outside, "blob"), b"precious")
    write(os.path.join(root, "trash", "blob"), b"ours!")
    got, done = results()
    with fsops.Tree(root) as tree:
        tree.unlink_later(os.path.join(root, "trash", "blob"), done)
        os.rename(os.path.join(root, "trash"), os.path.join(root, "trash-moved"))
        os.symlink(outside, os.path.join(root, "trash"))  # the path now leads outside
        tree.unlink_pending()
    assert got == [(5, None)]
    assert os.listdir(outside) == ["blob"] and os.listdir(os.path.join(root, "trash-moved")) == []


def test_a_forked_copy_drops_the_batch_and_the_parent_carries_it_out(tmp_path):
    root = str(tmp_path)
    write(os.path.join(root, "trash", "f"), b"x")
    got, done = results()
    with fsops.Tree(root) as tree:
        tree.unlink_later(os.path.join(root, "trash", "f"), done)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            tree.detach()
            tree.close()
            os._exit(0 if os.path.exists(os.path.join(root, "trash", "f")) else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # the child removed nothing
        assert os.path.exists(os.path.join(root, "trash", "f"))
    assert got == [(1, None)] and not os.path.exists(os.path.join(root, "trash", "f"))  # closing carried it out


@pytest.mark.parametrize("folder_for_file", [True, False])
def test_an_entry_that_changed_type_is_an_error_not_a_removal(tmp_path, folder_for_file):
    root = str(tmp_path)
    path = os.path.join(root, "trash", "x")
    write(path, b"x")
    got, done = results()
    with fsops.Tree(root) as tree:
        tree.unlink_later(path, done, count=folder_for_file)
        os.unlink(path)
        os.makedirs(path)
        write(os.path.join(path, "inside"), b"keep")
        tree.unlink_pending()
    [(freed, error)] = got
    assert freed == 0 and error is not None and "folder where a file was expected" in error
    assert os.path.exists(os.path.join(path, "inside"))


def test_a_tree_too_big_to_hold_open_is_told_once(tmp_path, monkeypatch):
    monkeypatch.setattr(removal, "BATCH_FDS", 8)
    root = str(tmp_path)
    held = os.path.join(root, "trash", "held")
    for i in range(10):
        write(os.path.join(held, f"d{i}", "f"), b"x" * 3)
    write(os.path.join(root, "trash", "ref"), b"r")
    got, done = results()
    with fsops.Tree(root) as tree:
        assert tree.remove_later(held, done, also=[os.path.join(root, "trash", "ref")]) is None
        tree.unlink_pending()
    assert got == [(30, None)] and os.listdir(os.path.join(root, "trash")) == []


def test_a_mount_deep_in_a_tree_too_big_to_hold_open_is_returned(tmp_path, monkeypatch):
    root, other, held = mount_case(tmp_path)
    monkeypatch.setattr(removal, "BATCH_FDS", 8)
    for i in range(10):
        write(os.path.join(held, f"d{i}", "f"), b"x")
    mnt = os.path.join(held, "d9", "mnt")
    os.makedirs(mnt)
    ref = os.path.join(root, "trash", "ref")
    write(ref, b"r")
    subprocess.run(["mount", "--bind", other, mnt], check=True)
    try:
        got, done = results()
        with fsops.Tree(root) as tree:
            error = tree.remove_later(held, done, also=[ref])
            tree.unlink_pending()
        assert error is not None and "mount point" in error  # the caller puts back what is left
        assert os.path.exists(ref)  # nothing of "also" went
        assert len(got) <= 1 and os.listdir(other) == ["f"]
    finally:
        subprocess.run(["umount", "-l", mnt], check=True)


def test_every_link_of_a_file_removed_in_one_batch_frees_it_once(tmp_path):
    root = str(tmp_path)
    write(os.path.join(root, "trash", "a"), b"x" * 1000)
    os.link(os.path.join(root, "trash", "a"), os.path.join(root, "trash", "b"))
    write(os.path.join(root, "trash", "c"), b"y" * 10)
    os.link(os.path.join(root, "trash", "c"), os.path.join(root, "kept"))  # a link that stays: nothing freed
    got, done = results()
    with fsops.Tree(root) as tree:
        for name in ("a", "b", "c"):
            tree.unlink_later(os.path.join(root, "trash", name), done)
        tree.unlink_pending()
    assert sorted(got) == [(0, None), (0, None), (1000, None)]


def test_a_folder_renamed_by_hfcache_is_looked_up_afresh_by_later_removals(tmp_path):
    root = str(tmp_path)
    write(os.path.join(root, "A", "x"), b"1")
    write(os.path.join(root, "A", "y"), b"in A, renamed to B")
    got, done = results()
    with fsops.Tree(root) as tree:
        tree.unlink_later(os.path.join(root, "A", "x"), done)
        tree.rename(os.path.join(root, "A"), os.path.join(root, "B"))
        write(os.path.join(root, "A", "y"), b"a new A")
        tree.unlink_later(os.path.join(root, "A", "y"), done)
        tree.unlink_pending()
    assert got == [(1, None), (7, None)]
    assert os.listdir(os.path.join(root, "A")) == [] and os.listdir(os.path.join(root, "B")) == ["y"]


def test_a_batch_never_holds_more_folders_open_than_its_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(removal, "BATCH_FDS", 16)
    peak = []
    add = removal.Batch.add

    def counted(self, *args):
        peak.append(len(self.fds))
        return add(self, *args)

    monkeypatch.setattr(removal.Batch, "add", counted)
    root = str(tmp_path)
    got, done = results()
    with fsops.Tree(root) as tree:
        for i in range(6):
            held, marker = os.path.join(root, "trash", f"h{i}"), os.path.join(root, "markers", f"m{i}")
            for j in range(7):
                write(os.path.join(held, f"d{j}", "f"), b"x")
                write(os.path.join(marker, f"d{j}", "f"), b"")
            assert tree.remove_later(held, done, also=[marker]) is None
        tree.unlink_pending()
    assert got == [(7, None)] * 6 and max(peak) <= 16 + 2  # (+ the two parent folders, one descriptor each)


def test_a_revision_killed_while_waiting_for_its_batch_is_finished_with_the_blobs_only_it_used(tmp_path):
    """Killed after its snapshot was set aside and before the batch: the recovery removes what the run would have.

    Its snapshot waits in the trash, whole; the blobs only it linked are still in ``blobs/``
    (they go after the settling time). The recovery finishes the revision, and those blobs
    with it; a blob another revision links stays.
    """
    root = str(tmp_path / "hub")
    old, new = commit("old"), commit("new")
    only_old, shared, only_new = sha256("w-old"), sha256("cfg"), sha256("w-new")
    folder = repo(
        root,
        "models--org--m",
        snapshots={old: {"w.bin": only_old, "sub/config.json": shared}, new: {"w.bin": only_new, "config.json": shared}},
        blobs={only_old: 1000, shared: 10, only_new: 2000},
        refs={"main": new},
    )
    os.makedirs(os.path.join(root, TRASH))
    os.rename(os.path.join(folder, "snapshots", old), os.path.join(root, TRASH, trash_name(folder, old)))
    (cache,) = hfcache.scan([root]).caches
    notes = recover(Inventory(caches=(cache,)))
    assert any("finished removing revision" in n for n in notes), notes
    assert sorted(os.listdir(os.path.join(folder, "blobs"))) == sorted([shared, only_new])
    assert os.listdir(os.path.join(root, TRASH)) == []
