"""Locks: testing a library's download lock without touching it, and hfcache's own prune lock.

huggingface_hub locks each download with ``filelock.FileLock`` (``flock`` on POSIX) on
``.locks/<repo folder>/<etag>.lock``. Releasing such a lock never deletes the file, so an
existing lock file means nothing by itself: we open it read-only (never ``O_CREAT``) and
try a non-blocking exclusive ``flock``; if that succeeds we release it at once.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from .errors import CacheBusy

if TYPE_CHECKING:
    import filelock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_BUSY = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES}


def is_lock_held(path: str) -> bool | None:
    """True when another process holds the flock on ``path``, False when it is free.

    None when there is no lock file, or when it cannot be tested (no permission to open
    it, no ``fcntl`` on this platform, a file system without flock).
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        return True if e.errno in _BUSY else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# hfcache's own lock: one prune at a time per cache root

DEFAULT_LOCK_WAIT = 10.0


class PruneLocks:
    """Hold the prune lock of several cache roots; use as a context manager.

    Each lock is a ``filelock.FileLock`` (``flock``, falling back to an existence lock on
    file systems without it, as the hub's own locks do), created group-writable (0o664)
    so that every account sharing a cache can take it. Roots are locked in sorted order,
    so two prunes never deadlock. ``waited`` tells whether another prune held one of them
    (then the scan that made the plan is stale). A root whose lock cannot be created (a
    read-only cache) is listed in ``failed`` with the reason; the others stay locked.
    Raises :class:`~hfcache.errors.CacheBusy` when a lock is still held after ``wait`` seconds.
    """

    def __init__(self, lock_files: dict[str, str], wait: float = DEFAULT_LOCK_WAIT) -> None:
        self.lock_files = dict(sorted(lock_files.items()))  # root -> lock file path
        self.wait = wait
        self.waited = False
        self.failed: dict[str, str] = {}
        self._held: list[filelock.BaseFileLock] = []

    def __enter__(self) -> PruneLocks:
        try:
            for root, path in self.lock_files.items():
                self._take(root, path)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _take(self, root: str, path: str) -> None:
        import filelock  # only prune takes locks: scans start without it

        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            lock = filelock.FileLock(path, mode=0o664)
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                self.waited = True
                try:
                    lock.acquire(timeout=self.wait)
                except filelock.Timeout:
                    raise CacheBusy(
                        f"another hfcache prune is running on {root} (lock {path} still held after {self.wait:g}s); "
                        "try again later or raise --lock-wait",
                        path=root,
                    ) from None
        except OSError as e:
            self.failed[root] = f"cannot take the prune lock {path}: {e.strerror or e}"
            return
        self._held.append(lock)

    def __exit__(self, *exc: object) -> None:
        while self._held:
            self._held.pop().release()
