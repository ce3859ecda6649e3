"""In-use checks by inode (issue 15, item 6): a process is seen however it reaches the cache's files.

A job may reach a cache through a bind mount, or from its own mount namespace (a
container), where the paths it has open name nothing below the cache root. The check
matches each process's open and mapped files by ``(st_dev, st_ino)`` instead, so these
are seen, and the prune skips what they use.

The mount tests need root, ``mount`` and ``unshare``; without them they are skipped with
the reason, except under ``CI=true``, where they fail instead: CI must run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hfcache.fs import system
from hfcache.fs.system import open_files
from tests.support import cannot_run, need_mounts, run_cli, small_cache
from tests.trees import commit

LINUX = sys.platform.startswith("linux")
pytestmark = pytest.mark.skipif(not LINUX, reason="reads /proc (elsewhere, psutil's paths: no namespaces to see)")


# Mapping a file and closing it, as a loader does: Python's mmap module keeps a duplicate of
# the descriptor (it would be seen as an open file), so map with libc's mmap, keeping none.
MAP_ONLY = """
import ctypes, os
def map_only(path):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    fd = os.open(path, os.O_RDONLY)
    st = os.fstat(fd)
    addr = libc.mmap(None, st.st_size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
    os.close(fd)
    assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    for n in os.listdir("/proc/self/fd"):
        try:
            other = os.stat(f"/proc/self/fd/{n}")
        except OSError:
            continue
        assert (other.st_dev, other.st_ino) != (st.st_dev, st.st_ino), "still open"
    return addr, st.st_size

def unmap(held):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    assert libc.munmap(*held) == 0
"""
exec(MAP_ONLY)  # map_only() and unmap() for this process too

# A process that holds argv[2] open ("open") or only mapped ("mmap"), says "ready", and
# waits for its stdin to close.
HOLD = (
    MAP_ONLY
    + """
import sys
how, path = sys.argv[1:3]
held = map_only(path) if how == "mmap" else open(path, "rb")
print("ready", flush=True)
sys.stdin.read()
"""
)

# The same, after bind-mounting the cache argv[2] on argv[3] inside its own mount namespace
# (run under ``unshare -m``): the path it holds exists in no other namespace.
HOLD_IN_NAMESPACE = (
    MAP_ONLY
    + """
import subprocess, sys
how, cache, private, rel = sys.argv[1:5]
subprocess.run(["mount", "--bind", cache, private], check=True)
path = os.path.join(private, rel)
held = map_only(path) if how == "mmap" else open(path, "rb")
print("ready", flush=True)
sys.stdin.read()
"""
)


class FileHolder:
    """A child process holding a file; closed (and reaped) at teardown."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"the holder did not start: {line!r} {err}")
        self.pid = self.proc.pid

    def close(self) -> None:
        try:
            self.proc.communicate("", timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck child
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def holders():
    made: list[FileHolder] = []

    def start(argv: list[str]) -> FileHolder:
        made.append(FileHolder(argv))
        return made[-1]

    try:
        yield start
    finally:
        for holder in made:
            holder.close()


def key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def old_blob(root: str, name: str = "org--a") -> str:
    return os.path.join(root, f"models--{name}", "blobs", f"{name}-e1")


# ---------------------------------------------------------------------------------------------
# Without mounts


@pytest.mark.parametrize("how", ["open", "mmap"])
def test_a_file_held_through_the_root_itself_is_seen(tmp_path, holders, how):
    root = str(tmp_path / "hub")
    small_cache(root)
    holder = holders([sys.executable, "-c", HOLD, how, old_blob(root)])
    found = open_files([os.path.realpath(root)])
    assert f"pid {holder.pid} " in found.users.get(key(old_blob(root)), ""), found.users.get(key(old_blob(root)))
    assert key(old_blob(root, "org--b")) not in found.users


def test_our_own_mapping_counts(tmp_path):
    """A library user that mapped a model and then prunes in the same process keeps it."""
    root = str(tmp_path / "hub")
    small_cache(root)
    held = map_only(old_blob(root))  # noqa: F821 - defined by exec(MAP_ONLY)
    try:
        assert f"pid {os.getpid()} " in open_files([os.path.realpath(root)]).users[key(old_blob(root))]
    finally:
        unmap(held)  # noqa: F821
    assert key(old_blob(root)) not in open_files([os.path.realpath(root)]).users


# ---------------------------------------------------------------------------------------------
# Bind mounts and mount namespaces (root)


@pytest.mark.parametrize("fs", ["tmp", "tmpfs"])
@pytest.mark.parametrize("how", ["open", "mmap"])
def test_a_file_held_through_a_bind_mount_is_seen(tmp_path, mounts, holders, how, fs):
    if fs == "tmpfs":  # a device number with a minor only (0:N), as /proc/PID/maps prints it
        root = os.path.join(mounts.mount("-t", "tmpfs", "tmpfs", str(tmp_path / "tmpfs")), "hub")
    else:
        root = str(tmp_path / "hub")
    small_cache(root)
    elsewhere = mounts.bind(root, str(tmp_path / "elsewhere"))
    through = os.path.join(elsewhere, "models--org--a", "blobs", "org--a-e1")
    holder = holders([sys.executable, "-c", HOLD, how, through])
    found = open_files([os.path.realpath(root)])
    assert f"pid {holder.pid} " in found.users.get(key(old_blob(root)), ""), sorted(found.users.items())[:20]
    assert key(old_blob(root, "org--b")) not in found.users


@pytest.mark.parametrize("how", ["open", "mmap"])
def test_a_process_in_another_mount_namespace_is_seen(tmp_path, holders, how):
    need_mounts("mount", "unshare")
    root = str(tmp_path / "hub")
    small_cache(root)
    private = tmp_path / "private"  # mounted on only inside the holder's namespace
    private.mkdir()
    rel = os.path.join("models--org--a", "blobs", "org--a-e1")
    argv = ["unshare", "-m", "--propagation", "private", sys.executable, "-c", HOLD_IN_NAMESPACE]
    try:
        holder = holders([*argv, how, root, str(private), rel])
    except AssertionError as e:
        cannot_run(f"unshare -m with a bind mount failed here: {e}")
    # The holder's namespace is not ours: there, nothing is mounted on `private`.
    with open(f"/proc/{holder.pid}/mountinfo") as f:
        assert str(private) in f.read()
    with open("/proc/self/mountinfo") as f:
        assert str(private) not in f.read()
    found = open_files([os.path.realpath(root)])
    assert f"pid {holder.pid} " in found.users.get(key(old_blob(root)), ""), sorted(found.users.items())[:20]
    assert key(old_blob(root, "org--b")) not in found.users


def test_an_overlay_root_with_layers_on_two_file_systems(tmp_path, mounts, holders):
    """A lower-layer file of such an overlay has its own device number (not the root's), and
    /proc/PID/maps shows the lower file system's: only a stat of the mapping is right."""
    need_mounts("mount", "unshare")
    lower = mounts.mount("-t", "tmpfs", "tmpfs", str(tmp_path / "lower"))
    small_cache(os.path.join(lower, "hub"))
    for folder in ("upper", "work"):
        (tmp_path / folder).mkdir()
    merged = mounts.mount(
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={lower},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}",
        str(tmp_path / "merged"),
    )
    root = os.path.join(merged, "hub")
    assert key(old_blob(root))[0] != os.stat(root).st_dev  # what makes a device filter wrong here
    private = tmp_path / "private"
    private.mkdir()
    rel = os.path.join("models--org--a", "blobs", "org--a-e1")
    argv = ["unshare", "-m", "--propagation", "private", sys.executable, "-c", HOLD_IN_NAMESPACE]
    holder = holders([*argv, "mmap", root, str(private), rel])
    found = open_files([os.path.realpath(root)])
    assert f"pid {holder.pid} " in found.users.get(key(old_blob(root)), "")
    assert key(old_blob(root, "org--b")) not in found.users


def test_without_map_files_a_mapped_overlay_file_is_found_by_its_path(tmp_path, mounts, holders, monkeypatch):
    """Without the capability /proc/PID/map_files needs (not root, or a container's root), a
    mapping of a process in our own namespace is stat'ed by its path: on such an overlay the
    device in /proc/PID/maps is the overlay's, not the lower file's."""
    lower = mounts.mount("-t", "tmpfs", "tmpfs", str(tmp_path / "lower"))
    small_cache(os.path.join(lower, "hub"))
    for folder in ("upper", "work"):
        (tmp_path / folder).mkdir()
    merged = mounts.mount(
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={lower},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}",
        str(tmp_path / "merged"),
    )
    root = os.path.join(merged, "hub")
    holder = holders([sys.executable, "-c", HOLD, "mmap", old_blob(root)])
    real_stat = os.stat
    refused = []

    def stat(path, *args, **kwargs):
        if "/map_files/" in os.fspath(path):
            refused.append(path)
            raise PermissionError(1, "Operation not permitted", path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(system.os, "stat", stat)
    found = open_files([os.path.realpath(root)])
    monkeypatch.undo()
    assert len(refused) == 1  # tried once, then not again
    assert f"pid {holder.pid} " in found.users.get(key(old_blob(root)), "")
    assert key(old_blob(root, "org--b")) not in found.users


def run_prune(root: str) -> dict:
    # By mtime: mapping a file moves its atime, so by atime the plan would keep it anyway.
    result = run_cli("prune", "--cache-dir", root, "--max-age", "30d", "--age-by", "mtime", "--yes", "--json")
    assert result.exit_code == 0, (result.output, result.exc_info)
    return json.loads(result.stdout)


def test_prune_skips_a_revision_mapped_through_a_bind_mount(tmp_path, mounts, holders):
    root = str(tmp_path / "hub")
    repos = small_cache(root)
    elsewhere = mounts.bind(root, str(tmp_path / "elsewhere"))
    # Through the snapshot link, as a loader would: the mapping is of the blob.
    through = os.path.join(elsewhere, "models--org--a", "snapshots", commit("org--a-old"), "w.bin")
    holder = holders([sys.executable, "-c", HOLD, "mmap", through])
    done = run_prune(root)
    units = {u["id"]: u for u in done["delete"]}
    assert units["org/a"]["status"] == "skipped", units["org/a"]
    assert "in use" in units["org/a"]["error"] and f"pid {holder.pid}" in units["org/a"]["error"]
    assert not units["org/a"]["freed_bytes"]
    assert units["org/b"]["status"] == "deleted"
    assert done["freed_bytes"] == units["org/b"]["freed_bytes"] == units["org/b"]["reclaim_bytes"], json.dumps(done, indent=1)
    assert os.path.isfile(old_blob(root))
    assert os.path.isdir(os.path.join(repos["org--a"], "snapshots", commit("org--a-old")))
    assert not os.path.exists(old_blob(root, "org--b"))
    holder.close()
    done = run_prune(root)  # no longer in use: now it goes
    assert [(u["id"], u["status"]) for u in done["delete"]] == [("org/a", "deleted")]


# ---------------------------------------------------------------------------------------------
# Without root: what can and cannot be read


NOBODY = 65534


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    # Changing credentials made this process undumpable (its /proc files root's): undo that,
    # as exec would, so that it is what any other process of the user looks like.
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE


def forked_as_nobody(work) -> tuple[int, int, int]:
    """Fork a child that drops to nobody, runs ``work()`` and writes its JSON; (pid, read fd, release fd)."""
    out_r, out_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(out_r)
            os.close(go_w)
            result = work()
            os.write(out_w, (json.dumps(result) + "\n").encode())
            os.read(go_r, 1)  # held until released
        except BaseException as e:  # noqa: BLE001
            os.write(out_w, (json.dumps({"error": repr(e)}) + "\n").encode())
            code = 1
        os._exit(code)
    os.close(out_w)
    os.close(go_r)
    return pid, out_r, go_w


def reply(fd: int) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return json.loads(data)


def release(pid: int, out_r: int, go_w: int) -> None:
    os.close(go_w)
    os.close(out_r)
    os.waitpid(pid, 0)


def kernel_threads() -> int:
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if int(data[data.rfind(b")") + 2 :].split()[6]) & 0x00200000:
                count += 1
    return count


def test_an_unprivileged_user_sees_its_own_processes_and_counts_the_others(tmp_path):
    if os.geteuid() != 0:
        cannot_run("needs root, to run processes as another user (nobody)")
    root = str(tmp_path / "hub")
    small_cache(root)
    blob = old_blob(root)

    def hold():
        map_only(blob)  # noqa: F821 - as root: tmp_path's parents are private to root
        _become_nobody()
        return {"ready": True}

    def look():
        _become_nobody()
        found = open_files([root])  # the root's path cannot even be searched by nobody
        return {"users": [[d, i, who] for (d, i), who in found.users.items()], "denied": found.denied}

    mine = forked_as_nobody(hold)
    try:
        assert reply(mine[1]) == {"ready": True}
        counts = [sum(1 for n in os.listdir("/proc") if n.isdigit())]  # (other work on the machine comes and goes)
        lister = forked_as_nobody(look)
        try:
            seen = reply(lister[1])
        finally:
            release(*lister)
        counts.append(sum(1 for n in os.listdir("/proc") if n.isdigit()))
    finally:
        release(*mine)
    assert "error" not in seen, seen
    users = {(d, i): who for d, i, who in seen["users"]}
    assert f"pid {mine[0]} " in users.get(key(blob), ""), users
    # Root's processes are counted as unreadable (this one at least), kernel threads never.
    processes = max(counts)
    assert 1 <= seen["denied"] < processes
    if kernel_threads() > 5:
        assert seen["denied"] <= processes - kernel_threads() + 5
