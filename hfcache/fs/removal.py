"""Removing a whole tree strictly, for :meth:`hfcache.fs.ops.Tree.remove`: an explicit stack, one descriptor per level.

Every folder is opened by the tree's strict opener (``O_NOFOLLOW | O_DIRECTORY`` relative
to its parent, on the root's mount), files and links are unlinked relative to their
folder's descriptor (a link, never its target), and a folder goes only when all of it
went: one that cannot be entered (a symlink swapped in, a mount point) stays, and so do
the folders holding it.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import Callable
from typing import Any, NamedTuple

# Deeper than any cache needs: past this a tree is refused rather than holding a descriptor per level.
MAX_DEPTH = 128

# ``open_sub(parent fd, name, its path)``: a new descriptor of the subfolder, opened strictly, else OSError.
OpenSub = Callable[[int, str, str], int]

# A folder being removed: [parent fd, name, fd, path, entries still to handle, whether something inside stayed]
_Frame = list[Any]


def error_line(path: str, e: OSError) -> str:
    return f"{path}: {e.strerror or e}"


def remove_tree(open_sub: OpenSub, parent: int, name: str, path: str, count: bool) -> tuple[int, str | None]:
    """Empty and remove the folder ``name`` of ``parent``: an explicit stack, one descriptor per level."""
    freed = 0
    errors: list[str] = []
    try:
        fd = open_sub(parent, name, path)
    except OSError as e:
        return 0, error_line(path, e)
    # A frame: [parent fd, name, fd, path, entries still to handle, whether something inside stayed]
    frames: list[_Frame] = [[parent, name, fd, path, None, False]]
    try:
        while frames:
            frame = frames[-1]
            dfd, fpath = frame[2], frame[3]
            if frame[4] is None:
                frame[4] = _typed_listing(frame, errors)
            if not frame[4]:
                _leave(frames, errors)
                continue
            entry, is_link, is_dir = frame[4].pop()
            epath = fpath + os.sep + entry
            if not is_dir:
                # A link, or a file not counted, needs no stat: unlink refuses a folder
                # (EISDIR), should one have taken the name since the listing.
                got, err = unlink_at(dfd, entry, epath, count and not is_link)
                freed += got
                if err:
                    errors.append(err)
                    frame[5] = True
                continue
            err = _enter(open_sub, frames, entry, epath)
            if err:
                errors.append(err)
                frame[5] = True
    finally:
        for frame in frames:
            os.close(frame[2])
    return freed, (errors[0] if errors else None)


def _enter(open_sub: OpenSub, frames: list[_Frame], name: str, path: str) -> str | None:
    """Open the subfolder ``name`` of the top frame strictly and push it; the error, if it cannot be."""
    if len(frames) >= MAX_DEPTH:
        return f"{path}: nested deeper than {MAX_DEPTH} folders, not removed"
    try:
        sub = open_sub(frames[-1][2], name, path)
    except FileNotFoundError:
        return None  # gone meanwhile: nothing to remove
    except OSError as e:
        return error_line(path, e)
    frames.append([frames[-1][2], name, sub, path, None, False])
    return None


def _typed_listing(frame: _Frame, errors: list[str]) -> list[tuple[str, bool, bool]]:
    """``(name, is a link, is a folder)`` of the frame's folder, the types from the listing (no stat)."""
    try:
        with os.scandir(frame[2]) as it:
            return [(e.name, e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in it]
    except OSError as e:
        errors.append(error_line(frame[3], e))
        frame[5] = True
        return []


def _leave(frames: list[_Frame], errors: list[str]) -> None:
    """Close the top frame's folder and remove it, unless something inside stayed (then its parent stays too)."""
    pfd, fname, dfd, fpath, _, stayed = frames.pop()
    os.close(dfd)
    if not stayed:
        try:
            os.rmdir(fname, dir_fd=pfd)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            errors.append(error_line(fpath, e))
    if frames:
        frames[-1][5] = True


def unlink_at(fd: int, name: str, path: str, count: bool, st: os.stat_result | None = None) -> tuple[int, str | None]:
    """Unlink ``name`` of the folder ``fd``; with ``count``, the bytes freed (a regular file's last link)."""
    try:
        if count and st is None:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if st is not None and stat_mod.S_ISDIR(st.st_mode):
            return 0, f"{path}: a folder where a file was expected"
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        return 0, None
    except IsADirectoryError:
        return 0, f"{path}: a folder where a file was expected"
    except OSError as e:
        if e.errno == errno.EPERM and stat_mod.S_ISDIR(_mode(fd, name)):
            return 0, f"{path}: a folder where a file was expected"  # (what some systems say of unlinking one)
        return 0, error_line(path, e)
    return (st.st_size if st is not None and stat_mod.S_ISREG(st.st_mode) and st.st_nlink == 1 else 0), None


def _mode(fd: int, name: str) -> int:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        return 0


# Folder descriptors a batch holds open at most before it is carried out.
BATCH_FDS = 256


# Files of several links the batch removes, by (st_dev, st_ino): (links, size, their ops)
_Links = dict[tuple[int, int], tuple[int, int, list[int]]]


class _Op(NamedTuple):
    fd: int
    name: str
    folder: bool
    counted: bool
    request: int


class Batch:
    """Removals walked and checked now, carried out later back to back: :meth:`hfcache.fs.ops.Tree.remove_later`.

    On a disk that discards freed blocks synchronously (ext4 without a journal, mounted
    ``discard``; many cloud disks), every unlink that frees a block waits on the device,
    and a request that follows the previous one at once is served several times faster
    than one that comes after other work. So a prune decides and checks unit after unit,
    and removes what many units left in one run of ``unlink`` and ``rmdir`` calls with
    nothing between them. Each call is relative to a folder descriptor opened strictly when
    the removal was queued, never a path looked up again.
    """

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.folders: dict[tuple[str, ...], int] = {}
        # Every folder of ``folders`` and those above it (what forget looks up: it runs on every rename).
        self.prefixes: set[tuple[str, ...]] = set()
        self.ops: list[_Op] = []
        self.requests: list[tuple[str, Callable[[int, str | None], None]]] = []

    def full(self) -> bool:
        """Whether to carry it out before queueing more (a walk may add up to half the budget)."""
        return len(self.fds) >= BATCH_FDS // 2

    def folder(self, key: tuple[str, ...], open_dir: Callable[[tuple[str, ...]], int]) -> int:
        """An owned descriptor of the folder ``key`` (one per folder and batch)."""
        fd = self.folders.get(key)
        if fd is None:
            fd = os.dup(open_dir(key))
            self.fds.append(fd)
            self.folders[key] = fd
            self.prefixes.update(key[:i] for i in range(len(key) + 1))
        return fd

    def forget(self, parts: tuple[str, ...]) -> None:
        """Look the folder ``parts`` and those below it up afresh from now on (hfcache renamed or removed it)."""
        if parts not in self.prefixes:
            return  # the usual case: nothing of the batch's there
        n = len(parts)
        for key in [k for k in self.folders if k[:n] == parts]:
            del self.folders[key]  # (its descriptor stays the batch's: queued removals act in it)

    def add(self, path: str, done: Callable[[int, str | None], None], ops: list[tuple[int, str, bool, bool]]) -> None:
        n = len(self.requests)
        self.requests.append((path, done))
        self.ops.extend(_Op(*op, n) for op in ops)

    def walk(self, open_sub: OpenSub, parent: int, name: str, path: str, count: bool) -> list[tuple[int, str, bool, bool]] | None:
        """The removals of the tree ``name`` of ``parent``, children before their folder; None past the budget.

        Each folder is opened strictly (``open_sub``) and held by the batch; the error that
        stops the walk is raised, and then the batch holds nothing of it.
        """
        own: list[int] = []
        ops: list[tuple[int, str, bool, bool]] = []
        folders: list[tuple[int, str, bool, bool]] = [(parent, name, True, False)]
        depth0 = path.count(os.sep)
        try:
            own.append(open_sub(parent, name, path))
            stack = [(path, own[0])]
            while stack:
                fpath, dfd = stack.pop()
                with os.scandir(dfd) as it:
                    entries = [(e.name, e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in it]
                for entry, is_link, is_dir in entries:
                    if not is_dir:
                        ops.append((dfd, entry, False, count and not is_link))
                        continue
                    epath = fpath + os.sep + entry
                    if len(own) + len(self.fds) >= BATCH_FDS or epath.count(os.sep) - depth0 >= MAX_DEPTH:
                        for fd in own:
                            os.close(fd)
                        return None
                    try:
                        sub = open_sub(dfd, entry, epath)
                    except FileNotFoundError:
                        continue
                    own.append(sub)
                    stack.append((epath, sub))
                    folders.append((dfd, entry, True, False))
        except BaseException:
            for fd in own:
                os.close(fd)
            raise
        self.fds.extend(own)
        # Each folder after everything in it: a folder is found before what it holds, so the
        # folders in reverse order of discovery come after their contents (files come first).
        return ops + folders[::-1]

    def run(self) -> None:
        """Look at what must be counted, then remove everything back to back, then tell each request."""
        errors: list[str | None] = [None] * len(self.requests)
        try:
            sizes, links, skip = self._look(errors)
            rmdir, unlink = os.rmdir, os.unlink
            failed: list[tuple[int, OSError]] = []
            for i, (fd, name, folder, _, _) in enumerate(self.ops):  # (nothing else in this loop: see the class)
                if i in skip:
                    continue
                try:
                    (rmdir if folder else unlink)(name, dir_fd=fd)
                except OSError as e:
                    failed.append((i, e))
            freed = self._tally(sizes, links, failed, errors)
            requests = self.requests
        finally:
            self.drop()
        for (_, done), got, error in zip(requests, freed, errors, strict=True):
            done(got, error)

    def _error(self, errors: list[str | None], i: int, what: str) -> None:
        request = self.ops[i].request
        errors[request] = errors[request] or f"{self.requests[request][0]}: {what}"

    def _look(self, errors: list[str | None]) -> tuple[dict[int, int], _Links, set[int]]:
        """Before anything goes: the size each counted file frees, files of several links by inode, what to skip."""
        sizes: dict[int, int] = {}
        links: _Links = {}
        skip: set[int] = set()
        for i, op in enumerate(self.ops):
            if not op.counted:
                continue
            try:
                st = os.stat(op.name, dir_fd=op.fd, follow_symlinks=False)
            except OSError as e:
                skip.add(i)
                if not isinstance(e, FileNotFoundError):
                    self._error(errors, i, e.strerror or str(e))
                continue
            if stat_mod.S_ISDIR(st.st_mode):
                skip.add(i)
                self._error(errors, i, "a folder where a file was expected")
            elif stat_mod.S_ISREG(st.st_mode):
                if st.st_nlink == 1:
                    sizes[i] = st.st_size
                else:  # several links: freed if the batch removes them all (then counted once)
                    links.setdefault((st.st_dev, st.st_ino), (st.st_nlink, st.st_size, []))[2].append(i)
        return sizes, links, skip

    def _tally(
        self,
        sizes: dict[int, int],
        links: _Links,
        failed: list[tuple[int, OSError]],
        errors: list[str | None],
    ) -> list[int]:
        """Bytes freed per request: what was unlinked of what ``_look`` counted; the errors."""
        lost = set()
        for i, err in failed:
            lost.add(i)
            if isinstance(err, IsADirectoryError):
                self._error(errors, i, "a folder where a file was expected")
            elif not isinstance(err, FileNotFoundError):
                self._error(errors, i, err.strerror or str(err))
        for nlink, size, at in links.values():
            if len(at) >= nlink and not lost.intersection(at):
                sizes[at[-1]] = size
        freed = [0] * len(self.requests)
        for i, size in sizes.items():
            if i not in lost:
                freed[self.ops[i].request] += size
        return freed

    def drop(self) -> None:
        """Close the descriptors; nothing queued is carried out."""
        for fd in self.fds:
            os.close(fd)
        self.fds, self.folders, self.prefixes, self.ops, self.requests = [], {}, set(), [], []
