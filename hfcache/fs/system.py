"""What the machine says (psutil, /proc): mount options, free space, files processes hold open.

Kept apart from the policies, which must not read the system: the planner gets these
answers as data, and so do the live-use checks of :mod:`hfcache.execute.checks`.
"""

from __future__ import annotations

import os
import re
import stat as stat_mod
import sys
from collections.abc import Iterable
from typing import NamedTuple

import psutil

from hfcache.model import Disk


def frozen_atimes(path: str) -> str | None:
    """Why reading a file under ``path`` may not move its access time, or None.

    Said as "a noatime mount (/data)": ``noatime`` (never moved), ``ro`` (a read-only mount
    writes no access time), or ``overlay`` (a read of a file in an image's lower layer moves
    none: checked on Linux 6.x). ``relatime`` moves it at most once a day: not frozen.
    """
    real = os.path.realpath(path)
    best = None
    try:
        partitions = psutil.disk_partitions(all=True)
    except OSError:  # pragma: no cover - /proc not mounted
        return None
    for part in partitions:
        mp = part.mountpoint
        if (real == mp or real.startswith(mp.rstrip(os.sep) + os.sep)) and (best is None or len(mp) > len(best.mountpoint)):
            best = part
    if best is None:
        return None
    opts = set(best.opts.split(","))
    if "noatime" in opts:
        return f"a noatime mount ({best.mountpoint})"
    if "ro" in opts:
        return f"a read-only mount ({best.mountpoint})"
    if best.fstype == "overlay":
        return f"an overlay mount ({best.mountpoint}), whose lower layers' access times never move"
    return None


def disk_of(path: str) -> Disk:
    """The file system of ``path``: its device number, size and free bytes (for ``min_free``)."""
    usage = psutil.disk_usage(path)
    return Disk(os.stat(path).st_dev, usage.total, usage.free)


class OpenFiles(NamedTuple):
    """Files that running processes hold open or memory-mapped, by ``(st_dev, st_ino)``.

    ``users`` names one process per file (``pid 123 (python)``). ``denied`` counts the
    processes whose files could not be listed (another user's, without root): what they
    hold is unknown. ``unreadable`` names them, as ``users`` does.
    """

    users: dict[tuple[int, int], str]
    denied: int
    unreadable: tuple[str, ...] = ()
    # Each file as a process named it (in its own mount namespace, so possibly not a path here),
    # and the programs (``comm``) holding it: what the usage history records (``hfcache.history``).
    paths: dict[tuple[int, int], tuple[str, ...]] = {}
    programs: dict[tuple[int, int], tuple[str, ...]] = {}


_CAP_SYS_PTRACE = 19  # include/uapi/linux/capability.h


def sees_every_process() -> bool:
    """Whether this process may read every other process's files: root with CAP_SYS_PTRACE.

    Root in a container often runs without CAP_SYS_PTRACE (Docker drops it): then the
    processes of other users stay closed to it, as to anyone else.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/status", "rb") as f:
            caps = next((line for line in f if line.startswith(b"CapEff:")), b"CapEff:\t0")
        return bool(int(caps.split()[1], 16) >> _CAP_SYS_PTRACE & 1)
    except (OSError, ValueError, IndexError):  # pragma: no cover - no /proc: root is taken at its word
        return True


def open_files(under: Iterable[str]) -> OpenFiles:
    """What every process holds open or memory-mapped that may be a file of the caches ``under``.

    Matched by identity, ``(st_dev, st_ino)``, never by path: a process that reaches a cache
    through a bind mount, a symlink, or from its own mount namespace (a container) names
    paths that are not below ``under``, yet holds the same inodes. On Linux every process's
    ``/proc/PID/fd`` and ``/proc/PID/maps`` are read (see :func:`_proc_open_files`); elsewhere
    psutil's paths are used, which can only see what is reached below ``under``.

    ``under`` (resolved roots) only narrows the table to the file systems of the roots, where
    that is safe; it is never compared with paths.
    """
    roots = [os.fspath(p) for p in under]
    if _PROC:
        return _proc_open_files(roots)
    return _psutil_open_files(roots)  # pragma: no cover - not Linux


# ---------------------------------------------------------------------------------------------
# Linux: /proc

_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")
_PF_KTHREAD = 0x00200000  # include/linux/sched.h
# /proc/PID/maps: "start-end perms offset major:minor inode   path" (major and minor in hex,
# at least two digits); lines of inode 0 are anonymous.
_MAPS_LINE = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ ([0-9a-f]+):([0-9a-f]+) ([1-9][0-9]*) +([^\n]*)$", re.M)
# File systems where a file's st_dev is always its mount's device number, as /proc/PID/maps
# shows it, and st_ino its inode number (ext4 and tmpfs checked). Not overlayfs: with layers
# on different file systems, a lower file's st_dev is a device number of its layer's, while
# maps shows the overlay's. Not btrfs: each subvolume has its own st_dev. Not FUSE: the
# daemon says.
_PLAIN_FS = frozenset(
    "ext2 ext3 ext4 xfs tmpfs ramfs f2fs jfs reiserfs nilfs2 vfat msdos exfat ntfs ntfs3 hfsplus zfs nfs nfs4".split()
)


NAMES_KEPT = 4  # names kept per held file (processes in several namespaces, or through several links)


class _Denied(Exception):
    """The files of a process cannot be read (permission)."""


def _proc_open_files(roots: list[str]) -> OpenFiles:
    """Every process's open files (``/proc/PID/fd/N``, stat'ed through the link) and mappings.

    * An fd link is stat'ed: the kernel follows it to the open file itself, whatever
      namespace or mount its path belongs to, and returns its true ``(st_dev, st_ino)``.
    * A mapping's identity is read from ``/proc/PID/maps`` (device and inode). It equals
      ``stat()``'s on plain file systems (ext4, tmpfs: checked), not always on overlayfs
      (layers on two file systems: checked) or btrfs. So unless every root lies on a plain
      file system, each mapped file is also stat'ed through ``/proc/PID/map_files/<range>``
      when permitted (root), once per distinct file and mount namespace; without that
      permission, by its path, for the processes that share our mount namespace.
    * When every root lies on a plain file system, only files on the roots' devices are
      kept (a bind mount keeps ``st_dev``, so nothing reached through one is lost), and
      mappings need no stat at all.

    Our own process counts too: a library user that mapped a model and then prunes keeps it.
    Processes that exit meanwhile, zombies and kernel threads hold nothing; a process whose
    fd table or maps cannot be read counts in ``denied``.
    """
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # pragma: no cover - /proc unreadable
        return _psutil_open_files(roots)
    scan = _Scan(_plain_devices(roots))
    users: dict[tuple[int, int], str] = {}
    programs: dict[tuple[int, int], tuple[str, ...]] = {}
    unreadable: list[str] = []
    for pid in pids:
        keys: set[tuple[int, int]] = set()
        try:
            scan.process(pid, keys)
        except _Denied:
            if not _holds_nothing(pid):
                unreadable.append(f"pid {pid} ({_name(pid)})")
        except OSError:
            continue  # exited
        if keys:
            name = _name(pid)
            for k in keys:
                users.setdefault(k, f"pid {pid} ({name})")
                if name not in programs.get(k, ()):
                    programs[k] = (*programs.get(k, ()), name)
    return OpenFiles(users, len(unreadable), tuple(unreadable), scan.paths, programs)


class _Scan:
    """One pass over /proc: what is known of the roots' file systems, and what was learnt so far."""

    def __init__(self, devs: frozenset[int] | None) -> None:
        self.devs = devs
        # Plain file systems: a mapping's device must be one of the roots', so the pattern
        # names those devices, and most lines fail at once.
        alternatives = b"|".join(b"%02x:%02x" % (os.major(d), os.minor(d)) for d in sorted(devs or ()))
        self.plain_line = re.compile(rb"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ (" + alternatives + rb") ([1-9][0-9]*) +([^\n]*)$", re.M)
        self.map_files = True  # until a stat through /proc/PID/map_files is refused
        self.own_ns = _mount_ns("self")
        self.identities: dict[tuple[str, bytes, bytes, bytes, bytes], tuple[int, int] | None] = {}
        self.paths: dict[tuple[int, int], tuple[str, ...]] = {}  # the names processes gave each file (a few)

    def name(self, key: tuple[int, int], path: str) -> None:
        """Keep ``path`` as a name of ``key`` (a few per file: each process may name it in its own namespace)."""
        names = self.paths.get(key, ())
        if path not in names and len(names) < NAMES_KEPT:
            self.paths[key] = (*names, path)

    def process(self, pid: str, keys: set[tuple[int, int]]) -> None:
        """Add to ``keys`` the identities of what ``pid`` holds open or mapped.

        Raises :class:`_Denied` when its fds or its maps cannot be read (what was read stays
        in ``keys``), OSError when it exited.
        """
        base = f"/proc/{pid}"
        devs = self.devs
        try:
            fds = os.listdir(f"{base}/fd")
        except PermissionError:
            raise _Denied from None
        for fd in fds:
            try:
                st = os.stat(f"{base}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if stat_mod.S_ISREG(st.st_mode) and (devs is None or st.st_dev in devs):
                key = (st.st_dev, st.st_ino)
                keys.add(key)
                if len(self.paths.get(key, ())) < NAMES_KEPT:
                    try:
                        self.name(key, os.readlink(f"{base}/fd/{fd}"))
                    except OSError:
                        pass
        try:
            with open(f"{base}/maps", "rb") as f:
                maps = f.read()
        except PermissionError:
            raise _Denied from None
        if devs is not None:
            for dev, ino, path in set(self.plain_line.findall(maps)):
                major, minor = dev.split(b":")
                key = (os.makedev(int(major, 16), int(minor, 16)), int(ino))
                keys.add(key)
                self.name(key, os.fsdecode(path))
            return
        seen: set[tuple[bytes, bytes, bytes, bytes]] = set()
        ns: str | None = None
        for start, end, major, minor, ino, path in _MAPS_LINE.findall(maps):
            if (major, minor, ino, path) in seen:
                continue  # the same file's other segments
            seen.add((major, minor, ino, path))
            # The file as the mapping names it: on overlayfs, possibly not what stat() says, but
            # only ever a file of the same mapping: a false match can only keep a unit.
            key = (os.makedev(int(major, 16), int(minor, 16)), int(ino))
            keys.add(key)
            self.name(key, os.fsdecode(path))
            if ns is None:
                ns = _mount_ns(pid) or f"pid {pid}"
            known = (ns, major, minor, ino, path)
            if known not in self.identities:
                self.identities[known] = self._stat_mapping(base, start, end, path, ns == self.own_ns)
            identity = self.identities[known]
            if identity is not None:
                keys.add(identity)
                self.name(identity, os.fsdecode(path))

    def _stat_mapping(self, base: str, start: bytes, end: bytes, path: bytes, our_namespace: bool) -> tuple[int, int] | None:
        """``stat()``'s identity of a mapped file: through map_files (root), else by its path in our namespace."""
        st = None
        if self.map_files:
            try:  # named without the leading zeros maps shows
                st = os.stat(f"{base}/map_files/{int(start, 16):x}-{int(end, 16):x}")
            except PermissionError:
                self.map_files = False  # needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE) in the first user namespace
            except OSError:
                return None  # unmapped meanwhile
        if st is None and our_namespace and path.startswith(b"/") and not path.endswith(b" (deleted)"):
            try:
                st = os.stat(os.fsdecode(path))
            except OSError:
                return None
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            return None
        return st.st_dev, st.st_ino


def _plain_devices(roots: list[str]) -> frozenset[int] | None:
    """The device numbers of ``roots`` when all lie on plain file systems (:data:`_PLAIN_FS`), else None."""
    devs = set()
    for root in roots:
        try:
            fd = os.open(root, getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            fs = _fs_of(fd)
        finally:
            os.close(fd)
        if fs is None or fs[0] not in _PLAIN_FS or fs[1] != st.st_dev:
            return None
        devs.add(st.st_dev)
    return frozenset(devs) if devs else None


def _fs_of(fd: int) -> tuple[str, int] | None:
    """The type and device number of the mount that holds the open folder ``fd`` (by mount id)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            mnt_id = next(line.split()[1] for line in f if line.startswith("mnt_id:"))
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[0] == mnt_id:
                    major, minor = fields[2].split(":")
                    return fields[fields.index("-") + 1], os.makedev(int(major), int(minor))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return None


def _mount_ns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _holds_nothing(pid: str) -> bool:
    """A kernel thread, a zombie, or gone: nothing to count as unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rfind(b")") + 2 :].split()
        return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & _PF_KTHREAD)
    except (OSError, IndexError, ValueError):
        return True


def _name(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode("utf-8", "replace").strip() or "?"
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------------------
# Elsewhere: psutil, by path


def _psutil_open_files(under: Iterable[str]) -> OpenFiles:
    """Every file below one of the folders ``under`` that a process has open or mapped (psutil).

    Paths are matched as the kernel reports them (resolved), so ``under`` should be
    resolved too; each match is stat'ed once, and compared by inode, so a file reached
    through any link is recognised. A bind mount or another mount namespace is not seen.
    """
    prefixes = tuple(p.rstrip(os.sep) + os.sep for p in under)
    users: dict[tuple[int, int], str] = {}
    held: dict[tuple[int, int], tuple[str, ...]] = {}
    programs: dict[tuple[int, int], tuple[str, ...]] = {}
    unreadable: list[str] = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            paths = [f.path for f in proc.open_files()]
            paths += [m.path for m in proc.memory_maps(grouped=True)]
        except psutil.AccessDenied:
            unreadable.append(f"pid {proc.pid} ({proc.info.get('name') or '?'})")
            continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # gone, or a zombie, which holds no files
        except OSError:  # pragma: no cover - /proc changing under us
            continue
        for path in paths:
            if not path.startswith(prefixes):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            key, name = (st.st_dev, st.st_ino), proc.info.get("name") or "?"
            users.setdefault(key, f"pid {proc.pid} ({name})")
            if path not in held.get(key, ()):
                held[key] = (*held.get(key, ()), path)
            if name not in programs.get(key, ()):
                programs[key] = (*programs.get(key, ()), name)
    return OpenFiles(users, len(unreadable), tuple(unreadable), held, programs)
