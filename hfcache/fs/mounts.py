"""Mount points: which mount a folder is on, so that nothing hfcache deletes ever crosses one.

A different ``st_dev`` does not reveal every mount: a bind mount of a folder of the same
file system keeps the device number. The kernel's mount id does: :func:`mount_id` asks
``statx(STATX_MNT_ID)`` (Linux 5.8+, through the C library), else reads
``/proc/self/fdinfo/<fd>``. Where neither answers (another OS, no ``/proc``) it returns
None and callers fall back on ``st_dev``.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import struct
import sys
import threading

_AT_EMPTY_PATH = 0x1000
_STATX_MNT_ID = 0x1000
_STX_MNT_ID_OFFSET = 0x90  # struct statx: __u64 stx_mnt_id

_statx = None
if sys.platform.startswith("linux"):
    try:
        _statx = ctypes.CDLL(None, use_errno=True).statx
        _statx.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p)
        _statx.restype = ctypes.c_int
    except (OSError, AttributeError):  # pragma: no cover - a C library without statx (musl < 1.2.5)
        _statx = None


_local = threading.local()


def _buffer() -> ctypes.Array[ctypes.c_char]:
    """One struct statx buffer per thread, reused: a deletion asks for a mount id per folder."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = ctypes.create_string_buffer(256)
    return buf


def mount_id(fd: int) -> int | None:
    """The mount id of the open file or folder ``fd`` (unique among the mounts that exist now), or None."""
    if _statx is not None:
        buf = _buffer()
        if _statx(fd, b"", _AT_EMPTY_PATH, _STATX_MNT_ID, buf) == 0:
            (mask,) = struct.unpack_from("I", buf, 0)
            if mask & _STATX_MNT_ID:
                mnt: int = struct.unpack_from("Q", buf, _STX_MNT_ID_OFFSET)[0]
                return mnt
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


_MOUNTINFO = "/proc/self/mountinfo"
_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")
_PATH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def unescape(field: bytes) -> str:
    r"""A path of ``/proc/self/mountinfo``, where the kernel writes space, tab, newline and ``\`` as octal escapes.

    >>> unescape(rb"/data/my\040models/a\134b\011c")
    '/data/my models/a\\b\tc'
    """
    return os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes((int(m.group(1), 8),)), field))


def mount_points(mountinfo: str = _MOUNTINFO) -> list[str]:
    """Every mount point of this process's mount namespace, in the order the kernel lists them; [] without ``/proc``.

    The fifth field of each line of ``mountinfo`` is the mount point, relative to this
    process's root (a path with no symlink in it).
    """
    try:
        with open(mountinfo, "rb") as f:
            data = f.read()
    except OSError:
        return []
    return _points(data)


def _points(data: bytes) -> list[str]:
    """The mount points of a ``mountinfo`` text, in its order."""
    points = []
    for line in data.splitlines():
        fields = line.split(b" ")
        if len(fields) > 4:
            points.append(unescape(fields[4]))
    return points


def _is_mount_root(path: str) -> bool:
    """Whether ``path`` is, now, the root of a mount: not the mount of its parent folder.

    A mount point listed in ``mountinfo`` may be hidden (a later mount over one of its
    ancestors): then the path, if it exists at all, is an ordinary folder of the mount on
    top. True when the mount ids cannot be compared (better to see one mount too many).
    """
    try:
        fd = os.open(path, _PATH_FLAGS)
    except OSError:
        return False  # gone, or hidden by a mount over an ancestor that lacks it
    try:
        parent = os.open(os.path.dirname(path), _PATH_FLAGS | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        os.close(fd)
        return True
    try:
        mine, theirs = mount_id(fd), mount_id(parent)
    finally:
        os.close(fd)
        os.close(parent)
    return mine is None or theirs is None or mine != theirs


def mount_points_under(root: str, *, mountinfo: str = _MOUNTINFO) -> list[str]:
    """The mount points strictly inside ``root`` (resolved first), sorted; a mount on ``root`` itself is not one.

    Read from ``/proc/self/mountinfo`` (Linux; [] elsewhere), so bind mounts of the same
    file system, which keep the root's ``st_dev``, are seen too. Each is checked to be a
    mount root at that path now, so mounts hidden by a later mount over an ancestor are left out.
    """
    return _under(root, mount_points(mountinfo))


def _under(root: str, points: list[str]) -> list[str]:
    real = os.path.realpath(root)
    prefix = real.rstrip(os.sep) + os.sep
    inside = sorted({p for p in points if p.startswith(prefix) and p != prefix})
    return [p for p in inside if _is_mount_root(p)]


class MountWatch:
    """The mount points inside one root (:func:`mount_points_under`), read again only after the mount table changed.

    ``/proc/self/mountinfo`` can be polled: after any mount or unmount in this mount
    namespace, an open descriptor of it reports ``POLLPRI`` once (proc(5)). So asking before
    every deletion costs one ``poll``, and a mount made a moment ago is never missed, as
    it could be by a copy kept for a while. :meth:`points` is None where the file cannot be
    opened or polled (no ``/proc``): then callers look for themselves. Close it after use.
    """

    def __init__(self, root: str, mountinfo: str = _MOUNTINFO) -> None:
        self.root = root
        self._points: list[str] | None = None
        self._fd: int | None = None
        self._poll = None
        try:
            fd = os.open(mountinfo, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return
        self._fd = fd
        try:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLPRI | select.POLLERR)
        except (OSError, AttributeError):  # pragma: no cover - a system without poll
            self.close()

    def points(self) -> list[str] | None:
        if self._fd is None or self._poll is None:
            return None
        if self._points is None or self._poll.poll(0):
            # (a change between that poll and this reading is reported by the next poll: read again then)
            os.lseek(self._fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(self._fd, 1 << 16):
                chunks.append(chunk)
            self._points = _under(self.root, _points(b"".join(chunks)))
        return self._points

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._poll = None
