"""Adversarial tests of verify's memos (hfcache.verify.memo): each shows a way a default-output
``hfcache verify`` differs from judging every file (``--json``), crashes, or memoises what it
must not. Each test fails on the code it was written against."""

from __future__ import annotations

import os
import sqlite3

import pytest

from tests.memo_support import MODEL, blob_of, judged_of, memos, pretend_unmoved, view_of, warm
from tests.support import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

COPY = "models--org--copy"


PINNED = "models--org--pinned"


def _renameblob_of(root: str, repo: str, commit: str, name: str, new: str) -> str:
    """The blob behind a snapshot file renamed to ``new`` (a mirror's ETag: no content hash), its link made to follow."""
    link = os.path.join(root, repo, "snapshots", commit, name)
    blob = os.path.realpath(link)
    os.rename(blob, os.path.join(os.path.dirname(blob), new))
    os.remove(link)
    os.symlink(os.path.join("..", "..", "blobs", new), link)
    return link


def test_rot_found_through_a_hard_link_in_another_repo_is_not_hidden_by_this_repos_memo(rich_hub, tmp_path, no_margin, reuses):
    # Two repos hold one content by a hard link (org/copy's blob is org/model@c1's, same name: rdfind,
    # jdupes, hardlink do this). A `verify --full` of one of them (or of another cache root holding the
    # same inode) finds it rotten and records the new digest under the same (dev, ino, size, mtime,
    # ctime); it drops only that repo's memo. The other repo's memo stays valid (its entries did not
    # move), so the default view keeps counting its files ok (exit 0), while judging every file says
    # corrupt from the very digest row the memo stands for (exit 8).
    root, c = rich_hub
    state = str(tmp_path / "state.db")
    shared = blob_of(root, MODEL, c["c1"], "model.safetensors")
    mine = blob_of(root, COPY, os.listdir(os.path.join(root, COPY, "snapshots"))[0], "model.safetensors")
    assert os.path.basename(shared) == os.path.basename(mine)
    os.link(shared, mine + ".tmp")
    os.replace(mine + ".tmp", mine)
    assert {MODEL, COPY} <= warm(root, state, reuses)
    with open(shared, "r+b") as f:
        f.write(b"\0rot")
    pretend_unmoved(state, root, (MODEL, COPY), shared)  # bit rot: no timestamp moved (as test_verify_memo does)
    assert run_cli("verify", "--cache-dir", root, "--state", state, "--full", "--name", "org/copy").exit_code == 8
    text = view_of(root, state, "--name", "org/model")
    judged = judged_of(root, state, "--name", "org/model")
    assert judged[0] == 8 and "corrupt" in judged[2]
    assert text[:3] == judged, (text[:3], judged)


def test_a_failure_of_the_kind_is_not_memoised_as_a_settled_verdict(rich_hub, tmp_path, no_margin, reuses, monkeypatch):
    # When the kind's expected() raises (a transient I/O error, a bug), run._expected turns each
    # revision into one "unverifiable: its kind failed to say" record with algorithm None, which
    # _sound takes for a verdict the layout alone decides: the repo gets a memo with those counts
    # (one file per revision, not its files) and next_due = inf (no ok content), so every later
    # default run repeats "4 unverifiable" for a repo whose 10 files judge ok, until the repo changes.
    from hfcache.caches._common import FunctionKind

    root, _ = rich_hub
    state = str(tmp_path / "state.db")
    real = FunctionKind.expected

    def failing(self, cache, item, rev):
        if item.id == "org/model":
            raise OSError(5, "Input/output error")
        return real(self, cache, item, rev)

    monkeypatch.setattr(FunctionKind, "expected", failing)
    assert "its kind failed to say" in view_of(root, state)[3]
    monkeypatch.setattr(FunctionKind, "expected", real)  # the failure passed
    text = view_of(root, state)
    assert text[:3] == judged_of(root, state), text[3]


@pytest.mark.parametrize("to", ["the shared store", "another repo"])
def test_a_repo_whose_blob_links_out_of_it_is_never_memoised(rich_hub, tmp_path, no_margin, to):
    # memo.py: "A repo with anything odd is never memoised: ... a link into the shared store or out
    # of the repo". _memo_of enforces that only through the identity of ok files; a file whose blob
    # name is no content hash (a mirror's ETag) is unverifiable with algorithm None, never checked,
    # so a repo whose such blob is a symlink into <root>/blobs/xx/<hash> (hub >= 1.32) or into another
    # repo's blobs/ gets a memo, and later runs leave it out of the scan (its store link unseen).
    from tests.support import publish

    root, c = rich_hub
    state = str(tmp_path / "state.db")
    link = _renameblob_of(root, PINNED, c["pinned"], "w.bin", "5f3a-1b2c")
    if to == "the shared store":
        publish(root, link, "a1" * 32, os.path.getsize(link))
    else:
        blob = os.path.join(root, PINNED, "blobs", "5f3a-1b2c")
        other = blob_of(root, COPY, os.listdir(os.path.join(root, COPY, "snapshots"))[0], "model.safetensors")
        os.remove(blob)
        os.symlink(os.path.relpath(other, os.path.dirname(blob)), blob)
    assert os.path.islink(os.path.join(root, PINNED, "blobs", "5f3a-1b2c"))
    assert view_of(root, state)[0] == 0
    assert "models--org--moving" in memos(state)  # memos are made (the others are sound)
    assert PINNED not in memos(state)


@pytest.mark.parametrize(
    "column, value",
    [
        ("path", "CAST(path || x'00' AS BLOB)"),  # unchanged(): os.lstat raises ValueError (embedded null byte)
        ("counts", "'{\"ok\": 1e400}'"),  # state.memos(): int(inf) raises OverflowError
        ("counts", "'" + "[" * 100000 + "'"),  # state.memos(): json.loads raises RecursionError
    ],
)
def test_a_memo_row_edited_to_nonsense_is_ignored_not_a_crash(rich_hub, tmp_path, no_margin, reuses, column, value):
    # state.memos() skips a row that does not read back whole only on ValueError, TypeError and
    # AttributeError, and memo.unchanged() catches only OSError: these rows crash the run (exit 70).
    root, _ = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    with sqlite3.connect(state) as db:
        db.execute(f"UPDATE verify_memos SET {column} = {value} WHERE path = ?", (os.fsencode(os.path.join(root, MODEL)),))
    try:
        text = view_of(root, state)
    except Exception as e:  # noqa: BLE001 - run_cli re-raises what the command did not turn into an exit code
        pytest.fail(f"verify crashed: {type(e).__name__}: {e}")
    assert text[:3] == judged_of(root, state)
