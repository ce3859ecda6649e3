"""The prune lock (issue 15, item 10): one prune at a time per cache, for every account that can write it.

The lock is an ``flock`` on a file that is never deleted. An account that cannot open an
existing lock file for writing (another account made it, in another group, or mode 0644)
opens it read-only, which ``flock`` accepts, so one account's lock file never blocks the
others for good. The tests that switch accounts need root; they skip elsewhere, except
under ``CI=true`` where they must run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from hfcache import interrupt
from hfcache.errors import CacheBusy
from hfcache.execute.prune_lock import PruneLocks

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="switching accounts needs root (CI runs these as root)",
)

ACCOUNT_A, ACCOUNT_B, GROUP_C = 4242, 4343, 4444  # no names needed: numeric ids are enough for the kernel
NOBODY = 65534

# A child that takes the lock, says what happened as one JSON line, holds it until its stdin
# closes, then releases it. Arguments: uid gid groups root lock wait. It starts as the
# parent's account (the interpreter may live where other accounts cannot reach it, such as
# /root), loads everything, then drops to ``uid``/``gid`` before it touches the lock.
HOLDER = """
import json, os, sys
from hfcache import interrupt
from hfcache.errors import CacheBusy
from hfcache.execute.prune_lock import PruneLocks
uid, gid = int(sys.argv[1]), int(sys.argv[2])
groups = [int(g) for g in sys.argv[3].split(",") if g]
root, lock, wait = sys.argv[4], sys.argv[5], float(sys.argv[6])
if uid >= 0:
    import tempfile  # once as the parent's account, so that whatever the lock imports late is loaded
    with tempfile.TemporaryDirectory() as scratch, PruneLocks({scratch: os.path.join(scratch, "l")}, 0):
        pass
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    assert os.geteuid() == uid != 0
os.umask(0o022)
try:
    with PruneLocks({root: lock}, wait) as locks:
        print(json.dumps({"taken": root not in locks.failed, "failed": locks.failed, "waited": locks.waited}), flush=True)
        sys.stdin.read()
except CacheBusy as e:
    print(json.dumps({"busy": str(e)}), flush=True)
"""


class LockHolder:
    """``HOLDER`` in a child process; ``uid=-1`` keeps the test's own account."""

    def __init__(self, root: str, lock: str, *, uid: int = -1, gid: int = -1, groups: tuple[int, ...] = (), wait: float = 0):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(uid), str(gid), ",".join(map(str, groups)), root, lock, str(wait)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line, self.proc.communicate()
        self.said = json.loads(line)

    def release(self) -> None:
        out, err = self.proc.communicate("", timeout=30)
        assert self.proc.returncode == 0, (out, err)


@pytest.fixture
def shared():
    """A cache root every account can reach and write (pytest's own tmp_path is root's, mode 0700)."""
    top = tempfile.mkdtemp(prefix="hfcache-locks-")
    os.chmod(top, 0o755)
    root = os.path.join(top, "hub")
    os.makedirs(os.path.join(root, ".locks"))
    for folder in (root, os.path.join(root, ".locks")):
        os.chmod(folder, 0o777)  # no setgid group: the case that used to lock accounts out
    yield root
    shutil.rmtree(top)


def lock_of(root: str) -> str:
    return os.path.join(root, ".locks", "hfcache-prune.lock")


# ---------------------------------------------------------------------------------------------
# Between accounts (root only)


@ROOT_ONLY
def test_a_lock_file_made_by_another_account_does_not_lock_this_one_out(shared):
    lock = lock_of(shared)
    with open(lock, "w"):
        pass
    os.chown(lock, NOBODY, NOBODY)
    os.chmod(lock, 0o644)  # another account's file, in its own group, not writable by anyone else

    b = LockHolder(shared, lock, uid=ACCOUNT_B, gid=ACCOUNT_B, wait=5)
    assert b.said == {"taken": True, "failed": {}, "waited": False}  # read-only descriptor, real flock
    try:
        with pytest.raises(CacheBusy, match="another hfcache prune is running"):  # and it excludes others
            with PruneLocks({shared: lock}, wait=0):
                pass
    finally:
        b.release()
    with PruneLocks({shared: lock}, wait=0) as locks:
        assert not locks.failed and not locks.waited
    st = os.stat(lock)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o644)  # left as it was


@ROOT_ONLY
def test_two_accounts_exclude_each_other(shared):
    lock = lock_of(shared)
    a = LockHolder(shared, lock, uid=ACCOUNT_A, gid=ACCOUNT_A)  # creates the lock file
    try:
        assert a.said["taken"]
        st = os.stat(lock)
        assert st.st_uid == ACCOUNT_A and stat.S_IMODE(st.st_mode) == 0o664  # group-writable despite umask 022
        started = time.monotonic()
        b = LockHolder(shared, lock, uid=ACCOUNT_B, gid=ACCOUNT_B, wait=0.5)
        assert "busy" in b.said and "still held after 0.5s" in b.said["busy"]
        assert time.monotonic() - started >= 0.5
        b.release()
    finally:
        a.release()
    b = LockHolder(shared, lock, uid=ACCOUNT_B, gid=ACCOUNT_B)
    assert b.said == {"taken": True, "failed": {}, "waited": False}
    b.release()
    assert os.path.exists(lock)


@ROOT_ONLY
def test_a_new_lock_file_takes_the_cache_folders_group_where_permitted(shared):
    locks_dir = os.path.join(shared, ".locks")
    os.chown(locks_dir, 0, GROUP_C)  # the cache's group, but no setgid bit on the folder
    lock = lock_of(shared)
    a = LockHolder(shared, lock, uid=ACCOUNT_A, gid=ACCOUNT_A, groups=(GROUP_C,))  # a member of the cache's group
    a.release()
    st = os.stat(lock)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (ACCOUNT_A, GROUP_C, 0o664)

    os.unlink(lock)
    b = LockHolder(shared, lock, uid=ACCOUNT_B, gid=ACCOUNT_B)  # not a member: keeps its own group, still works
    assert b.said["taken"]
    b.release()
    assert os.stat(lock).st_gid == ACCOUNT_B
    a = LockHolder(shared, lock, uid=ACCOUNT_A, gid=ACCOUNT_A, groups=(GROUP_C,))  # ... and does not lock A out
    assert a.said["taken"]
    a.release()

    # A missing .locks/ is made with the root's group too (root may give any group).
    shutil.rmtree(locks_dir)
    os.chown(shared, 0, GROUP_C)
    with PruneLocks({shared: lock}, wait=0) as locks:
        assert not locks.failed
    assert os.stat(locks_dir).st_gid == GROUP_C and os.stat(lock).st_gid == GROUP_C


# ---------------------------------------------------------------------------------------------
# Any account


def test_two_processes_exclude_each_other_and_the_second_gives_up_busy(tmp_path):
    root = str(tmp_path / "hub")
    os.makedirs(root)
    lock = lock_of(root)
    holder = LockHolder(root, lock)
    try:
        assert holder.said == {"taken": True, "failed": {}, "waited": False}
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o664  # group-writable whatever the umask
        second = LockHolder(root, lock, wait=0)  # another process
        assert "busy" in second.said
        second.release()
        locks = PruneLocks({root: lock}, wait=0.3)
        started = time.monotonic()
        with pytest.raises(CacheBusy, match=r"another hfcache prune is running on .* still held after 0\.3s") as busy:
            locks.__enter__()
        assert 0.3 <= time.monotonic() - started < 5
        assert locks.waited and busy.value.exit_code == 75 and busy.value.path == root
    finally:
        holder.release()
    with PruneLocks({root: lock}, wait=0) as locks:
        assert not locks.failed and not locks.waited


def test_a_waiting_prune_takes_the_lock_when_the_other_one_ends(tmp_path):
    root = str(tmp_path / "hub")
    os.makedirs(root)
    lock = lock_of(root)
    holder = LockHolder(root, lock)
    releaser = threading.Timer(0.5, holder.release)
    releaser.start()
    started = time.monotonic()
    try:
        with PruneLocks({root: lock}, wait=30) as locks:
            waited_for = time.monotonic() - started
            assert locks.waited and not locks.failed
    finally:
        releaser.join()
    assert 0.4 <= waited_for < 10
    with PruneLocks({root: lock}, wait=0) as locks:
        assert not locks.waited  # free at once: the scan behind the plan is not stale
    assert os.path.exists(lock)  # never deleted


def test_a_signal_while_waiting_stops_at_once(tmp_path):
    root = str(tmp_path / "hub")
    os.makedirs(root)
    lock = lock_of(root)
    holder = LockHolder(root, lock)
    timer = threading.Timer(0.2, interrupt.request, (signal.SIGTERM,))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(interrupt.Interrupted):
            with PruneLocks({root: lock}, wait=30):
                pass
        assert time.monotonic() - started < 5
    finally:
        timer.join()
        interrupt.reset()
        holder.release()


def test_a_lock_file_this_account_cannot_write_still_locks(tmp_path):
    root = str(tmp_path / "hub")
    os.makedirs(os.path.join(root, ".locks"))
    lock = lock_of(root)
    with open(lock, "w"):
        pass
    os.chmod(lock, 0o444)
    with PruneLocks({root: lock}, wait=0) as locks:
        assert not locks.failed
        with pytest.raises(CacheBusy):
            with PruneLocks({root: lock}, wait=0):  # a second descriptor, in this process, is excluded too
                pass
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o444  # an existing file's mode is left alone


def test_locks_that_cannot_be_taken_fail_their_root_only(tmp_path):
    good, linked, missing = (str(tmp_path / name) for name in ("a-good", "b-linked", "c-missing"))
    os.makedirs(os.path.join(good, ".locks"))
    os.makedirs(os.path.join(linked, ".locks"))
    target = tmp_path / "precious"
    target.write_bytes(b"data")
    os.symlink(target, lock_of(linked))
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    files = {good: lock_of(good), linked: lock_of(linked), missing: os.path.join(str(blocker), "x.lock")}
    with PruneLocks(files, wait=0) as locks:
        assert list(locks.lock_files) == sorted(files)  # taken in sorted order
        assert set(locks.failed) == {linked, missing}
        assert "symbolic link" in locks.failed[linked] and locks.failed[linked].startswith("cannot take the prune lock")
        with pytest.raises(CacheBusy):
            with PruneLocks({good: lock_of(good)}, wait=0):
                pass
    assert target.read_bytes() == b"data" and os.path.islink(lock_of(linked))
