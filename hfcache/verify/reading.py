"""Reading a cached file to hash it without disturbing the machine: atimes, page cache, nothing written.

- **Access times**: the file is opened with ``O_NOATIME`` where the kernel allows it (the
  file's owner, or root); otherwise its access time is put back after reading (which moves
  its ctime, never its mtime). Age policies read atimes: a verify must never make a cold
  model look used.
- **Page cache**: before reading, ``mincore`` says which pages of the file were already in
  memory; afterwards, only the pages the read brought in are dropped
  (``posix_fadvise(DONTNEED)``), so a model a server keeps hot stays hot, and a verify of
  500 GB does not push out the machine's working set. Where ``mincore`` cannot be called,
  nothing is dropped.
- **Only regular files** are read: a file that turns out to be something else once opened
  (a FIFO, a device a link was swapped for) is refused, never read forever.

Digests: ``sha256`` (LFS and Xet blobs, torch checkpoints' prefixes) and ``git-sha1``
(``sha1(b"blob <size>\\0" + content)``, git's blob hash, for files the Hub keeps in git),
both from one pass over the file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import mmap
import os
import re
import stat as stat_mod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

CHUNK = 4 * 1024 * 1024  # large reads: the disk's speed, not the system call's
_NOATIME = getattr(os, "O_NOATIME", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class NotAFile(OSError):
    """The path is not a regular file once opened: never read."""


class FileChanged(OSError):
    """The file's size changed while it was read: its digest would be of no version of it."""


class Digest(NamedTuple):
    """What one read found: the digests asked for (by family, ``sha256`` and ``git-sha1``), and the file as it was."""

    digests: dict[str, str]
    size: int
    st: os.stat_result  # after the read (and after the atime was put back): what a later run compares with


def _libc() -> Any:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        return lib
    except (OSError, AttributeError):  # pragma: no cover - no C library with mincore (Windows)
        return None


_LIBC = _libc()
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of the dirty pages in the range, do not wait


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing ``length`` bytes at ``offset`` of ``fd`` to disk now, without waiting
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``): a copy's final ``fsync`` then waits for its tail only,
    not for the whole file. Durability still comes from that ``fsync``. A no-op where it is missing."""
    if _LIBC is None or not hasattr(_LIBC, "sync_file_range"):
        return
    _LIBC.sync_file_range(fd, ctypes.c_longlong(offset), ctypes.c_longlong(length), _SYNC_FILE_RANGE_WRITE)


_PAGE = mmap.PAGESIZE
_MAP_FAILED = ctypes.c_void_p(-1).value


def resident(fd: int, size: int) -> bytearray | None:
    """One byte per page of the file: nonzero when the page is in memory now; None when that cannot be known."""
    if _LIBC is None or size == 0 or not hasattr(os, "posix_fadvise"):
        return None
    addr = _LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        return None
    try:
        pages = (size + _PAGE - 1) // _PAGE
        vec = (ctypes.c_ubyte * pages)()
        if _LIBC.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
            return None
        return bytearray(vec)
    finally:
        _LIBC.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))


_ABSENT = re.compile(rb"\x00+")  # a run of pages that were not in memory


def drop_new_pages(fd: int, before: bytearray | None) -> None:
    """Drop from the page cache the pages of ``fd`` that were not there before the read (``before``: :func:`resident`).

    The runs of absent pages are found by a regular expression, in C: a page at a time in
    Python took 10 ms per GB, 1% of hashing it.
    """
    if before is None:
        return
    for run in _ABSENT.finditer(before):
        os.posix_fadvise(fd, run.start() * _PAGE, (run.end() - run.start()) * _PAGE, os.POSIX_FADV_DONTNEED)


def _open(path: str) -> tuple[int, bool]:
    """(fd, whether the atime must be put back): ``O_NOATIME`` when the kernel allows it."""
    flags = os.O_RDONLY | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)  # (a FIFO swapped in never blocks the open)
    if _NOATIME:
        try:
            return os.open(path, flags | _NOATIME), False
        except PermissionError:
            pass  # not the file's owner: opened plainly, the atime put back afterwards
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
    return os.open(path, flags), True


class _Reading:
    """A file open for a gentle read: its descriptor, its stat before, and (once closed) after."""

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self.fd = fd
        self.st = st
        self.after = st

    def chunks(self, size: int = CHUNK) -> Iterator[memoryview]:
        buf = bytearray(min(size, max(self.st.st_size, 1)))
        view = memoryview(buf)
        while n := os.readv(self.fd, [buf]):
            yield view[:n]


@contextmanager
def gently(path: str, verb: str) -> Iterator[_Reading]:
    """Open ``path`` as the module docstring says; on the way out, drop the pages read brought in, put the atime back.

    ``after`` is the file's stat once that is done (the atime put back moves its ctime).
    """
    fd, restore = _open(path)
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotAFile(errno.EINVAL, f"not a regular file, not {verb}", path)
        reading = _Reading(fd, st)
        before = resident(fd, st.st_size)
        try:
            yield reading
        finally:
            drop_new_pages(fd, before)
            if restore:
                try:
                    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
                except OSError:
                    pass  # another user's file, read without root: its atime moved (relatime: once a day)
            reading.after = os.fstat(fd)
    finally:
        os.close(fd)


FAMILY = {"sha256": "sha256", "sha256-prefix": "sha256", "git-sha1": "git-sha1"}  # the digest each algorithm checks


def hashers(size: int, families: Iterable[str]) -> dict[str, Any]:
    """Fresh hashers by family for a ``size``-byte file: ``sha256`` (what ``sha256-prefix`` checks too) and
    ``git-sha1`` (git's blob hash, ``sha1(b"blob <size>\\0" + content)``), as asked."""
    out: dict[str, Any] = {}
    for family in {FAMILY.get(f, f) for f in families}:
        if family == "git-sha1":
            h = hashlib.sha1(usedforsecurity=False)
            h.update(b"blob %d\0" % size)
            out[family] = h
        else:
            out[family] = hashlib.sha256()
    return out


def matches(algorithm: str, expected: str, actual: str | None) -> bool:
    """Whether ``actual`` (the digest of the family ``algorithm`` checks) is what a cache names the file by:
    ``expected`` itself, or (``sha256-prefix``, a torch checkpoint's name) its start."""
    if actual is None:
        return False
    return actual.startswith(expected) if algorithm == "sha256-prefix" else actual == expected


def check_digest(algorithm: str, expected: str, digests: Mapping[str, str]) -> bool:
    """Whether ``digests`` (by family) match what a cache names a file by (``sha256``, ``git-sha1``, ``sha256-prefix``)."""
    return matches(algorithm, expected, digests.get(FAMILY.get(algorithm, algorithm)))


def hash_file(path: str, families: Iterable[str]) -> Digest:
    """Read ``path`` once and return its digests of ``families`` (``sha256``, ``git-sha1``); see the module docstring."""
    with gently(path, "read") as reading:
        hashing = hashers(reading.st.st_size, families)
        size = 0
        for chunk in reading.chunks():
            size += len(chunk)
            for h in hashing.values():
                h.update(chunk)
    if size != reading.st.st_size:  # written to while read (a download resuming into it?): no digest of it is true
        raise FileChanged(errno.EAGAIN, f"changed while read ({reading.st.st_size} bytes, then {size})", path)
    return Digest({family: h.hexdigest() for family, h in hashing.items()}, size, reading.after)


def copy_gently(src: str, dst: str) -> None:
    """Copy ``src`` to a new file ``dst`` (never an existing one: ``O_EXCL``), reading as :func:`hash_file` reads.

    The source's access time does not move (a copy must not look like a use to the checks
    that run just before a deletion), its new pages are dropped again.
    """
    with gently(src, "copied") as reading:
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600)
        try:
            for chunk in reading.chunks():
                left = chunk
                while left:
                    left = left[os.write(out, left) :]
            os.fsync(out)
        finally:
            os.close(out)
