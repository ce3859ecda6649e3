"""Deleting from a huggingface_hub cache: the hub's order, made crash-safe and race-safe.

The hub itself (``DeleteCacheStrategy.execute``) unlinks refs, then snapshots, then blobs,
by absolute paths. hfcache keeps that order but makes every step recoverable, so that a
run killed at any instant leaves a cache that loads, and a next plan identical to what an
uninterrupted run would have kept. What is on its way out waits in one private folder of
the cache, ``.locks/hfcache-trash/`` (beside hfcache's prune lock; huggingface_hub's
``scan_cache_dir`` skips ``.locks/``, so it never sees it), flat, each name saying which repo
it came from (:mod:`hfcache.caches.huggingface.trash`). The folder is made once and stays, as
the prune lock does: setting something aside costs one rename, and no folder is made or
removed per revision.

1. **Re-validated on disk** (:meth:`HubDeletion.revalidate`): the refs naming the revision
   must be the plan's, and unless the plan removes the repo, another snapshot must remain.
2. **Refs set aside**: each ref naming commit ``C`` is renamed into the trash and read again
   there; one that no longer names ``C`` (a download moved it) goes back.
3. **Snapshot set aside**: ``snapshots/C`` is renamed into the trash and walked there
   (strictly, each folder held open); it goes with the next batch of removals
   (:class:`hfcache.fs.removal.Batch`), after its refs, ``.no_exist/C`` and ``trees/C.json``.
   If the snapshot cannot be set aside or walked (a mount point, a folder that cannot be
   entered), it and its refs are put back, nothing of it removed: the revision stays
   loadable by tag. Once it is in the trash, whatever stops its removal, the recovery
   finishes it.
4. **Blobs set aside, then checked**: a blob no remaining revision uses is renamed, under the
   hub's own per-blob download lock, into the trash; the repo's snapshot links
   are read again and a linked blob goes back. After a settling time (longer than the poll
   interval of the hub's lock), the links are read once more: a blob a racing download linked
   meanwhile goes back (its link, relative and by name, heals); the others are unlinked
   (:mod:`hfcache.caches.huggingface.blobs`).
5. The repo folder goes when its last revision went and no new snapshot or download appeared,
   ``snapshots/`` last; then the shared-store payloads, by the hub's own ``sweep_shared_blob``.

:meth:`HubDeletion.recover` (run under the prune lock before anything is deleted) reads the
trash: refs of a snapshot that is still there go back (unless a newer ref took their place),
a snapshot set aside is finished, a blob set aside goes back if linked, else goes. The scan
reads the trash the same way (:func:`hfcache.caches.huggingface.trash.scan_trash`), so a plan
made before the repair already sees the refs where they belong.

Left open (documented in the README): huggingface_hub checks that a blob exists *before*
taking its lock; a download that checked before step 4 and is held up for longer than the
settling time can still link a blob just removed.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hfcache.caches.deletion import Finisher, Going, Outcomes, written_since, young
from hfcache.caches.huggingface.blobs import finish_blobs, set_aside, sweep
from hfcache.caches.huggingface.files import remove_entry, remove_unlinked, revision_files
from hfcache.caches.huggingface.location import blob_temporary, is_ref_temporary
from hfcache.caches.huggingface.trash import listdir, recover_trash, ref_entry, restore_refs, trash_name, trash_path
from hfcache.fs.locks import is_lock_held
from hfcache.fs.ops import Tree, UnsafePath
from hfcache.model import CacheInventory, Item, Leftover, OrphanFile, Revision, RevisionFile

if TYPE_CHECKING:
    from hfcache.plan.decisions import PlanUnit

log = logging.getLogger(__name__)


def _commit(text: str | None) -> str | None:
    return text.strip() if text is not None else None


class HubDeletion:
    """The hub kind's deletion steps (see the module docstring)."""

    follow_links = True

    # -- what may be touched -------------------------------------------------------------------

    def targets(self, cache: CacheInventory, item: Item, going: Going) -> list[str]:
        paths = []
        for _unit, rev in going:
            paths += [os.path.join(item.path, "refs", ref) for ref in rev.refs]
            paths.append(rev.path)
        inside = item.path + os.sep  # (many blobs: joined as os.path.join would, a key being relative)
        paths += [inside + key for _, rev in going for key in sorted(rev.blobs) if key.startswith("blobs/")]
        going_revs = {rev.revision for _, rev in going}
        if all(r.revision in going_revs for r in item.revisions):
            paths.append(item.path)
        return paths

    def junk_targets(self, cache: CacheInventory, unit: PlanUnit, found: object) -> list[str]:
        return [unit.path]

    def shared_keys(self, cache: CacheInventory, item: Item) -> list[str]:
        """What the repo shares with others that its deletion decides about: the shared-store payloads its blobs name.

        Repos are otherwise apart (their own folders, their own names in the trash), so
        execution may delete repos sharing none on different processes at once.
        """
        ledger = cache.ledger.blobs.get(item.path, {}) if cache.ledger else {}
        return [store for _, store in ledger.values() if store]

    # -- reading the repo as it is now ---------------------------------------------------------

    def refs_now(self, tree: Tree, repo: str) -> dict[str, str]:
        """Every ref of the repo: name (``main``, ``pr/1``) -> the commit it holds, read strictly."""
        refs: dict[str, str] = {}
        base = os.path.join(repo, "refs")
        stack = [""]
        while stack:
            prefix = stack.pop()
            folder = os.path.join(base, prefix.rstrip("/")) if prefix else base
            try:
                entries = tree.entries(folder)
            except (UnsafePath, NotADirectoryError):
                continue
            names = [n for n, _ in entries]
            for name, is_dir in entries:
                if is_dir:
                    stack.append(f"{prefix}{name}/" if prefix else f"{name}/")
                elif not is_ref_temporary(name, names):
                    text = tree.read_text(os.path.join(folder, name), 256)  # (None for a link or what is not a file)
                    if text is not None:
                        refs[f"{prefix}{name}"] = _commit(text) or ""
        return refs

    # -- just before a unit goes ---------------------------------------------------------------

    def item_busy(
        self, tree: Tree, cache: CacheInventory, path: str, item_id: str | None, grace: float, now: float
    ) -> str | None:
        """A download running into the repo: a lock of it held, or a partial download younger than ``grace``.

        Every writer of the hub layout counts: the hub's locks (``.locks/<repo folder>/``),
        swift-huggingface's (``.locks/<repo folder>/blobs/``), the Rust hf-hub's beside its
        blobs; huggingface_hub's ``.incomplete``, llama.cpp's ``.downloadInProgress`` (which
        takes no lock at all: only its age tells), hf-hub's ``.part``.
        """
        locks = os.path.join(tree.path, ".locks", os.path.basename(path))
        blobs = os.path.join(path, "blobs")
        for folder in (locks, os.path.join(locks, "blobs")):
            for name in listdir(tree, folder):
                if name.endswith(".lock") and is_lock_held(os.path.join(folder, name)):
                    return f"a download into this repo is running (lock held: {name})"
        for name in listdir(tree, blobs):
            temp = blob_temporary(name) if "." in name or name.startswith("tmp_") else None  # (a blob: a plain hex name)
            if temp is None:
                continue
            if temp.what == "lock":
                if is_lock_held(os.path.join(blobs, name)):
                    return f"a download into this repo is running (lock held: {name})"
                continue
            age = young(tree, os.path.join(blobs, name), now, grace)
            if age:
                return f"a download into this repo may be running ({name} modified {age} ago)"
        return None

    def revalidate(self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision) -> str | None:
        tree.forget(item.path)  # the disk as it is now, every folder looked up afresh
        snapshots = listdir(tree, os.path.join(item.path, "snapshots"))
        if rev.revision not in snapshots:
            return "no longer in the cache"
        naming = sorted(name for name, commit in self.refs_now(tree, item.path).items() if commit == rev.revision)
        if naming != sorted(unit.refs):
            return (
                f"its refs changed since the plan (now: {', '.join(naming) or 'none'}; planned: {', '.join(unit.refs) or 'none'})"
            )
        if not unit.item_removed:
            others = [n for n in snapshots if n != rev.revision]
            if not others:
                return "it is now the model's last revision (the others are gone since the plan)"
        return None

    # -- a revision ----------------------------------------------------------------------------

    def remove_revision(
        self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision, out: Outcomes
    ) -> tuple[int, str | None]:
        repo, commit = item.path, rev.revision
        trash = trash_path(tree)
        held = os.path.join(trash, trash_name(repo, commit))
        moved: list[str] = []
        try:
            tree.makedirs(trash)
            for ref in sorted(unit.refs):
                src, dst = os.path.join(repo, "refs", ref), os.path.join(trash, trash_name(repo, ref_entry(commit, ref)))
                tree.rename(src, dst)
                moved.append(dst)
                if _commit(tree.read_text(dst, 256)) != commit:
                    raise OSError(errno.EAGAIN, "a ref moved while the revision was being deleted", src)
            mounted = tree.mount_inside(rev.path)
            if mounted:
                raise OSError(errno.EXDEV, "a mount point inside the snapshot: never entered or removed", mounted)
            tree.rename(rev.path, held)
        except OSError as e:
            restore_refs(tree, repo, commit)
            return 0, f"{e.filename or rev.path}: {e.strerror or e}; nothing of it was removed"
        # Walked and checked now, removed with the batch (hfcache.fs.removal.Batch): its refs and
        # markers first, the snapshot set aside last (while it waits in the trash, a recovery
        # finishes what is left of the revision).
        also = [*moved, os.path.join(repo, ".no_exist", commit), os.path.join(repo, "trees", commit + ".json")]
        error = tree.remove_later(held, out[unit.path].removed(rev.path, log), also=also)
        if error:
            try:  # it goes back with its refs, nothing of it removed: the revision stays loadable by tag
                tree.rename(held, rev.path)
                restore_refs(tree, repo, commit)
            except OSError:
                pass  # left in the trash: the next run's recovery puts the refs back or finishes
            return 0, f"{error}; nothing of it was removed"
        return 0, None

    # -- what the revisions shared -------------------------------------------------------------

    def remove_rest(
        self, tree: Tree, cache: CacheInventory, item: Item, gone: Going, stay: Sequence[Revision], out: Outcomes
    ) -> Finisher | None:
        """Set aside the blobs no staying revision uses; the finisher removes them (and the repo, payloads)."""
        if not gone:
            return None
        ledger = cache.ledger.blobs.get(item.path, {}) if cache.ledger else {}
        kept = set().union(*(r.blobs for r in stay)) if stay else set()
        owner: dict[str, str] = {}  # blob name -> the unit whose freed bytes it counts to
        stores: dict[str, str] = {}  # payload -> unit
        for unit, rev in reversed(gone):
            for key in sorted(rev.blobs - kept):
                if key.startswith("blobs/") and key[6:] not in owner:
                    owner[key[6:]] = unit.path
                store = ledger.get(key, (0, None))[1]
                if store:
                    stores.setdefault(store, unit.path)
        last = gone[-1][0].path
        whole = not stay
        uncounted: set[str] = set()
        if whole:
            for _, store in ledger.values():
                if store:
                    stores.setdefault(store, last)
            # Orphan blobs go with the repo, through the same protocol; the hub does not count them.
            prefix = os.path.join(item.path, "blobs") + os.sep
            for orphan in cache.orphan_files:
                name = orphan.path[len(prefix) :]
                if orphan.path.startswith(prefix) and name not in owner:
                    owner[name] = last
                    uncounted.add(name)
        aside = set_aside(tree, item.path, owner, out, {r.revision for r in stay})

        def finish(tree: Tree) -> None:
            finish_blobs(tree, item.path, aside, out, uncounted)
            if whole:
                out[last].add(*self._remove_repo(tree, item.path))
            for store, unit_path in stores.items():
                out[unit_path].add(*sweep(tree, store))

        return finish

    def _remove_repo(self, tree: Tree, repo: str) -> tuple[int, str | None]:
        """Remove a repo whose revisions and blobs are gone, ``snapshots/`` last.

        It stays when anything appeared since the plan: a snapshot, a blob or partial
        download in ``blobs/``, a download lock held. ``blobs/`` and ``snapshots/`` are only
        ever ``rmdir``-ed, so a file a download creates meanwhile stops the removal there,
        leaving a repo the hub reads without complaint.
        """
        tree.forget(repo)  # looked up afresh: what a download may have created since is seen
        if written_since(tree, repo):
            return 0, None  # a download wrote into it since the scan (a ref, say): it stays
        try:
            if listdir(tree, os.path.join(repo, "snapshots")) or listdir(tree, os.path.join(repo, "blobs")):
                return 0, None  # a revision or a download appeared since the plan: the repo stays
            locks = os.path.join(tree.path, ".locks", os.path.basename(repo))
            if any(n.endswith(".lock") and is_lock_held(os.path.join(locks, n)) for n in listdir(tree, locks)):
                return 0, None
            names = sorted(listdir(tree, repo), key=lambda n: (n == "snapshots", n == "blobs"))
        except OSError as e:
            return 0, f"{repo}: {e.strerror or e}"
        for name in [*names, ""]:
            path = os.path.join(repo, name) if name else repo
            if name in ("", "snapshots", "blobs"):
                try:
                    tree.rmdir(path)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        return 0, None  # something arrived meanwhile: it stays, a valid repo
                    return 0, f"{path}: {e.strerror or e}"
                continue
            _, err = tree.remove(path, count=False)
            if err:
                return 0, err  # stays a (revision-less) repo the hub reads without complaint
        return 0, None

    # -- one file of a revision (hfcache.caches.huggingface.files) ----------------------------

    def files(self, cache: CacheInventory, item: Item, rev: Revision) -> list[RevisionFile]:
        return revision_files(item, rev)

    def remove_file(
        self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision
    ) -> tuple[int, str | None, str | None]:
        return remove_entry(tree, item, unit, rev)

    def remove_file_rest(
        self, tree: Tree, cache: CacheInventory, item: Item, left: dict[str, str], out: Outcomes
    ) -> Finisher | None:
        return remove_unlinked(tree, cache, item, left, out)

    # -- junk ----------------------------------------------------------------------------------

    def remove_junk(self, tree: Tree, cache: CacheInventory, unit: PlanUnit, found: object, out: Outcomes) -> Finisher | None:
        if unit.what == "payload":
            out[unit.path].add(*sweep(tree, unit.path))
            return None
        if isinstance(found, Leftover) and found.commit is None:
            out[unit.path].add(*self._remove_repo(tree, unit.path))
            return None
        if isinstance(found, OrphanFile):  # a blob a racing download may link: the same protocol as blobs
            repo = os.path.dirname(os.path.dirname(unit.path))
            aside = set_aside(tree, repo, {os.path.basename(unit.path): unit.path}, out)
            store = found.shared_payload

            def finish(tree: Tree) -> None:
                finish_blobs(tree, repo, aside, out)
                if store:
                    out[unit.path].add(*sweep(tree, store))

            return finish
        out[unit.path].add(*tree.remove(unit.path))
        return None

    # -- after a kill --------------------------------------------------------------------------

    def recover(self, tree: Tree, cache: CacheInventory) -> list[str]:
        """Finish or roll back what a killed run left in the trash; one line per repair."""
        return recover_trash(tree)


HUB_DELETION = HubDeletion()
