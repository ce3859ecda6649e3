"""Strict file operations inside one cache root: every step relative to an open folder, on one mount.

A deletion that rebuilds an absolute path between a check and an action can be redirected:
a folder on the way swapped for a symlink, or a folder mounted over, sends the kernel
somewhere else at the next call. :class:`Tree` never does that:

* the root is opened once (``O_DIRECTORY | O_NOFOLLOW``) and its device and mount id kept;
* every path below it is reached one component at a time, each opened with
  ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's descriptor, and checked to be on
  the root's mount (a bind mount keeps ``st_dev``, so mount ids are compared too, see
  :mod:`hfcache.fs.mounts`). A symlink on the way is an error (``ELOOP``), never followed;
* removal, renaming and reading act with ``dir_fd=`` on the last component. A symlink met
  inside a tree is unlinked, never its target; a mount point met inside a tree is neither
  entered nor removed (:class:`UnsafePath`), and the folders holding it stay.

Freed bytes are counted from the ``lstat`` of what was unlinked, made relative to the same
folder descriptor: a regular file's size when that was its last link.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from hfcache.fs.mounts import MountWatch, mount_id
from hfcache.fs.removal import Batch, error_line, remove_tree, unlink_at

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
# How many folder descriptors a tree keeps open between calls (the folders of one repo, and more).
MAX_HELD = 64


class UnsafePath(OSError):
    """A path component is a symlink, not a folder, or on another mount: nothing done through it."""


class Tree:
    """An open cache root; paths given to its methods are absolute paths inside it (as the scan reports them).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, root: str) -> None:
        # When what a deletion works from was read (the fresh scan): anything written into an item since is news to it.
        self.since: float | None = None
        self.path = os.path.realpath(root)
        self.fd = os.open(self.path, _DIR_FLAGS)
        st = os.fstat(self.fd)
        self.dev = st.st_dev
        self.mnt = mount_id(self.fd)
        self._prefix = self.path.rstrip(os.sep) + os.sep
        # Folders opened strictly, by their components below the root, most recent last. A held
        # descriptor keeps naming the folder it was opened on, whatever happens to the path
        # since (as rm -rf's do); entries are dropped when hfcache itself renames or removes
        # that folder or one above it (:meth:`forget`).
        self._dirs: OrderedDict[tuple[str, ...], int] = OrderedDict()
        # For each folder, how many held descriptors are of it or below it (what forget looks up).
        self._below: dict[tuple[str, ...], int] = {}
        # Descriptors a caller is using right now (inside :meth:`parent`): one that leaves the
        # cache meanwhile is closed only when the last user is done, so that its number is never
        # reused under a caller's feet.
        self._in_use: dict[int, int] = {}
        self._released: set[int] = set()
        self._mounts: MountWatch | None = None
        # Removals queued by remove_later and unlink_later, carried out by unlink_pending.
        self._batch: Batch | None = None

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.unlink_pending()
        while self._dirs:
            self._release(self._dirs.popitem()[1])
        self._below.clear()
        if self._mounts is not None:
            self._mounts.close()
            self._mounts = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def detach(self) -> None:
        """After a fork, in the child: descriptors of its own, none shared with the parent or its siblings.

        A folder descriptor's read position belongs to the open file, which a fork shares: two
        processes listing one folder through it would each miss or repeat entries. So the root
        is opened again through its own descriptor (``.`` relative to it: the same folder,
        whatever its path names now), the held folders are let go (each is opened strictly
        again when next needed), and the mount table gets a descriptor of its own (a change is
        reported once per open file).
        """
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.fd)
        for held in self._dirs.values():
            os.close(held)
        self._dirs.clear()
        self._below.clear()
        self._in_use.clear()
        self._released.clear()
        if self._mounts is not None:
            self._mounts.close()
            self._mounts = None
        if self._batch is not None:  # (the parent's to carry out)
            self._batch.drop()
            self._batch = None
        os.close(self.fd)
        self.fd = fd

    def forget(self, path: str) -> None:
        """Drop the held descriptors of ``path`` and of every folder below it (it was renamed or removed)."""
        parts = tuple(self.parts(path)) if path != self.path else ()
        n = len(parts)
        if self._batch is not None:
            self._batch.forget(parts)
        if n and parts not in self._below:
            return  # the usual case: nothing held there
        for key in [k for k in self._dirs if k[:n] == parts]:
            self._drop(key)

    def _hold(self, key: tuple[str, ...], fd: int) -> None:
        self._dirs[key] = fd
        below = self._below
        for i in range(1, len(key) + 1):
            below[key[:i]] = below.get(key[:i], 0) + 1
        if len(self._dirs) > MAX_HELD:
            self._drop(next(iter(self._dirs)))

    def _drop(self, key: tuple[str, ...]) -> None:
        fd = self._dirs.pop(key)
        below = self._below
        for i in range(1, len(key) + 1):
            n = below[key[:i]] - 1
            if n:
                below[key[:i]] = n
            else:
                del below[key[:i]]
        self._release(fd)

    def _release(self, fd: int) -> None:
        """A held descriptor left the cache: close it now, or when its last user is done."""
        if fd in self._in_use:
            self._released.add(fd)
        else:
            os.close(fd)

    # -- reaching a folder ---------------------------------------------------------------------

    def parts(self, path: str) -> list[str]:
        """The components of ``path`` below the root; refuses anything not strictly inside, or unnormalised."""
        prefix = self._prefix
        if not path.startswith(prefix):
            raise UnsafePath(errno.EXDEV, f"not a normalised path inside {self.path}", path)
        parts = path[len(prefix) :].split(os.sep)
        # (what os.path.normpath would change in a relative path: an empty, "." or ".." component)
        if "" in parts or "." in parts or ".." in parts:
            raise UnsafePath(errno.EINVAL, "not a normalised path", path)
        return parts

    def check_mount(self, fd: int, where: str) -> None:
        """Raise :class:`UnsafePath` when the folder ``fd`` is not on the root's mount (a mount point)."""
        # One mount id says it all (a bind mount keeps st_dev); without one, the device must do.
        if (mount_id(fd) != self.mnt) if self.mnt is not None else (os.fstat(fd).st_dev != self.dev):
            raise UnsafePath(errno.EXDEV, "a mount point: never entered or removed", where)

    def _open_sub(self, parent: int, name: str, where: str) -> int:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(e.errno, "a symlink or not a folder: not followed", where) from None
            raise
        try:
            self.check_mount(fd, where)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _dir(self, parts: list[str] | tuple[str, ...]) -> int:
        """A held descriptor of the folder ``parts`` below the root, reached strictly (never close it)."""
        key = tuple(parts)
        if not key:
            return self.fd
        fd = self._dirs.get(key)
        if fd is not None:
            self._dirs.move_to_end(key)
            return fd
        parent = self._dir(key[:-1])
        fd = self._open_sub(parent, key[-1], self._prefix + os.sep.join(key))
        self._hold(key, fd)
        return fd

    def open_dir(self, parts: list[str]) -> int:
        """A new descriptor of the folder ``parts`` below the root, reached strictly (the caller closes it)."""
        return os.dup(self._dir(parts))

    def _at(self, path: str) -> tuple[int, str]:
        """``(fd of the folder holding path, its last component)``, reached strictly, for one call at once.

        The descriptor is held by the tree and stays open until the next call that opens or
        forgets a folder of it; for longer, use :meth:`parent`.
        """
        parts = self.parts(path)
        return self._dir(parts[:-1]), parts[-1]

    @contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str]]:
        """``(fd of the folder holding path, its last component)``, reached strictly; the fd is held by the tree."""
        parts = self.parts(path)
        fd = self._pin(self._dir(parts[:-1]))
        try:
            yield fd, parts[-1]
        finally:
            self._unpin(fd)

    def _pin(self, fd: int) -> int:
        """Keep ``fd`` open, even if it leaves the cache, until :meth:`_unpin`."""
        self._in_use[fd] = self._in_use.get(fd, 0) + 1
        return fd

    def _unpin(self, fd: int) -> None:
        n = self._in_use[fd] - 1
        if n:
            self._in_use[fd] = n
            return
        del self._in_use[fd]
        if fd in self._released:
            self._released.discard(fd)
            os.close(fd)

    # -- looking -------------------------------------------------------------------------------

    def lstat(self, path: str) -> os.stat_result | None:
        """The entry itself (never followed); None when it, or a folder on the way, is gone."""
        try:
            fd, name = self._at(path)
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def listdir(self, path: str) -> list[str]:
        """Names in the folder ``path`` (empty when it is gone); a symlink or mount point raises UnsafePath."""
        try:
            # (a held descriptor, listed at once: os.listdir reads a duplicate of it from the start)
            return os.listdir(self._dir([] if path == self.path else self.parts(path)))
        except FileNotFoundError:
            return []

    def entries(self, path: str) -> list[tuple[str, bool]]:
        """``(name, is a folder)`` for each entry of the folder ``path`` (empty when it is gone), types from the listing.

        A symlink is never a folder here. Like :meth:`listdir`, a symlink or mount point on
        the way raises UnsafePath.
        """
        try:
            fd = self._dir([] if path == self.path else self.parts(path))
            with os.scandir(fd) as it:
                return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except FileNotFoundError:
            return []

    def readlink(self, path: str) -> str | None:
        """The target of the symlink ``path`` (reached strictly, never followed); None when it is gone or not a link."""
        try:
            fd, name = self._at(path)
            return os.readlink(name, dir_fd=fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.EINVAL:  # not a link
                return None
            raise

    def read_text(self, path: str, limit: int = 4096) -> str | None:
        """The start of a small regular file (never through a link); None when it is missing or not a file."""
        try:
            dfd, name = self._at(path)
            fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None
            raise
        try:
            if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
                return None
            return os.read(fd, limit).decode("utf-8", "replace")
        finally:
            os.close(fd)

    # -- changing ------------------------------------------------------------------------------

    def makedirs(self, path: str) -> None:
        """Create ``path`` and missing folders above it (umask applies), each reached strictly."""
        parts = self.parts(path)
        try:
            self._dir(parts)  # almost always there already
            return
        except FileNotFoundError:
            pass
        for i in range(len(parts)):
            try:
                self._dir(parts[: i + 1])
            except FileNotFoundError:
                try:
                    os.mkdir(parts[i], 0o777, dir_fd=self._dir(parts[:i]))
                except FileExistsError:
                    pass
                self._dir(parts[: i + 1])

    def links(self, path: str, *, strict: bool = False) -> Iterator[str]:
        """The target of every symlink in the tree ``path`` (folders reached strictly; links never followed).

        A folder that cannot be entered (swapped for a symlink, a mount point, not a folder) is
        skipped, or with ``strict`` raises :class:`UnsafePath`: a reading that must see every
        link (which blobs are still linked) cannot take a skipped folder for one without links.
        """
        stack = [self.parts(path)]
        while stack:
            parts = stack.pop()
            try:
                fd = self.open_dir(parts)
            except FileNotFoundError:
                continue
            except (UnsafePath, NotADirectoryError) as e:
                if strict:
                    raise UnsafePath(errno.EXDEV, f"cannot read every link ({e.strerror or e})", os.sep.join(parts)) from None
                continue
            try:
                with os.scandir(fd) as it:
                    entries = [(e.name, e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in it]
                for name, is_link, is_dir in entries:
                    # The types come from the listing (no stat); a folder swapped for a link
                    # since is refused when opened, a link swapped for a file fails readlink.
                    if is_link:
                        try:
                            yield os.readlink(name, dir_fd=fd)
                        except OSError:
                            pass
                    elif is_dir:
                        stack.append([*parts, name])
            finally:
                os.close(fd)

    def rmdir(self, path: str) -> None:
        """Remove the empty folder ``path`` (reached strictly); raises OSError as ``os.rmdir`` does."""
        fd, name = self._at(path)
        self.forget(path)  # (path and below: never its parent's descriptor)
        os.rmdir(name, dir_fd=fd)

    def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (both inside the root, on its mount), reached strictly; replaces a file at dst."""
        sparts, dparts = self.parts(src), self.parts(dst)
        sfd = self._pin(self._dir(sparts[:-1]))
        try:
            dfd = self._pin(self._dir(dparts[:-1]))
            try:
                self.forget(src)
                self.forget(dst)
                os.rename(sparts[-1], dparts[-1], src_dir_fd=sfd, dst_dir_fd=dfd)
            except OSError as e:
                raise OSError(e.errno, e.strerror, src) from None  # the whole path in the message
            finally:
                self._unpin(dfd)
        finally:
            self._unpin(sfd)

    def unlink(self, path: str, *, count: bool = True) -> tuple[int, str | None]:
        """Unlink a file or link (not a folder). Returns (bytes freed, error); a path already gone is no error."""
        try:
            fd, name = self._at(path)
            return unlink_at(fd, name, path, count)
        except FileNotFoundError:
            return 0, None
        except OSError as e:
            return 0, error_line(path, e)

    # -- removing in batches -------------------------------------------------------------------

    def _queue(self) -> Batch:
        if self._batch is None:
            self._batch = Batch()
        return self._batch

    def unlink_later(self, path: str, done: Callable[[int, str | None], None], *, count: bool = True) -> None:
        """Unlink the file or link ``path`` with the next :meth:`unlink_pending`; ``done(bytes freed, error)`` then.

        Its folder is reached strictly now and held open until then: what happens to the
        path meanwhile changes nothing of where the unlink acts.
        """
        try:
            parts = self.parts(path)
            batch = self._queue()
            fd = batch.folder(tuple(parts[:-1]), self._dir)
        except OSError as e:
            done(0, None if isinstance(e, FileNotFoundError) else error_line(path, e))
            return
        batch.add(path, done, [(fd, parts[-1], False, count)])
        self._spill()

    def remove_later(
        self, path: str, done: Callable[[int, str | None], None], *, count: bool = True, also: Sequence[str] = ()
    ) -> str | None:
        """Remove a file, a link or a whole tree with the next :meth:`unlink_pending`; ``done(bytes freed, first error)`` then.

        A tree is walked now, strictly (as :meth:`remove` walks it), each folder held open
        until then. Returns at once the error that stops the walk (a folder that cannot be
        entered: a symlink swapped in, a mount point); then nothing is queued and ``done`` is
        not called. A tree with more folders than a batch holds open is removed at once, as
        :meth:`remove` does: then the error that stopped it is returned too, and ``done`` told
        what went. ``also``: paths removed just before it, uncounted, each left out when it
        cannot be walked (its error goes to ``done``). ``done`` is called once.
        """
        self._spill()  # (room for the walk)
        batch = self._queue()
        try:
            main = self._walk(batch, path, count)
        except OSError as e:
            return error_line(path, e)
        freed_now = 0
        if main is None:  # too many folders to hold open at once: removed now
            freed_now, error = self.remove(path, count=count)
            if error:
                done(freed_now, None)
                return error
            main = []
        ops: list[tuple[int, str, bool, bool]] = []
        first = None
        for extra in also:
            try:
                got = self._walk(batch, extra, False)
            except OSError as e:
                first = first or error_line(extra, e)
                continue
            if got is None:
                first = first or self.remove(extra, count=False)[1]
                continue
            ops += got
        told = done
        if first is not None or freed_now:

            def done(freed: int, error: str | None) -> None:
                told(freed + freed_now, first or error)

        batch.add(path, done, ops + main)
        self._spill()
        return None

    def _walk(self, batch: Batch, path: str, count: bool) -> list[tuple[int, str, bool, bool]] | None:
        """The removals of ``path`` (none when it is gone), its folders opened now and held by ``batch``; None past the budget."""
        parts = self.parts(path)
        try:
            fd, name = batch.folder(tuple(parts[:-1]), self._dir), parts[-1]
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return []
        if not stat_mod.S_ISDIR(st.st_mode):
            return [(fd, name, False, count)]
        self.forget(path)
        return batch.walk(self._open_sub, fd, name, path, count)

    def _spill(self) -> None:
        if self._batch is not None and self._batch.full():
            self.unlink_pending()

    def unlink_pending(self) -> None:
        """Carry out the queued removals, back to back (see :class:`hfcache.fs.removal.Batch`)."""
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.run()

    def _mounts_listed(self) -> list[str] | None:
        """The kernel's mount points below the root, as they are now (None: unknown, see :class:`MountWatch`)."""
        if self._mounts is None:
            self._mounts = MountWatch(self.path)
        return self._mounts.points()

    def mount_inside(self, path: str) -> str | None:
        """The first folder below ``path`` that is a symlink's target or on another mount (a mount point), or None.

        A walk over folders only, so that a tree holding a mount point can be refused before
        anything of it is removed (removal refuses it too, but only when it gets there). Where
        the kernel lists no mount point below the root at all, the walk is skipped.
        """
        listed = self._mounts_listed()
        if listed is not None and not any(m == path or m.startswith(path + os.sep) for m in listed):
            return None
        stack = [path]
        while stack:
            folder = stack.pop()
            try:
                fd = self.open_dir(self.parts(folder))
            except UnsafePath:
                return folder
            except OSError:
                continue
            try:
                for name in os.listdir(fd):
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if stat_mod.S_ISDIR(st.st_mode):
                        stack.append(os.path.join(folder, name))
            finally:
                os.close(fd)
        return None

    def remove(self, path: str, *, count: bool = True) -> tuple[int, str | None]:
        """Remove a file, a link or a whole tree, strictly. Returns (bytes freed, first error).

        ``count=False`` removes without counting (files the owning library does not count,
        such as ref files). A path already gone is not an error; a tree that could not be
        emptied is.
        """
        try:
            fd, name = self._at(path)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return 0, None
            if not stat_mod.S_ISDIR(st.st_mode):
                return unlink_at(fd, name, path, count, st)
            self.forget(path)  # (path and below: never its parent's descriptor)
            return remove_tree(self._open_sub, fd, name, path, count)  # (which opens its folders itself)
        except FileNotFoundError:
            return 0, None
        except OSError as e:
            return 0, error_line(path, e)
