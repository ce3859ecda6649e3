"""A repeat verify counts an unchanged repo from its memo (hfcache.verify.memo), and never where judging it would differ.

Each test builds a hub cache with the real client (FakeHub), runs ``hfcache verify`` (the
default view: what cron runs) until memos are made, changes the cache, and compares the next
run with one that judges every file (``--json`` never uses memos): the same counts and exit
code, and the changed repo walked again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

import hfcache.verify.memo as memo_mod
from tests.memo_support import MODEL, blob_of, hits, judged_of, memos, rot, view_of, warm
from tests.support import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def test_an_unchanged_repo_is_counted_from_its_memo_with_the_same_verdicts(rich_hub, tmp_path, no_margin, reuses):
    root, _ = rich_hub
    state = str(tmp_path / "state.db")
    first = view_of(root, state)
    assert first[0] == 0 and "ok" in first[2]
    assert memos(state) == {n for n in os.listdir(root) if "--" in n}  # every repo of a sound cache
    hits = warm(root, state, reuses)
    assert hits == memos(state)
    assert view_of(root, state)[:3] == judged_of(root, state)
    assert "unchanged since an earlier verify" in view_of(root, state)[3]


@pytest.mark.parametrize(
    "change",
    [
        "flip a byte (times set back)",
        "truncate a blob",
        "remove a blob",
        "remove a link",
        "point a link at another blob",
        "rewrite a ref in place",
        "add a revision",
        "add a file to a revision",
        "replace the blobs folder",
    ],
)
def test_a_change_makes_the_repo_walked_again_and_the_verdicts_are_those_of_judging_it(
    rich_hub, tmp_path, no_margin, reuses, change
):
    root, c = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    repo = os.path.join(root, MODEL)
    blob = blob_of(root, MODEL, c["c3"], "model.safetensors")
    link = os.path.join(repo, "snapshots", c["c3"], "model.safetensors")
    if change == "flip a byte (times set back)":
        st = os.stat(blob)
        with open(blob, "r+b") as f:
            f.seek(10)
            byte = f.read(1)
            f.seek(10)
            f.write(bytes([byte[0] ^ 1]))
        os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime back: only the ctime tells
    elif change == "truncate a blob":
        os.truncate(blob, 10)
    elif change == "remove a blob":
        os.remove(blob)
    elif change == "remove a link":
        os.remove(link)
    elif change == "point a link at another blob":
        other = os.readlink(os.path.join(repo, "snapshots", c["c1"], "unet", "diffusion_pytorch_model.bin"))
        os.symlink(os.path.join("..", "..", "blobs", os.path.basename(other)), link + ".new")
        os.replace(link + ".new", link)
    elif change == "rewrite a ref in place":
        ref = os.path.join(repo, "refs", "main")
        with open(ref, "r+") as f:  # the hub writes refs in place: same size, the folder does not move
            f.write(c["c1"])
    elif change == "add a revision":
        snap = os.path.join(repo, "snapshots", "f" * 40)
        os.makedirs(snap)
        os.symlink(os.path.join("..", "..", "blobs", "0" * 64), os.path.join(snap, "gone.bin"))
    elif change == "add a file to a revision":
        os.symlink(os.readlink(link), os.path.join(repo, "snapshots", c["c3"], "copy.safetensors"))
    elif change == "replace the blobs folder":
        blobs = os.path.join(repo, "blobs")
        os.rename(blobs, blobs + ".old")
        os.mkdir(blobs)
        for name in os.listdir(blobs + ".old"):
            os.link(os.path.join(blobs + ".old", name), os.path.join(blobs, name))
        os.rename(blobs + ".old", os.path.join(str(tmp_path), "old-blobs"))
    text = view_of(root, state)
    assert MODEL not in hits(reuses), change
    judged = judged_of(root, state)
    assert text[:3] == judged, (change, text[3])
    # and a memo is kept only of a sound repo: the next run judges a damaged one again, and says the same
    assert view_of(root, state)[:3] == judged
    if judged[0] == 8:
        assert MODEL not in memos(state)


@pytest.mark.parametrize("full", [("--full",), ("--full", "--json")])
def test_rot_found_by_full_is_reported_by_the_next_run_not_the_old_memo(rich_hub, tmp_path, no_margin, reuses, full):
    root, c = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    rot(state, root, c["c3"])  # bit rot: no timestamp moved
    assert view_of(root, state)[0] == 0  # trusted, as any file unchanged by its timestamps is
    assert MODEL in hits(reuses)
    assert run_cli("verify", "--cache-dir", root, "--state", state, *full).exit_code == 8
    assert MODEL not in memos(state)
    again = view_of(root, state)
    assert again[0] == 8 and "1 corrupt" in again[2]
    assert MODEL not in hits(reuses)


def test_a_memo_is_not_used_once_a_content_is_due_to_be_read_again(rich_hub, tmp_path, no_margin, reuses, monkeypatch):
    root, _ = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    later = time.time() + 31 * 86400
    monkeypatch.setattr(time, "time", lambda: later)
    code, files, words, _ = view_of(root, state)
    assert code == 0 and not hits(reuses)  # walked and judged again (verify's own clock decides what it reads)


def test_what_changed_during_the_scan_or_just_before_it_gets_no_memo(rich_hub, tmp_path, reuses, monkeypatch):
    root, c = rich_hub
    state = str(tmp_path / "state.db")
    ref = os.path.join(root, MODEL, "refs", "main")
    os.utime(ref)  # a moment ago: within the margin of the next scan
    assert view_of(root, state)[0] == 0
    assert MODEL not in memos(state)  # its ref changed a moment before the scan: it may change again unseen
    # A change while the repo is looked at for its memo (after the scan): ctime after the scan's start. (A
    # margin of 50 ms, over the file system clock's tick, which may lag time.time() by a few ms; the rest older.)
    monkeypatch.setattr(memo_mod, "MARGIN", 0.05)
    time.sleep(0.1)
    real_take = memo_mod.take

    def take(folder, before):
        if folder.endswith(MODEL):
            with open(ref, "r+") as f:
                f.write(c["c1"])
        return real_take(folder, before)

    monkeypatch.setattr(memo_mod, "take", take)
    assert view_of(root, state)[0] == 0
    assert MODEL not in memos(state)
    assert "models--org--pinned" in memos(state)


def test_memos_are_not_used_when_every_file_is_listed_or_judged(rich_hub, tmp_path, no_margin, reuses):
    root, c = rich_hub
    state = str(tmp_path / "state.db")
    assert warm(root, state, reuses)
    for args in (("--json",), ("--all",), ("--full",), ("--revision", c["c3"])):
        reuses.clear()
        result = run_cli("verify", "--cache-dir", root, "--state", state, *args)
        assert result.exit_code == 0, (args, result.output)
        assert not reuses, args
    reuses.clear()
    code, files, words, _ = view_of(root, state, "--name", "org/model")
    assert hits(reuses) == {MODEL} and code == 0
    result = run_cli("verify", "--cache-dir", root, "--state", state, "--name", "org/model", "--json")
    assert files == len(json.loads(result.stdout)["caches"][0]["files"])


def test_a_mount_on_a_memoised_repo_makes_it_walked_again(rich_hub, tmp_path, no_margin, reuses, mounts):
    root, c = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.safetensors").write_bytes(b"not the model")
    mounts.bind(str(elsewhere), os.path.join(root, MODEL, "snapshots", c["c3"]))
    text = view_of(root, state)
    assert MODEL not in hits(reuses)
    assert text[:3] == judged_of(root, state)


def test_a_repo_with_something_odd_is_never_memoised(rich_hub, tmp_path, no_margin):
    root, _ = rich_hub
    state = str(tmp_path / "state.db")
    partial = os.path.join(root, MODEL, "blobs", "a" * 64 + ".incomplete")
    with open(partial, "wb") as f:
        f.write(b"half")
    orphan = os.path.join(root, "models--org--moving", "blobs", "b" * 64)
    with open(orphan, "wb") as f:
        f.write(b"nobody links me")
    assert view_of(root, state)[0] == 0
    assert MODEL not in memos(state) and "models--org--moving" not in memos(state)
    assert "models--org--pinned" in memos(state)


def test_a_damaged_memo_row_is_ignored(rich_hub, tmp_path, no_margin, reuses):
    root, _ = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    with sqlite3.connect(state) as db:
        db.execute("UPDATE verify_memos SET ident = x'0102', counts = 'nonsense'")
    text = view_of(root, state)
    assert not hits(reuses) and text[:3] == judged_of(root, state)
    assert MODEL in memos(state)  # made again


def test_a_real_download_between_two_runs_is_judged_and_a_corrupt_one_found(tmp_path, no_margin, reuses):
    """The real client adding a revision (a link to a new blob, a link reusing an old one, refs/main moved)
    and then a download going wrong: the next run walks the repo, and says what judging every file says."""
    from tests.fakehub import FakeHub
    from tests.support import get, payload

    root = os.path.realpath(str(tmp_path / "hub"))
    state = str(tmp_path / "state.db")
    with FakeHub() as hub:
        hub.push("org/model", {"config.json": b'{"v": 1}', "model.safetensors": payload(3000, 1)})
        for name in ("config.json", "model.safetensors"):
            get(hub, root, "org/model", name)
        hub.push("org/other", {"w.bin": payload(1000, 2)})
        get(hub, root, "org/other", "w.bin")
        assert MODEL in warm(root, state, reuses)
        c2 = hub.push("org/model", {"config.json": b'{"v": 2}'})  # model.safetensors unchanged: its blob reused
        for name in ("config.json", "model.safetensors"):
            get(hub, root, "org/model", name)
    assert os.path.isdir(os.path.join(root, MODEL, "snapshots", c2))
    text = view_of(root, state)
    assert MODEL not in hits(reuses) and "models--org--other" in hits(reuses)
    assert text[:3] == judged_of(root, state) and text[0] == 0 and text[1] == 5
    blob = blob_of(root, MODEL, c2, "config.json")  # a download gone wrong: the new blob's bytes damaged
    with open(blob, "r+b") as f:
        f.write(b"X")
    text = view_of(root, state)
    assert text[0] == 8 and text[:3] == judged_of(root, state)
