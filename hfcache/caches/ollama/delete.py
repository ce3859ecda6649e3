"""Deleting from an Ollama store: ``ollama rm``'s order, with the manifests read again before any blob goes.

``ollama rm`` (``server/routes.go`` ``DeleteHandler``) removes a tag's manifest and prunes the
emptied folders (``Manifest.Remove``, ``PruneDirectory``), then every blob of it no other
manifest names (``Manifest.RemoveLayers``). hfcache keeps that order and adds what a store
shared by running pulls needs:

1. **Before a model's tags go** (:meth:`OllamaDeletion.item_busy`): nothing may be downloading
   into the store, since blobs are shared by every model: no partial download or blob that
   no manifest names yet younger than the grace period (a pull writes its manifest only after
   all its blobs, ``server/images.go`` ``PullModel``; Ollama's own prune spares such blobs for
   ``layerPruneGracePeriod``), and every manifest must read (one being written, by
   ``os.WriteFile``, is not).
2. **Re-validated on disk** (:meth:`OllamaDeletion.revalidate`): the manifest still names the
   plan's blobs (a tag pulled again since is skipped), and unless the plan removes the model,
   another tag of it remains.
3. **The manifest is unlinked**, never rewritten: no truncated manifest is ever left (one
   would stop Ollama's own prune for good). A model's last tag takes its emptied folders,
   ``rmdir`` only, up to (never including) ``manifests/``.
4. **Blobs**: every manifest of the store is read again; a blob any of them names stays (a
   pull or ``ollama cp`` since the plan), and if one cannot be read, every blob stays (they are
   orphans then, junk for a later prune). The others are renamed into hfcache's folder
   ``.hfcache-trash/`` beside ``blobs/`` (so a pull that looks for one now downloads it again);
   after a settling time the manifests are read once more, and a blob one names goes back,
   the rest are unlinked.

Killed after 3, the blobs are orphans (junk, as ``PruneLayers`` sees them); killed during 4,
:meth:`OllamaDeletion.recover` (run under the prune lock before anything else) puts back
every blob set aside that a manifest names (all of them while a manifest cannot be read), and
removes the rest; the scan already reads them so. Left open: a pull that found a blob present
just before it was set aside and writes its manifest after the last reading (more than the
settling time later) names a blob that is gone; ``ollama pull`` downloads it again.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat as stat_mod
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from hfcache.caches.deletion import Finisher, Going, Outcomes, young
from hfcache.caches.ollama.layout import BLOB_RE, BLOBS, MANIFESTS, PARTIAL_RE, TEMP_RE, TRASH, ManifestError, blob_name
from hfcache.caches.ollama.layout import parse_manifest as _parse
from hfcache.caches.ollama.scan import allocated, open_noatime, read_fd
from hfcache.fs.ops import Tree, UnsafePath
from hfcache.model import CacheInventory, Item, Leftover, OrphanFile, PartialFile, Revision

if TYPE_CHECKING:
    from hfcache.plan.decisions import PlanUnit

log = logging.getLogger(__name__)

__all__ = ["OLLAMA_DELETION", "TRASH", "OllamaDeletion"]


class Named(NamedTuple):
    """What every manifest of the store names now (blob file names); ``unreadable``: the first that cannot be read."""

    blobs: frozenset[str]
    unreadable: str | None


def read_manifest_at(tree: Tree, path: str) -> frozenset[str] | None:
    """The blob names one manifest names, read strictly (never through a link); None when it is gone.

    Raises OSError (a symlink, a mount point, unreadable) or :class:`ManifestError`.
    """
    try:
        with tree.parent(path) as (dfd, name):
            try:
                fd = open_noatime(name, dir_fd=dfd)
            except FileNotFoundError:
                return None
            try:
                data, _ = read_fd(fd, path)
            finally:
                os.close(fd)
    except FileNotFoundError:
        return None  # a folder on the way is gone
    return frozenset(n for d in _parse(data).named if (n := blob_name(d)))


def named_now(tree: Tree) -> Named:
    """Every manifest of ``manifests/<host>/<namespace>/<model>/<tag>``, read now (``manifest.Manifests``' glob).

    A symlink on the way (Ollama's glob follows it; hfcache never does), a mount point, a
    folder or file that cannot be read, a manifest that does not parse: ``unreadable`` says
    which, and no blob may go.
    """
    named: set[str] = set()
    top = os.path.join(tree.path, MANIFESTS)
    tree.forget(top)  # every folder looked up afresh: one removed and made again since (PruneDirectory) is seen
    stack = [(top, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = tree.entries(folder)
        except (OSError, UnsafePath) as e:
            return Named(frozenset(named), f"{folder}: {e.strerror or e}")
        for name, is_dir in entries:
            path = os.path.join(folder, name)
            if depth < 3:
                if is_dir:
                    stack.append((path, depth + 1))
                    continue
                try:
                    st = tree.lstat(path)
                except OSError as e:
                    return Named(frozenset(named), f"{path}: {e.strerror or e}")
                if st is not None and stat_mod.S_ISLNK(st.st_mode):
                    return Named(frozenset(named), f"{path}: a symlink among the manifests")
                continue  # a stray file Ollama's glob never reaches
            if is_dir:
                continue  # Manifests skips folders where a tag should be
            try:
                found = read_manifest_at(tree, path)
            except (OSError, ManifestError) as e:
                return Named(frozenset(named), f"{path}: {getattr(e, 'strerror', None) or e}")
            named |= found or frozenset()
    return Named(frozenset(named), None)


def _blob(tree: Tree, name: str) -> str:
    return os.path.join(tree.path, BLOBS, name)


def _aside(tree: Tree, name: str) -> str:
    return os.path.join(tree.path, TRASH, name)


def _prune_folders(tree: Tree, folder: str) -> None:
    """``PruneDirectory`` for one emptied model folder: it and its parents, ``rmdir`` only, never ``manifests/``."""
    stop = os.path.join(tree.path, MANIFESTS)
    while folder.startswith(stop + os.sep):
        try:
            tree.rmdir(folder)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                log.info("%s: not removed: %s", folder, e.strerror or e)
            return  # something is (or came) in it: it stays, and so do its parents
        folder = os.path.dirname(folder)


class OllamaDeletion:
    """The Ollama kind's deletion steps (see the module docstring)."""

    follow_links = False

    # -- what may be touched -------------------------------------------------------------------

    def targets(self, cache: CacheInventory, item: Item, going: Going) -> list[str]:
        paths = [rev.path for _, rev in going]
        paths += [os.path.join(cache.root, BLOBS, n) for n in sorted({n for _, rev in going for n in rev.blobs})]
        if {rev.revision for _, rev in going} >= {r.revision for r in item.revisions}:
            paths += _folders(cache.root, item.path)
        return paths

    def junk_targets(self, cache: CacheInventory, unit: PlanUnit, found: object) -> list[str]:
        if isinstance(found, Leftover):
            return _folders(cache.root, unit.path)
        if isinstance(found, PartialFile) and (match := PARTIAL_RE.fullmatch(os.path.basename(unit.path))):
            blobs = os.path.dirname(unit.path)
            try:
                names = os.listdir(blobs)
            except OSError:
                names = []
            others = [n for n in sorted(names) if _same_download(n, match) and n != match.group(0)]
            return [unit.path, *(os.path.join(blobs, n) for n in others)]
        return [unit.path]

    # -- just before a model's tags go ---------------------------------------------------------

    def item_busy(
        self, tree: Tree, cache: CacheInventory, path: str, item_id: str | None, grace: float, now: float
    ) -> str | None:
        """A pull running anywhere in the store (blobs are any model's), or a manifest that cannot be read now."""
        referenced = {os.path.basename(p) for p in (cache.ledger.payloads if cache.ledger else ())}
        tree.forget(os.path.join(tree.path, BLOBS))
        try:
            names = tree.listdir(os.path.join(tree.path, BLOBS))
        except (OSError, UnsafePath) as e:
            return f"{BLOBS}/ cannot be read now ({e.strerror or e})"
        for name in sorted(names):
            if PARTIAL_RE.fullmatch(name) or TEMP_RE.fullmatch(name):
                what = "a download into this Ollama store may be running"
            elif BLOB_RE.fullmatch(name) and name not in referenced:
                what = "a pull may be about to write the manifest naming it"
            else:
                continue
            age = young(tree, _blob(tree, name), now, grace)
            if age:
                return f"{what} ({name} modified {age} ago)"
        unreadable = named_now(tree).unreadable
        if unreadable:
            return f"a manifest cannot be read now, so nothing of this store is deleted ({unreadable})"
        return None

    def revalidate(self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision) -> str | None:
        tree.forget(item.path)  # the disk as it is now, every folder looked up afresh
        try:
            now = read_manifest_at(tree, rev.path)
        except (OSError, ManifestError) as e:
            return f"its manifest cannot be read now ({getattr(e, 'strerror', None) or e})"
        if now is None:
            return "no longer in the cache"
        if now != rev.blobs:
            return "its manifest changed since the plan (the tag was pulled again)"
        if not unit.item_removed:
            try:
                others = [n for n, is_dir in tree.entries(item.path) if not is_dir and n != rev.revision]
            except (OSError, UnsafePath) as e:
                return f"its model's folder cannot be read now ({e.strerror or e})"
            if not others:
                return "it is now the model's last tag (the others are gone since the plan)"
        return None

    # -- a tag -----------------------------------------------------------------------------------

    def remove_revision(
        self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision, out: Outcomes
    ) -> tuple[int, str | None]:
        """Unlink the manifest (``Manifest.Remove``): the tag is gone at once, whole; its blobs go with the model's rest."""
        _, error = tree.unlink(rev.path, count=False)  # (Ollama counts no manifest in a size; nor does the plan)
        log.debug("remove %s: %s", rev.path, error or "done")
        return 0, error

    # -- what the tags shared --------------------------------------------------------------------

    def remove_rest(
        self, tree: Tree, cache: CacheInventory, item: Item, gone: Going, stay: Sequence[Revision], out: Outcomes
    ) -> Finisher | None:
        """Emptied folders, then (``Manifest.RemoveLayers``) the blobs no manifest names now, set aside to settle."""
        if not gone:
            return None
        if not stay:
            _prune_folders(tree, item.path)
        kept = set().union(*(r.blobs for r in stay)) if stay else set()
        owner: dict[str, str] = {}  # blob name -> the unit whose freed bytes it counts to (the last naming it)
        for unit, rev in reversed(gone):
            for name in sorted(rev.blobs - kept):
                owner.setdefault(name, unit.path)
        return self._set_aside(tree, owner, out, gone[-1][0].path, ", ".join(rev.revision for _, rev in gone))

    def _set_aside(self, tree: Tree, owner: dict[str, str], out: Outcomes, last: str, what: str) -> Finisher | None:
        if not owner:
            return None
        now = named_now(tree)
        if now.unreadable:
            why = f"a manifest cannot be read now ({now.unreadable})"
            out[last].add(0, f"the blobs of {what} stay (orphans for a later prune --junk): {why}")
            return None
        try:
            tree.makedirs(os.path.join(tree.path, TRASH))
        except OSError as e:
            out[last].add(0, f"{os.path.join(tree.path, TRASH)}: {e.strerror or e}")
            return None
        aside: dict[str, str] = {}
        for name, unit_path in owner.items():
            if name in now.blobs:
                continue  # named by a manifest written since the plan (a pull, ollama cp): it stays
            try:
                tree.rename(_blob(tree, name), _aside(tree, name))
            except FileNotFoundError:
                continue
            except OSError as e:
                out[unit_path].add(0, f"{_blob(tree, name)}: {e.strerror or e}")
                continue
            aside[name] = unit_path

        def finish(tree: Tree) -> None:
            settle(tree, aside, out)

        return finish if aside else None

    # -- junk ------------------------------------------------------------------------------------

    def remove_junk(self, tree: Tree, cache: CacheInventory, unit: PlanUnit, found: object, out: Outcomes) -> Finisher | None:
        if isinstance(found, Leftover):
            _prune_folders(tree, unit.path)
            return None
        if isinstance(found, OrphanFile):  # a blob a pull may name by now: the same steps as a tag's blobs
            return self._set_aside(tree, {os.path.basename(unit.path): unit.path}, out, unit.path, "this orphan")
        match = PARTIAL_RE.fullmatch(os.path.basename(unit.path))
        if isinstance(found, PartialFile) and match:
            out[unit.path].add(*remove_download(tree, os.path.dirname(unit.path), match))
            return None
        out[unit.path].add(*tree.remove(unit.path))
        return None

    # -- after a kill ------------------------------------------------------------------------------

    def recover(self, tree: Tree, cache: CacheInventory) -> list[str]:
        """Blobs a killed prune set aside: back when a manifest names them (or one cannot be read), else removed."""
        trash = os.path.join(tree.path, TRASH)
        try:
            names = sorted(n for n in tree.listdir(trash) if BLOB_RE.fullmatch(n))
        except (OSError, UnsafePath) as e:
            return [f"{trash}: cannot be read ({e.strerror or e})"]
        if not names:
            return []
        now = named_now(tree)
        notes = []
        for name in names:
            if now.unreadable or name in now.blobs:
                error = restore(tree, name)
                notes.append(f"{_blob(tree, name)}: put back, a manifest names it (an interrupted prune had set it aside)")
            else:
                _, error = tree.unlink(_aside(tree, name))
                notes.append(f"{_blob(tree, name)}: removed (an interrupted prune had set it aside, and no manifest names it)")
            if error:
                notes[-1] = f"{_blob(tree, name)}: set aside by an interrupted prune, and left so: {error}"
        return notes


def settle(tree: Tree, aside: dict[str, str], out: Outcomes) -> None:
    """After the settling time: the manifests read once more; a blob one names goes back, the rest are unlinked."""
    now = named_now(tree)
    for name, unit_path in aside.items():
        if now.unreadable or name in now.blobs:
            error = restore(tree, name)
            log.info("%s: put back: %s", _blob(tree, name), now.unreadable or "a manifest written meanwhile names it")
            if error:
                out[unit_path].add(0, error)
            continue
        freed, error = tree.unlink(_aside(tree, name))
        out[unit_path].add(freed, error)
        log.debug("remove %s: %s", _blob(tree, name), error or f"done, {freed} bytes freed")


def restore(tree: Tree, name: str) -> str | None:
    """Put a blob set aside back in ``blobs/``; when a pull brought it back meanwhile, the copy set aside goes."""
    tree.forget(os.path.join(tree.path, BLOBS))  # back into the blobs/ folder there is now
    if tree.lstat(_blob(tree, name)) is not None:
        return tree.unlink(_aside(tree, name), count=False)[1]  # (the same bytes: content-addressed, verified)
    try:
        tree.rename(_aside(tree, name), _blob(tree, name))
    except OSError as e:
        return f"{_aside(tree, name)}: {e.strerror or e}"
    return None


def _family(match: re.Match[str]) -> tuple[str, str]:
    """A download's key: its blob and which writer's (``server/download.go``'s ``-partial``, ``x/transfer``'s ``.tmp``)."""
    return match.group(1), ".tmp" if match.group(2) == ".tmp" else "-partial"


def _same_download(name: str, match: re.Match[str]) -> bool:
    other = PARTIAL_RE.fullmatch(name)
    return other is not None and _family(other) == _family(match)


def _part_order(name: str) -> tuple[bool, int, str]:
    """Part files by number, the data file (``-partial``, ``.tmp``) last."""
    data = name.endswith(("-partial", ".tmp"))
    number = name.rsplit("-", 1)[1]
    return (data, int(number) if not data and number.isdigit() else 0, name)


def remove_download(tree: Tree, blobs: str, match: re.Match[str]) -> tuple[int, str | None]:
    """A download: its part files first (``blobDownload.Prepare`` resumes from them), then its data file.

    Gone in that order, a download killed half-way leaves a data file without parts, which a
    pull starts afresh, never parts claiming bytes of a data file that is gone. The bytes freed
    are what the files took on disk (the data file is sparse until written), as the scan counted.
    """
    names = sorted({match.group(0), *(n for n in tree.listdir(blobs) if _same_download(n, match))}, key=_part_order)
    freed, first_error = 0, None
    for name in names:
        path = os.path.join(blobs, name)
        st = tree.lstat(path)
        if st is None:
            continue
        _, error = tree.unlink(path, count=False)
        if error:
            first_error = first_error or error
        elif st.st_nlink <= 1:
            freed += allocated(st)
    return freed, first_error


def _folders(root: str, folder: str) -> list[str]:
    """A model's folder and the folders above it, up to (not including) ``manifests/``: what pruning them may ``rmdir``."""
    stop = os.path.join(root, MANIFESTS)
    out = []
    while folder.startswith(stop + os.sep):
        out.append(folder)
        folder = os.path.dirname(folder)
    return out


OLLAMA_DELETION = OllamaDeletion()
