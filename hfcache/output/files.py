"""Files hfcache writes (the audit log, ``--plan-out``, ``--textfile``): never into a cache, never through a link.

* :func:`refuse_in_caches` refuses (exit 2) an output path that resolves into a cache root,
  whether by its own name, its folder, or a symlink at its name: a plan or a log written
  there would replace or grow a model's files.
* :func:`atomic_write` replaces a file whole: a temporary file in the same folder, flushed
  to disk, then renamed over the name (a symlink at the name is replaced, never followed);
  a reader sees the old file or the new one, never half of one.
* :func:`open_append_nofollow` opens a log for appending without following a symlink at its
  name, and refuses a file with other hard links (it could be a cache's blob).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable

from hfcache.errors import UsageError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def landing_places(path: str) -> tuple[str, ...]:
    """Where writing ``path`` may land: its folder resolved with its own name, and its name resolved too.

    ``os.replace`` puts a file at the first (a symlink at the name is replaced); opening
    the name would reach the second (a symlink followed). Both are checked.
    """
    absolute = os.path.abspath(path)
    folder, name = os.path.split(absolute)
    return tuple(dict.fromkeys((os.path.join(os.path.realpath(folder), name), os.path.realpath(absolute))))


def refuse_in_caches(path: str, roots: Iterable[str], what: str) -> None:
    """Raise :class:`UsageError` (exit 2) when ``path`` resolves into (or onto) one of ``roots``.

    ``what`` names the option in the message (``--plan-out``). Roots are resolved too, so a
    cache reached through a symlink, or an output reached through one, is still seen.

    >>> refuse_in_caches("/tmp/plan.json", ["/srv/hub"], "--plan-out")
    >>> refuse_in_caches("/srv/hub/models--a--b/blobs/e1", ["/srv/hub"], "--plan-out")
    Traceback (most recent call last):
    ...
    hfcache.errors.UsageError: --plan-out /srv/hub/models--a--b/blobs/e1 is inside the cache /srv/hub: ...
    """
    places = landing_places(path)
    for root in dict.fromkeys(roots):
        real_root = os.path.realpath(root)
        for place in places:
            if _within(place, real_root):
                shown = path if place == path else f"{path} (resolves to {place})"
                raise UsageError(
                    f"{what} {shown} is inside the cache {root}: an output file there could replace a model's "
                    "files; choose a path outside every cache",
                    path=path,
                )


def atomic_write(path: str, data: bytes | str, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically: temp file in the same folder, fsync, ``os.replace``.

    A symlink at ``path`` is replaced by the file, never followed. ``mode`` sets the
    permissions (default: the temporary file's 0600). Raises ``OSError``; the temporary
    file never stays behind.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    absolute = os.path.abspath(path)
    folder, name = os.path.split(absolute)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if mode is not None:
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, absolute)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable; a folder that cannot be opened or synced is no error."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_append_nofollow(path: str, mode: int = 0o644) -> int:
    """Open ``path`` to append (created with ``mode`` if missing), never through a symlink at its name.

    Returns the file descriptor. Raises ``OSError`` with a readable ``strerror`` for a
    symlink at the name, and for a regular file with more than one hard link (appending to
    it would grow every other name, a cache's blob among them).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and os.path.islink(path)):  # EMLINK: FreeBSD
            raise OSError(e.errno, "it is a symbolic link (a log is never written through one)", path) from None
        raise
    try:
        st = os.fstat(fd)
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            raise OSError(errno.EMLINK, f"it has {st.st_nlink} hard links (a log has one: another could be a cache's file)", path)
    except BaseException:
        os.close(fd)
        raise
    return fd
