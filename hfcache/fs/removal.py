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
from typing import Any

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
