"""hfcache's own prune lock: one prune at a time per cache, shared by every user of the cache."""

from __future__ import annotations

import errno
import os
import time

from hfcache.errors import CacheBusy

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


DEFAULT_LOCK_WAIT = 10.0


_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _share(fd: int, folder: str, mode: int) -> None:
    """Something just created in ``folder``: give it the folder's group and ``mode``, despite the umask.

    A setgid folder gives the group anyway; elsewhere only an owner who belongs to the
    folder's group (or root) may give it, and failing that is not an error.
    """
    try:
        group = os.stat(folder).st_gid
        if os.fstat(fd).st_gid != group:
            os.fchown(fd, -1, group)
    except OSError:
        pass
    try:
        os.fchmod(fd, mode)
    except OSError:
        pass


def _make_folder(folder: str) -> None:
    """Create the lock's folder (``.locks/``) if missing, with its parent's group, as the hub's own would be."""
    if os.path.isdir(folder):
        return
    os.makedirs(folder, exist_ok=True)
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return
    try:
        group = os.stat(os.path.dirname(folder)).st_gid
        if os.fstat(fd).st_gid != group:
            os.fchown(fd, -1, group)
    except OSError:
        pass
    finally:
        os.close(fd)


class PruneLocks:
    """Hold the prune lock of several cache roots; use as a context manager.

    Each lock is an ``flock`` on a lock file that is never deleted. It is opened
    ``O_RDWR | O_CREAT | O_NOFOLLOW`` (a symlink at its name is refused); when created, it
    gets the group of its folder (where this account may give it) and mode 0o664, so every
    account sharing the cache can open it. An account that still cannot open it for writing
    (created by another account, in another group, or with a narrower mode) opens it
    read-only: ``flock`` works on a read-only descriptor, so one account's lock file never
    locks the others out. Roots are locked in sorted order, so two prunes never deadlock.
    ``waited`` tells whether another prune held one of them (then the scan that made the
    plan is stale). A root whose lock cannot be opened or taken (a read-only cache with no
    lock file yet, a file system without ``flock``) is listed in ``failed`` with the reason;
    the others stay locked. Raises :class:`~hfcache.errors.CacheBusy` when a lock is still
    held after ``wait`` seconds, and :class:`~hfcache.interrupt.Interrupted` when a signal
    asks to stop while waiting.
    """

    MODE = 0o664
    POLL = 0.05  # seconds between two tries while another prune holds the lock

    def __init__(self, lock_files: dict[str, str], wait: float = DEFAULT_LOCK_WAIT) -> None:
        self.lock_files = dict(sorted(lock_files.items()))  # root -> lock file path
        self.wait = wait
        self.waited = False
        self.failed: dict[str, str] = {}
        self._held: list[int] = []  # open descriptors, each holding its flock

    def __enter__(self) -> PruneLocks:
        try:
            for root, path in self.lock_files.items():
                self._take(root, path)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _take(self, root: str, path: str) -> None:
        deadline = time.monotonic() + self.wait
        try:
            if fcntl is None:  # pragma: no cover - Windows
                raise OSError(errno.ENOSYS, "no flock on this platform")
            _make_folder(os.path.dirname(path))
            while True:
                fd = self._open(path)
                try:
                    if self._lock(fd, root, path, deadline) and self._still_at(fd, path):
                        self._held.append(fd)
                        return
                except BaseException:
                    os.close(fd)
                    raise
                os.close(fd)  # the file at that name was replaced while we waited: lock the new one
        except OSError as e:
            self.failed[root] = f"cannot take the prune lock {path}: {e.strerror or e}"

    def _open(self, path: str) -> int:
        """A descriptor on the lock file, created if missing; read-only where this account cannot write it."""
        flags = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            cannot_create: OSError | None = None
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | flags, self.MODE)
            except FileExistsError:
                pass
            except OSError as e:  # a folder this account cannot write: an existing lock file may still open
                if e.errno not in _NOT_WRITABLE:
                    raise
                cannot_create = e
            else:
                _share(fd, os.path.dirname(path), self.MODE)
                return fd
            try:
                return os.open(path, os.O_RDWR | flags)
            except FileNotFoundError:
                if cannot_create is not None:
                    raise cannot_create from None
                continue  # removed between the two opens: create it again
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise OSError(e.errno, "it is a symbolic link (refused: a lock is never taken through one)") from None
                if e.errno not in _NOT_WRITABLE:
                    raise
            return os.open(path, os.O_RDONLY | flags)  # flock works on a read-only descriptor

    def _lock(self, fd: int, root: str, path: str, deadline: float) -> bool:
        """Take the flock, polling until ``deadline``; True when taken."""
        from hfcache import interrupt

        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            self.waited = True
            if interrupt.requested():
                raise interrupt.Interrupted(interrupt.requested())
            left = deadline - time.monotonic()
            if left <= 0:
                raise CacheBusy(
                    f"another hfcache prune is running on {root} (lock {path} still held after {self.wait:g}s); "
                    "try again later or raise --lock-wait",
                    path=root,
                )
            time.sleep(min(self.POLL, left))

    @staticmethod
    def _still_at(fd: int, path: str) -> bool:
        """True when the locked file is still the one at ``path`` (nobody removed or replaced it meanwhile)."""
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def __exit__(self, *exc: object) -> None:
        while self._held:
            fd = self._held.pop()
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
