"""Review of verify's memos (hfcache.verify.memo): each test shows a way a default-output ``hfcache verify``
differs from judging every file (``--json``), or breaks a promise of the verify. Each fails on the code reviewed."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from tests.memo_support import MODEL, blob_of, judged_of, rot, view_of, warm
from tests.support import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

PINNED = "models--org--pinned"


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_a_memoised_repo_removed_while_other_files_are_read_is_not_reported_ok(
    rich_hub, tmp_path, no_margin, reuses, monkeypatch, args
):
    # run._found_now: "A run that read something took time (hours for a big first run): a blob
    # deleted or replaced meanwhile, read or not, must not be reported ok" - every judged path is
    # stat'ed again after the reads. A repo counted from its memo was looked at once, when the scan
    # began, and never again: a prune (or rm) taking it out while the run reads another repo's new
    # 100 GB blob leaves its files counted ok (exit 0), where judging every file says missing (exit 8).
    import hfcache.verify.run as run_mod

    root, c = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    os.utime(blob_of(root, PINNED, c["pinned"], "w.bin"))  # another repo has something to read again
    real, done = run_mod._hash, []

    def read_while_a_prune_runs(content):
        if not done:
            done.append(True)
            shutil.rmtree(os.path.join(root, MODEL))  # what `hfcache prune` does to a whole repo
        return real(content)

    monkeypatch.setattr(run_mod, "_hash", read_while_a_prune_runs)
    result = run_cli("verify", "--cache-dir", root, "--state", state, *args)
    assert done
    if args:  # every file judged: those of the repo removed meanwhile are missing
        assert result.exit_code == 8, result.output
    else:  # the memo'd repo changed during the run: the whole run judged anew, the repo gone (no longer "14 ok")
        assert result.exit_code == 0 and ": 7 files: 7 ok" in result.stdout, result.output


@pytest.mark.parametrize(
    "column, value, why",
    [
        # state._memo checks each count is an int >= 0, not that it fits: the memo is used (its identities
        # are unchanged), and record_run writes the cache's total, an int SQLite cannot hold (OverflowError,
        # not a sqlite3.Error: not caught).
        ("counts", "'{\"ok\": 100000000000000000000}'", "a count over 2**63"),
        # keep_memos(rotten=...): state._holds reads every row's contents with bytes(...), which raises
        # TypeError for a TEXT value (it catches only ValueError); reached when any content is found corrupt.
        ("contents", "'not a blob'", "contents stored as text, then a corrupt file found"),
    ],
)
def test_a_memo_row_edited_to_nonsense_never_gives_a_traceback(rich_hub, tmp_path, no_margin, reuses, column, value, why):
    root, c = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    with sqlite3.connect(state) as db:
        db.execute(f"UPDATE verify_memos SET {column} = {value} WHERE path = ?", (os.fsencode(os.path.join(root, MODEL)),))
    args: tuple[str, ...] = ()
    if column == "contents":
        with open(blob_of(root, PINNED, c["pinned"], "w.bin"), "r+b") as f:  # a corrupt content elsewhere
            f.write(b"\0rot")
        args = ("--name", "org/pinned")  # (org/model not judged: its row is not replaced first)
    try:
        result = run_cli("verify", "--cache-dir", root, "--state", state, *args)
    except Exception as e:  # noqa: BLE001 - run_cli re-raises what the command did not turn into an exit code
        pytest.fail(f"verify crashed ({why}): {type(e).__name__}: {e}")
    assert result.exit_code in (0, 8), result.output


def test_rot_found_while_another_writer_holds_the_state_database_is_not_hidden_by_the_old_memo(
    rich_hub, tmp_path, no_margin, reuses, monkeypatch
):
    # The digest found corrupt is committed in one transaction (State.remember), the memo holding it is
    # dropped in later ones (record_run, keep_memos). When those fail (another verify or a prune holding
    # the database past the busy timeout; or the run killed in between: the memos of a big cache are
    # walked after remember), the digests say corrupt and the memo still says ok: every later default
    # run counts the repo ok from its memo (exit 0) while judging every file says corrupt (exit 8).
    import hfcache.verify.state as vstate

    root, c = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    rot(state, root, c["c3"])  # bit rot: no timestamp moved
    real, holders = vstate.State.remember, []

    def remember_then_another_writer(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.db.execute("PRAGMA busy_timeout = 50")  # (the real one is 10 s)
        other = sqlite3.connect(state, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a concurrent verify's or prune's write
        holders.append(other)

    monkeypatch.setattr(vstate.State, "remember", remember_then_another_writer)
    assert run_cli("verify", "--cache-dir", root, "--state", state, "--full").exit_code == 8
    for other in holders:
        other.rollback()
        other.close()
    monkeypatch.setattr(vstate.State, "remember", real)
    text = view_of(root, state)  # first: a --json run judges the repo and drops its memo
    judged = judged_of(root, state)
    assert judged[0] == 8
    assert text[:3] == judged, text[3]


def test_a_verify_finishing_after_one_that_found_rot_does_not_put_the_memo_back(
    rich_hub, tmp_path, no_margin, reuses, monkeypatch
):
    # Two verifies at once (cron's and a user's `--full`): the first read the digests when it began,
    # judges org/model ok from them (it was walked: a ref folder moved), and while it reads another
    # repo's file the --full run finds org/model's blob rotten, records the digest and drops the memo.
    # The first then stores its memo of org/model (INSERT OR REPLACE, nothing checks the digests it
    # stood on are still those in the database): every later default run counts org/model ok, while
    # judging every file says corrupt.
    import subprocess
    import sys

    import hfcache.verify.run as run_mod

    root, c = rich_hub
    state = str(tmp_path / "state.db")
    assert MODEL in warm(root, state, reuses)
    rot(state, root, c["c3"])  # bit rot: no timestamp moved
    scratch = os.path.join(root, MODEL, "refs", "scratch")
    open(scratch, "w").close()
    os.remove(scratch)  # org/model's refs folder moved: walked (and judged from the digests) by the next run
    os.utime(blob_of(root, PINNED, c["pinned"], "w.bin"))  # and something to read there
    real, done = run_mod._hash, []

    def read_while_another_verify_runs(content):
        if not done:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
            other = subprocess.run(
                [sys.executable, "-m", "hfcache", "verify", "--cache-dir", root, "--state", state, "--full"],
                env=env,
                capture_output=True,
                text=True,
            )
            done.append(other)
        return real(content)

    monkeypatch.setattr(run_mod, "_hash", read_while_another_verify_runs)
    assert run_cli("verify", "--cache-dir", root, "--state", state).exit_code == 0  # judged on the digests it read
    assert done and done[0].returncode == 8, done and done[0].stdout + done[0].stderr
    monkeypatch.setattr(run_mod, "_hash", real)
    text = view_of(root, state)  # first: a --json run judges the repo and drops its memo
    judged = judged_of(root, state)
    assert judged[0] == 8
    assert text[:3] == judged, text[3]
