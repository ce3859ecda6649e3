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
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from hfcache.caches.deletion import Finisher, Outcomes
from hfcache.caches.huggingface.blobs import finish_blobs, set_aside, sweep
from hfcache.caches.huggingface.store import blob_of, named_blob
from hfcache.caches.huggingface.trash import linked_blobs
from hfcache.caches.protocol import Expected
from hfcache.fs.ops import Tree
from hfcache.model import CacheInventory, Identity, Item, Revision, RevisionFile

if TYPE_CHECKING:
    from hfcache.plan.decisions import PlanUnit


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
            yield name, entry, True, named_blob(entry.path, target, item.path, up)


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


def _hashed(name: str, path: str, is_link: bool, blob: str | None, blobs_dir: str, seen: Mapping[str, Identity]) -> Expected:
    """What one file should hash to, by the blob its link names (``blobs_dir`` ends with a separator)."""
    if not is_link:
        return Expected(name, path, None, why="a copy made without symlinks: its name carries no hash")
    if blob is None:
        return Expected(name, path, None, why="a link out of the repo's blobs/: not the hub's layout")
    named = blob_hash(blob)
    if named is None:
        return Expected(name, path, None, why=f"its blob's name {blob!r} is no content hash (a mirror's ETag)")
    return Expected(name, path, blobs_dir + blob, named[0], blob, None, seen.get(blob))


def blob_hash(blob: str) -> tuple[str, str] | None:
    """What a hub blob's name says its content hashes to: ``("sha256", name)`` for 64 hex characters (LFS, Xet),
    ``("git-sha1", name)`` for 40 (a file kept in git); None for any other name (a mirror's ETag)."""
    if len(blob) not in (40, 64) or blob.strip(_HEX):
        return None
    return ("sha256" if len(blob) == 64 else "git-sha1", blob)


_HEX = "0123456789abcdef"
_ALGORITHM = {46: "git-sha1", 70: "sha256"}  # by the length of a blob's key, blobs/<40 or 64 hex>


def revision_hashes(cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
    """What each file of ``rev`` should hash to: its blob's name is its ETag, a content hash (``hfcache verify``).

    ``blobs/<64 hex>`` is the sha256 of the file (LFS and Xet files), ``blobs/<40 hex>`` git's
    blob hash (``sha1(b"blob <size>\\0" + content)``, a file kept in git): huggingface_hub's
    ``_normalize_etag``. Another name (a mirror's ETag) or a copy made without symlinks
    carries no hash. A link's blob is not looked at here: the verify finds a missing one.

    The files are the scan's when it listed them (:class:`~hfcache.model.FileListing`, with
    the identity the scan saw of each blob, :attr:`Expected.seen`), else walked now
    (:func:`_files`): the same records either way (:func:`_hashed`; a listed link to a blob
    named by a hash is made inline, the loop of a 100,000-file verify).
    """
    blobs_dir = os.path.join(item.path, "blobs") + os.sep
    listing = cache.listing
    listed = listing.files.get(rev.path) if listing is not None else None
    if listing is None or listed is None:
        out = [_hashed(name, entry.path, is_link, blob, blobs_dir, {}) for name, entry, is_link, blob in _files(item, rev)]
        out.sort()
        return out
    seen = listing.blobs.get(item.path, {})
    new = tuple.__new__  # Expected(...) without the Python-level __new__ of a NamedTuple
    out = []
    for prefix, names, keys in listed:
        top = rev.path + os.sep + prefix
        for name, key in zip(names, keys, strict=True):
            algorithm = _ALGORITHM.get(len(key)) if key else None
            blob = key[6:] if key else None
            if algorithm is None or blob is None or blob.strip(_HEX):
                out.append(_hashed(prefix + name, top + name, key is not None, blob, blobs_dir, seen))
            else:
                out.append(new(Expected, (prefix + name, top + name, blobs_dir + blob, algorithm, blob, None, seen.get(blob))))
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
            blob = blob_of(unit.path, target, item.path) if target is not None else None
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
