"""Locks: testing a library's download lock without touching it, and hfcache's own prune lock.

huggingface_hub locks each download with ``filelock.FileLock`` (``flock`` on POSIX) on
``.locks/<repo folder>/<etag>.lock``. Releasing such a lock never deletes the file, so an
existing lock file means nothing by itself: we open it read-only (never ``O_CREAT``) and
try a non-blocking exclusive ``flock``; if that succeeds we release it at once.
"""

from __future__ import annotations

import errno
import os

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
