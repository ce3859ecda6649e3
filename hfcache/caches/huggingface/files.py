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


def _files(item: Item, rev: Revision) -> Iterator[tuple[str, os.DirEntry[str], bool, str | None]]:
    """Every file of the snapshot ``rev``: (name in the repo, its entry, whether a link, the blob the link reaches).

    Folders are walked, never through a link; the listing's types are used (no ``lstat``), and
    only links are read: the hub's own ``../../blobs/<name>`` is recognised by its prefix at each
    depth (a 100,000-file repeat verify walks them all), any other target resolved; a link
    leading elsewhere reaches no blob (None). What vanishes meanwhile is skipped.
    """
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
                    yield name, entry, False, None
                    continue
                else:
                    continue
            except OSError:
                continue
            rest = target[len(up) :] if target.startswith(up) else ""
            yield name, entry, True, rest if rest and "/" not in rest else _blob_of(entry.path, target, item.path)


def revision_files(item: Item, rev: Revision) -> list[RevisionFile]:
    """Every file of the snapshot ``rev``, by its name in the repo; folders are walked, never through a link."""
    out: list[RevisionFile] = []
    for name, entry, is_link, blob in _files(item, rev):
        try:
            if not is_link:  # a copy: no-symlink mode
                st = entry.stat(follow_symlinks=False)
                out.append(RevisionFile(name, entry.path, os.path.relpath(entry.path, item.path), st.st_size, st.st_atime))
                continue
            bst = os.stat(os.path.join(item.path, "blobs", blob)) if blob else None  # (through a shared-store link)
        except OSError:
            bst = None
        if bst is not None and stat_mod.S_ISREG(bst.st_mode):
            out.append(RevisionFile(name, entry.path, f"blobs/{blob}", bst.st_size, bst.st_atime))
        else:
            out.append(RevisionFile(name, entry.path, None, 0))  # dangling, or a link elsewhere
    return sorted(out)


_HEX = "0123456789abcdef"


def revision_hashes(cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
    """What each file of ``rev`` should hash to: its blob's name is its ETag, a content hash (``hfcache verify``).

    ``blobs/<64 hex>`` is the sha256 of the file (LFS and Xet files), ``blobs/<40 hex>`` git's
    blob hash (``sha1(b"blob <size>\\0" + content)``, a file kept in git): huggingface_hub's
    ``_normalize_etag``. Another name (a mirror's ETag) or a copy made without symlinks
    carries no hash. A link's blob is not looked at here: the verify finds a missing one.
    """
    out = []
    blobs_dir = os.path.join(item.path, "blobs")
    for name, entry, is_link, blob in _files(item, rev):
        if not is_link:
            out.append(Expected(name, entry.path, None, why="a copy made without symlinks: its name carries no hash"))
        elif blob is None:
            out.append(Expected(name, entry.path, None, why="a link out of the repo's blobs/: not the hub's layout"))
        elif len(blob) not in (40, 64) or blob.strip(_HEX):
            out.append(Expected(name, entry.path, None, why=f"its blob's name {blob!r} is no content hash (a mirror's ETag)"))
        else:
            algorithm = "sha256" if len(blob) == 64 else "git-sha1"
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
