"""One file of a hub revision: listed as the hub names it, removed without the revision (``hfcache rm hf://org/name/f``).

A snapshot entry is a relative link to ``blobs/<etag>`` (or, in the no-symlink mode, a copy
of the file). Removing the file from a revision is unlinking that entry, then, once per
repo, taking the blobs no link of the repo reaches any more through the same protocol as a
revision's blobs (:mod:`hfcache.caches.huggingface.blobs`): set aside under the hub's
download lock, read again after the settling time, put back if a download linked them
meanwhile. The links are read before anything is set aside, so a blob another revision
still uses never leaves its place even for a moment.

Killed between the two steps, the blob is an orphan, which ``prune --junk`` removes; set
aside, it is finished by the next run's recovery, as a revision's blobs are.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hfcache.caches.deletion import Finisher, Outcomes
from hfcache.caches.huggingface.blobs import finish_blobs, set_aside, sweep
from hfcache.caches.huggingface.trash import linked_blobs
from hfcache.caches.protocol import Expected
from hfcache.fs.ops import Tree
from hfcache.model import CacheInventory, Item, Revision, RevisionFile

if TYPE_CHECKING:
    from hfcache.plan.decisions import PlanUnit


def _blob_of(entry: str, target: str, repo: str) -> str | None:
    """The name of the repo blob a link at ``entry`` reaches (``target`` as read), or None when it leads elsewhere."""
    resolved = os.path.normpath(os.path.join(os.path.dirname(entry), target))
    return os.path.basename(resolved) if os.path.dirname(resolved) == os.path.join(repo, "blobs") else None


def _walk(rev: Revision) -> Iterator[tuple[str, str, os.stat_result, str | None]]:
    """Every file of the snapshot ``rev``: (name in the repo, entry path, its lstat, the link's target or None).

    Folders are walked, never through a link; what vanishes meanwhile is skipped.
    """
    stack = [rev.path]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if stat_mod.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                    continue
                target = os.readlink(entry.path) if stat_mod.S_ISLNK(st.st_mode) else None
            except OSError:
                continue
            if target is not None or stat_mod.S_ISREG(st.st_mode):
                yield os.path.relpath(entry.path, rev.path).replace(os.sep, "/"), entry.path, st, target


def _blob_stat(item: Item, blob: str | None) -> os.stat_result | None:
    try:
        return os.stat(os.path.join(item.path, "blobs", blob)) if blob else None  # (through a shared-store link)
    except OSError:
        return None


def revision_files(item: Item, rev: Revision) -> list[RevisionFile]:
    """Every file of the snapshot ``rev``, by its name in the repo; folders are walked, never through a link."""
    out: list[RevisionFile] = []
    for name, path, st, target in _walk(rev):
        if target is None:  # a copy: no-symlink mode
            out.append(RevisionFile(name, path, os.path.relpath(path, item.path), st.st_size, st.st_atime))
            continue
        blob = _blob_of(path, target, item.path)
        bst = _blob_stat(item, blob)
        if bst is not None and stat_mod.S_ISREG(bst.st_mode):
            out.append(RevisionFile(name, path, f"blobs/{blob}", bst.st_size, bst.st_atime))
        else:
            out.append(RevisionFile(name, path, None, 0))  # dangling, or a link elsewhere
    return sorted(out)


_HEX = "0123456789abcdef"


def revision_hashes(cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
    """What each file of ``rev`` should hash to: its blob's name is its ETag, a content hash (``hfcache verify``).

    ``blobs/<64 hex>`` is the sha256 of the file (LFS and Xet files), ``blobs/<40 hex>`` git's
    blob hash (``sha1(b"blob <size>\\0" + content)``, a file kept in git): huggingface_hub's
    ``_normalize_etag``. Another name (a mirror's ETag) or a copy made without symlinks
    carries no hash. A link's blob is not looked at here: the verify finds a missing one.

    The walk reads only the listing's types and each link (a 100,000-file repeat verify walks
    them all): the hub's own ``../../blobs/<name>`` is recognised by its prefix at each depth.
    """
    out = []
    blobs_dir = os.path.join(item.path, "blobs")
    stack = [(rev.path, "", "../../blobs/")]  # (folder, its name in the repo, the hub's link prefix there)
    while stack:
        folder, prefix, up = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            name = prefix + entry.name
            try:
                if entry.is_symlink():
                    target = os.readlink(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, name + "/", "../" + up))
                    continue
                elif entry.is_file(follow_symlinks=False):
                    out.append(Expected(name, entry.path, None, why="a copy made without symlinks: its name carries no hash"))
                    continue
                else:
                    continue
            except OSError:
                continue
            blob = target[len(up) :] if target.startswith(up) else _blob_of(entry.path, target, item.path)
            if blob is None or "/" in blob:
                out.append(Expected(name, entry.path, None, why="a link out of the repo's blobs/: not the hub's layout"))
                continue
            algorithm = "sha256" if len(blob) == 64 else "git-sha1" if len(blob) == 40 else None
            if algorithm is None or blob.strip(_HEX):
                out.append(Expected(name, entry.path, None, why=f"its blob's name {blob!r} is no content hash (a mirror's ETag)"))
                continue
            out.append(Expected(name, entry.path, os.path.join(blobs_dir, blob), algorithm, blob))
    out.sort()
    return out


def remove_entry(tree: Tree, item: Item, unit: PlanUnit, rev: Revision) -> tuple[int, str | None, str | None]:
    """Unlink one snapshot entry: (bytes freed, error, the blob it linked to or None); empty folders above it go.

    Every folder on the way is reached strictly (a symlink or a mount point there is an
    error, and nothing is removed).
    """
    blob = None
    try:
        st = tree.lstat(unit.path)
        if st is None:
            return 0, None, None
        if stat_mod.S_ISLNK(st.st_mode):
            target = tree.readlink(unit.path)
            blob = _blob_of(unit.path, target, item.path) if target is not None else None
            freed, error = tree.unlink(unit.path, count=False)  # a link holds no data
        elif stat_mod.S_ISREG(st.st_mode):
            freed, error = tree.unlink(unit.path)
        else:
            return 0, f"{unit.path}: not a file or a link, left alone", None
    except OSError as e:
        return 0, f"{e.filename or unit.path}: {e.strerror or e}; nothing of it was removed", None
    if error:
        return freed, error, None
    folder = os.path.dirname(unit.path)
    while folder.startswith(rev.path + os.sep):  # folders the file leaves empty, up to the snapshot (which stays)
        try:
            tree.rmdir(folder)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                return freed, f"{folder}: {e.strerror or e}", blob
            break
        folder = os.path.dirname(folder)
    return freed, None, blob


def remove_unlinked(tree: Tree, cache: CacheInventory, item: Item, left: dict[str, str], out: Outcomes) -> Finisher | None:
    """Set aside the blobs of ``left`` no link of the repo reaches now; the finisher removes them after settling."""
    linked = linked_blobs(tree, item.path)
    owner = {name: unit_path for name, unit_path in left.items() if name not in linked}
    aside = set_aside(tree, item.path, owner, out)
    if not aside:
        return None
    # A blob that links into the shared store: its payload goes too when nothing links to it any more
    # (huggingface_hub's own sweep_shared_blob decides), as when a revision goes.
    ledger = cache.ledger.blobs.get(item.path, {}) if cache.ledger else {}
    stores = {name: store for name in aside if (store := ledger.get(f"blobs/{name}", (0, None))[1])}

    def finish(tree: Tree) -> None:
        finish_blobs(tree, item.path, aside, out)
        for name, store in stores.items():
            out[aside[name]].add(*sweep(tree, store))

    return finish
