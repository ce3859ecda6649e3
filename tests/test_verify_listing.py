"""``hfcache verify`` on what its scan read (``listing=True``) and the second stat after the reads.

The scan lists each revision's files and stats each blob once; ``verify`` then neither walks
the snapshots again nor stats the blobs before deciding what to read. On a cache of every odd
entry the hub layout meets, the listing must give exactly the records and the report the walk
gives. And a blob gone or replaced while a run reads must still not be ``ok``.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from hfcache.caches.huggingface.files import revision_hashes
from hfcache.caches.registry import KINDS
from hfcache.caches.scan import scan_caches
from hfcache.verify import run as run_mod
from hfcache.verify.run import FileCheck, identity, verify
from hfcache.verify.state import State

C1, C2 = "1" * 40, "2" * 40


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _write(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _link(snapshot: str, name: str, target: str) -> None:
    path = os.path.join(snapshot, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)


def _odd_cache(root: str) -> dict[str, str]:
    """A hub cache with every odd entry: nested folders, copies, links out, mirror ETags, a dangling link, ..."""
    repo = os.path.join(root, "models--org--odd")
    blobs = os.path.join(repo, "blobs")
    weights, config, deep, bad = b"weights" * 100, b'{"a": 1}', b"deep" * 50, b"corrupt me" * 10
    w, c, d = _sha256(weights), _git(config), _sha256(deep)
    _write(os.path.join(blobs, w), weights)
    _write(os.path.join(blobs, c), config)
    _write(os.path.join(blobs, d), deep)
    corrupt = _sha256(bad)
    _write(os.path.join(blobs, corrupt), b"not what its name says" * 5)
    _write(os.path.join(blobs, "a-mirror-etag"), b"from a mirror")
    _write(os.path.join(repo, "stash", "elsewhere.bin"), b"beside the blobs")
    linked = _sha256(b"through a link")  # a blob that is itself a link (the shared store's way): stat'ed by the verify
    _write(os.path.join(repo, "stash", "payload"), b"through a link")
    os.symlink("../stash/payload", os.path.join(blobs, linked))
    for commit in (C1, C2):
        snap = os.path.join(repo, "snapshots", commit)
        _link(snap, "model.safetensors", f"../../blobs/{w}")
        _link(snap, "config.json", f"../../blobs/{c}")
        _link(snap, "sub/deeper/w.bin", f"../../../../blobs/{d}")
    snap = os.path.join(repo, "snapshots", C1)
    _link(snap, "dangling.bin", "../../blobs/" + "f" * 64)
    _link(snap, "mirror.bin", "../../blobs/a-mirror-etag")
    _write(os.path.join(snap, "copy.txt"), b"a copy made without symlinks")
    _write(os.path.join(snap, "sub/copy.bin"), b"another copy")
    _link(snap, "out.bin", "../../stash/elsewhere.bin")
    _link(snap, "roundabout.bin", f"../../blobs/../blobs/{w}")  # not the hub's prefix: resolved
    _link(snap, "absolute.bin", os.path.join(blobs, d))
    _link(snap, "sub/wrong-depth.bin", f"../../blobs/{w}")  # one ../ short: leads to snapshots/blobs/
    _link(snap, "to-a-folder", "../../blobs")
    _link(snap, "corrupt.bin", f"../../blobs/{corrupt}")
    _link(snap, "through-a-link.bin", f"../../blobs/{linked}")
    os.mkfifo(os.path.join(snap, "a-fifo"))  # neither a file nor a link: no file of the revision
    _write(os.path.join(repo, "refs", "main"), C2.encode())
    # Another repo holding the same weights as a hard link: one content, read once.
    other = os.path.join(root, "models--org--other")
    os.makedirs(os.path.join(other, "blobs"))
    os.link(os.path.join(blobs, w), os.path.join(other, "blobs", w))
    _link(os.path.join(other, "snapshots", C1), "model.safetensors", f"../../blobs/{w}")
    _write(os.path.join(other, "refs", "main"), C1.encode())
    # Enough plain repos for the scan to fork workers (jobs=2: 16 repos a worker at least).
    for n in range(40):
        data = b"small %d" % n
        plain = os.path.join(root, f"datasets--org--plain{n}")
        _write(os.path.join(plain, "blobs", _git(data)), data)
        _link(os.path.join(plain, "snapshots", C1), "data/part.txt", f"../../../blobs/{_git(data)}")
        _write(os.path.join(plain, "refs", "main"), C1.encode())
    return {"weights": os.path.join(blobs, w), "deep": os.path.join(blobs, d), "linked": os.path.join(blobs, linked)}


def _report(root: str, state: str, *, listing: bool, jobs: int = 1) -> list[FileCheck]:
    inventory = scan_caches([root], ledger=not listing, listing=listing, jobs=jobs)
    assert (inventory.caches[0].listing is not None) == listing
    report = verify(inventory, kinds=KINDS, state=State(state))
    return [f._replace(hashed_at=None) for c in report.caches for f in c.files]


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_scans_listing_gives_exactly_the_records_and_the_report_of_a_walk(tmp_path, jobs):
    root = str(tmp_path / "hub")
    _odd_cache(root)
    listed = scan_caches([root], listing=True, jobs=jobs).caches[0]
    walked = scan_caches([root]).caches[0]
    assert listed.items == walked.items  # the listing changes nothing else the scan says
    assert listed.listing is not None and walked.listing is None
    checked = 0
    for item in listed.items:
        for rev in item.revisions:
            from_listing = revision_hashes(listed, item, rev)
            assert [e._replace(seen=None) for e in from_listing] == revision_hashes(walked, item, rev)
            for e in from_listing:
                if e.seen is not None:  # the scan's look at a plain blob: what a stat says
                    assert e.data is not None and e.seen == identity(os.stat(e.data))
                    checked += 1
    assert checked > 40
    odd = next(i for i in listed.items if i.id == "org/odd")
    c1 = next(r for r in odd.revisions if r.revision == C1)
    why = {e.name: (e.algorithm, e.why) for e in revision_hashes(listed, odd, c1)}
    assert set(why) == {
        "model.safetensors",
        "config.json",
        "sub/deeper/w.bin",
        "dangling.bin",
        "mirror.bin",
        "copy.txt",
        "sub/copy.bin",
        "out.bin",
        "roundabout.bin",
        "absolute.bin",
        "sub/wrong-depth.bin",
        "to-a-folder",
        "corrupt.bin",
        "through-a-link.bin",
    }
    assert why["config.json"][0] == "git-sha1" and why["roundabout.bin"][0] == why["absolute.bin"][0] == "sha256"
    assert "mirror" in str(why["mirror.bin"][1]) and "without symlinks" in str(why["sub/copy.bin"][1])
    assert "out of the repo's blobs" in str(why["out.bin"][1]) and "out of the repo's blobs" in str(why["to-a-folder"][1])

    for state in ("first", "repeat"):  # the first run reads every content, the second none
        by_listing = _report(root, str(tmp_path / "listing.db"), listing=True, jobs=jobs)
        by_walk = _report(root, str(tmp_path / "walk.db"), listing=False)
        assert by_listing == by_walk, state
        assert {f.hashed for f in by_listing if f.status == "ok"} == {state == "first"}
    status = {(f.id, f.revision, f.name): f.status for f in by_listing if f.id == "org/odd"}
    assert status[("org/odd", C1, "dangling.bin")] == "missing"
    assert status[("org/odd", C1, "corrupt.bin")] == "corrupt"
    assert status[("org/odd", C1, "through-a-link.bin")] == "ok"
    assert status[("org/odd", C1, "sub/wrong-depth.bin")] == "unverifiable"


def _stats_of(root: str, monkeypatch) -> list[str]:
    """The paths under ``root`` that ``os.stat`` is asked about from now on."""
    asked: list[str] = []
    real = os.stat

    def counting(path, *args, **kwargs):
        if isinstance(path, str) and path.startswith(root):
            asked.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting)
    return asked


def test_a_repeat_run_that_reads_nothing_stats_no_blob_after_the_scan_and_once_without_a_listing(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    blobs = _odd_cache(root)
    state = str(tmp_path / "s.db")
    verify(scan_caches([root], listing=True), kinds=KINDS, state=State(state))
    inventory = scan_caches([root], listing=True)
    asked = _stats_of(root, monkeypatch)
    report = verify(inventory, kinds=KINDS, state=State(state))
    assert report.files_hashed == 0 and report.problems == 2  # the dangling link and the corrupt blob, as found before
    assert blobs["weights"] not in asked  # the scan's look was enough
    assert set(asked) == {blobs["linked"], os.path.join(os.path.dirname(blobs["linked"]), "f" * 64)}  # what the scan did not stat
    monkeypatch.undo()
    inventory = scan_caches([root])  # no listing (the library's scan): the verify stats each blob, once
    asked = _stats_of(root, monkeypatch)
    assert verify(inventory, kinds=KINDS, state=State(state)).problems == 2
    assert asked.count(blobs["weights"]) == 1


def test_a_blob_gone_or_replaced_while_others_are_read_is_never_ok(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    blobs = _odd_cache(root)
    state = str(tmp_path / "s.db")
    verify(scan_caches([root], listing=True), kinds=KINDS, state=State(state))
    with open(blobs["deep"], "ab") as f:  # changed: read again by the next run
        f.write(b"!")
    inventory = scan_caches([root], listing=True)  # the weights and the deep blob as they are now
    real_hash = run_mod.hash_file

    def hash_then_swap(path, families):
        digest = real_hash(path, families)
        replacement = blobs["weights"] + ".new"
        with open(replacement, "wb") as f:
            f.write(b"weights" * 100)  # the same bytes, another file: not the content this run looked at
        os.replace(replacement, blobs["weights"])
        return digest

    monkeypatch.setattr(run_mod, "hash_file", hash_then_swap)
    report = verify(inventory, kinds=KINDS, state=State(state))
    assert report.files_hashed == 1
    status = {(f.id, f.name): (f.status, f.why) for c in report.caches for f in c.files if f.revision == C1}
    assert status[("org/odd", "model.safetensors")] == ("unverifiable", "changed while verified")
    assert status[("org/odd", "sub/deeper/w.bin")][0] == "corrupt"  # read: its digest no longer matches its name

    # Gone while another is read: missing, though its digest was known and the scan saw it.
    with open(blobs["deep"], "ab") as f:
        f.write(b"!")
    inventory = scan_caches([root], listing=True)
    other = os.path.join(root, "models--org--other", "blobs", os.path.basename(blobs["weights"]))

    def hash_then_remove(path, families):
        if os.path.exists(other):
            os.remove(other)
        return real_hash(path, families)

    monkeypatch.setattr(run_mod, "hash_file", hash_then_remove)
    report = verify(inventory, kinds=KINDS, state=State(state))
    status = {(f.id, f.name): (f.status, f.why) for c in report.caches for f in c.files if f.revision == C1}
    assert status[("org/other", "model.safetensors")] == ("missing", "its data is gone (No such file or directory)")
    assert report.files_hashed == 2 and status[("org/odd", "model.safetensors")][0] == "ok"  # the swapped-in weights, read


def test_a_run_whose_scan_is_not_fresh_stats_every_blob_again_though_it_reads_nothing(tmp_path):
    root = str(tmp_path / "hub")
    blobs = _odd_cache(root)
    state = str(tmp_path / "s.db")
    verify(scan_caches([root], listing=True), kinds=KINDS, state=State(state))
    inventory = scan_caches([root], listing=True, now=1_000_000.0)  # as if scanned long ago
    os.remove(blobs["weights"])  # gone since
    report = verify(inventory, kinds=KINDS, state=State(state))
    assert report.files_hashed == 0
    status = {(f.id, f.name): f.status for c in report.caches for f in c.files if f.revision == C1}
    assert status[("org/odd", "model.safetensors")] == "missing"
    assert status[("org/other", "model.safetensors")] == "ok"  # its hard link holds the same content still


def test_a_blob_written_in_place_while_others_are_read_is_never_ok(tmp_path, monkeypatch):
    """Same inode, new bytes (a resumed download, a tool writing through it): its known digest is of another content."""
    root = str(tmp_path / "hub")
    blobs = _odd_cache(root)
    state = str(tmp_path / "s.db")
    verify(scan_caches([root], listing=True), kinds=KINDS, state=State(state))
    with open(blobs["deep"], "ab") as f:  # changed: read again by the next run, so the run takes its time
        f.write(b"!")
    inventory = scan_caches([root], listing=True)
    real_hash = run_mod.hash_file

    def hash_then_write(path, families):
        digest = real_hash(path, families)
        with open(blobs["weights"], "r+b") as f:  # the same inode, one byte flipped, a moment later
            first = f.read(1)
            f.seek(0)
            f.write(bytes([first[0] ^ 1]))
        return digest

    monkeypatch.setattr(run_mod, "hash_file", hash_then_write)
    report = verify(inventory, kinds=KINDS, state=State(state))
    status = {(f.id, f.name): (f.status, f.why) for c in report.caches for f in c.files if f.revision == C1}
    assert status[("org/odd", "model.safetensors")] == ("unverifiable", "changed while verified")
