"""How a cache kind deletes its units: the protocol execution drives, and the default for simple kinds.

A kind's ``deletion`` (see :class:`hfcache.caches.protocol.CacheKind`) is everything
:mod:`hfcache.execute.run` knows about taking its units off the disk. Execution opens each root
once as a :class:`~hfcache.fs.ops.Tree` and hands it to these methods, which act only
through it (descriptor-relative, one mount, symlinks never followed):

1. :meth:`Deletion.recover` before anything else, under the prune lock: finish or roll back
   what a killed run left half-done;
2. :meth:`Deletion.item_busy` and :meth:`Deletion.revalidate` just before a unit goes: a
   download running into its item, its refs changed since the plan, it became the item's
   last revision on disk. A reason skips the unit;
3. :meth:`Deletion.remove_revision` for each unit, then :meth:`Deletion.remove_rest` once
   per item for what the units shared (the item's folder, the hub's blobs), which may leave
   a *finisher*: work to complete after a short settling time (the hub's blobs set aside
   while a download racing for them may still link them), run by execution in batches.

:class:`PathDeletion` is the default: a unit is its paths, removed strictly; the item's own
paths go with its last unit. :class:`TrashDeletion` does the same, a folder first moved
aside in one rename (ModelScope, TF Hub, vLLM). Kinds that share data between units (the
hub) bring their own.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hfcache.fs.locks import is_lock_held
from hfcache.model import CacheInventory, Item, Revision, RevisionFile, ScanWarning
from hfcache.units import describe_age

if TYPE_CHECKING:
    from hfcache.fs.ops import Tree
    from hfcache.plan.decisions import PlanUnit


@dataclass
class Outcome:
    """What one unit's removal did so far: bytes of the plan's accounting that left the disk, errors."""

    freed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, freed: int, error: str | None) -> None:
        self.freed += freed
        if error:
            self.errors.append(error)

    def removed(self, path: str, logger: logging.Logger) -> Callable[[int, str | None], None]:
        """What a removal carried out later (:meth:`hfcache.fs.ops.Tree.remove_later`) tells: logged, then added."""

        def done(freed: int, error: str | None) -> None:
            logger.debug("remove %s: %s", path, error or f"done, {freed} bytes freed")
            self.add(freed, error)

        return done


Going = Sequence[tuple["PlanUnit", Revision]]
Outcomes = dict[str, Outcome]  # unit path -> outcome
Finisher = Callable[["Tree"], None]
# How long execution lets a finisher wait before running it: longer than the poll interval of
# filelock (0.05 s), the lock huggingface_hub takes around each download.
SETTLE = 0.25


@runtime_checkable
class Deletion(Protocol):
    """The deletion steps of a cache kind (see the module docstring)."""

    # Whether a unit's data is reached through its links (the hub's snapshot entries): what the
    # read-since-plan and in-use checks look at.
    follow_links: bool

    def targets(self, cache: CacheInventory, item: Item, going: Going) -> list[str]:
        """Every path removing ``going`` of ``item`` may touch (checked against the kind's shapes first)."""
        ...

    def junk_targets(self, cache: CacheInventory, unit: PlanUnit, found: object) -> list[str]: ...

    def recover(self, tree: Tree, cache: CacheInventory) -> list[str]:
        """Finish or roll back what an interrupted run left; returns one line per repair."""
        ...

    def item_busy(
        self, tree: Tree, cache: CacheInventory, path: str, item_id: str | None, grace: float, now: float
    ) -> str | None:
        """A download running into the item at ``path``, or None."""
        ...

    def revalidate(self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision) -> str | None:
        """Why ``unit`` may no longer go, judged from the disk now, or None."""
        ...

    def remove_revision(
        self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision, out: Outcomes
    ) -> tuple[int, str | None]:
        """Remove one revision (all or nothing where the kind can): (bytes freed, error).

        What it queues to remove with the next batch (:meth:`hfcache.fs.ops.Tree.remove_later`)
        tells ``out[unit.path]`` when it went.
        """
        ...

    def remove_rest(
        self, tree: Tree, cache: CacheInventory, item: Item, gone: Going, stay: Sequence[Revision], out: Outcomes
    ) -> Finisher | None:
        """What the revisions ``gone`` leave behind; ``stay`` remain. May return work to finish later."""
        ...

    def remove_junk(self, tree: Tree, cache: CacheInventory, unit: PlanUnit, found: object, out: Outcomes) -> Finisher | None: ...


@runtime_checkable
class FileDeletion(Protocol):
    """A kind whose revisions hold files of their own (the hub's snapshots) can remove one of them.

    ``hfcache rm hf://org/name/onnx/model.onnx`` plans one unit per revision holding the file
    (:func:`hfcache.plan.removal.removal_plan`); the revision stays, without it. Execution
    checks each unit just before it goes, calls :meth:`remove_file`, then
    :meth:`remove_file_rest` once per item with what the removed files may have left unused.
    """

    def files(self, cache: CacheInventory, item: Item, rev: Revision) -> list[RevisionFile]:
        """Every file of ``rev`` as the library names it, read from the disk now (links never followed)."""
        ...

    def remove_file(
        self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision
    ) -> tuple[int, str | None, str | None]:
        """Remove the entry of one file: (bytes freed, error, a name for :meth:`remove_file_rest` or None)."""
        ...

    def remove_file_rest(
        self, tree: Tree, cache: CacheInventory, item: Item, left: dict[str, str], out: Outcomes
    ) -> Finisher | None:
        """What the files removed left (``left``: name -> unit path), removed when nothing uses it any more."""
        ...


@runtime_checkable
class ItemsApart(Protocol):
    """A kind whose items may be deleted by several processes at once (:mod:`hfcache.execute.workers`).

    Its items share nothing on disk that their deletion decides about, except what
    :meth:`shared_keys` names: items sharing a key are deleted by one process, one after the
    other in the plan's order, as in one process. The hub's repos share only shared-store
    payloads. A kind that does not say so is deleted by one process.
    """

    def shared_keys(self, cache: CacheInventory, item: Item) -> list[str]:
        """What ``item`` shares with other items of ``cache`` that deleting it decides about."""
        ...


def written_since(tree: Tree, path: str) -> bool:
    """Whether a file under the folder ``path`` was created or changed after ``tree.since`` (the scan plans rest on).

    An item's folder goes with its last revision; a revision a download started in it during
    the run is not in the plan, and must not go with the folder. Folders' own times do not
    count (the run's own removals move them); files' ctimes do.
    """
    if tree.since is None:
        return False
    try:
        st = tree.lstat(path)
    except OSError:
        return False
    if st is None or not stat_mod.S_ISDIR(st.st_mode):
        return False
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            entries = tree.entries(folder)
        except OSError:
            return True  # cannot look inside: not known to be unchanged
        for name, is_dir in entries:
            child = os.path.join(folder, name)
            if is_dir:
                stack.append(child)
                continue
            try:
                st = tree.lstat(child)
            except OSError:
                return True
            if st is not None and st.st_ctime > tree.since:  # (after the scan began: a write it did not see)
                return True
    return False


def young(tree: Tree, path: str, now: float, grace: float) -> str | None:
    """How old ``path`` is, when younger than ``grace`` (a download may still be writing it)."""
    try:
        st = tree.lstat(path)
    except OSError:
        return None
    if st is None:
        return None
    age = now - st.st_mtime
    return describe_age(max(0.0, age)) if age < grace else None


def last_revision(tree: Tree, item: Item, unit: PlanUnit, rev: Revision) -> str | None:
    """ "Never a model's last revision" judged on the disk: the other revisions the scan saw must still be there."""
    if unit.item_removed:
        return None
    for other in item.revisions:
        if other.revision != rev.revision and any(tree.lstat(p) is not None for p in other.unit_paths):
            return None
    return "it is now the model's last revision (the others are gone since the plan)"


class PathDeletion:
    """A unit is its paths; the item's own paths go with its last unit (torch, Keras, Xet, datasets, ...)."""

    follow_links = False

    def targets(self, cache: CacheInventory, item: Item, going: Going) -> list[str]:
        going_revs = {rev.revision for _, rev in going}
        paths = [p for _, rev in going for p in rev.unit_paths]
        if all(r.revision in going_revs for r in item.revisions):
            paths.extend(item.unit_paths)
        return paths

    def junk_targets(self, cache: CacheInventory, unit: PlanUnit, found: object) -> list[str]:
        return [unit.path]

    def recover(self, tree: Tree, cache: CacheInventory) -> list[str]:
        return []

    def item_busy(
        self, tree: Tree, cache: CacheInventory, path: str, item_id: str | None, grace: float, now: float
    ) -> str | None:
        for partial in cache.partial_files:
            if partial.item_id == item_id:
                if partial.lock_path and is_lock_held(partial.lock_path):
                    return f"a download of it is running (lock held: {partial.lock_path})"
                age = young(tree, partial.path, now, grace)
                if age:
                    return f"a download of it may be running ({os.path.basename(partial.path)} modified {age} ago)"
        return None

    def revalidate(self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision) -> str | None:
        return last_revision(tree, item, unit, rev)

    def _discard(self, tree: Tree, path: str) -> tuple[int, str | None]:
        """Remove one path of a unit, strictly (:class:`TrashDeletion` moves a folder away first)."""
        return tree.remove(path)

    def remove_revision(
        self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision, out: Outcomes
    ) -> tuple[int, str | None]:
        freed = 0
        for path in rev.unit_paths:
            got, err = self._discard(tree, path)
            freed += got
            if err:
                return freed, err
        return freed, None

    def remove_rest(
        self, tree: Tree, cache: CacheInventory, item: Item, gone: Going, stay: Sequence[Revision], out: Outcomes
    ) -> Finisher | None:
        if not gone or stay:
            return None
        last = out[gone[-1][0].path]
        for path in item.unit_paths:
            if written_since(tree, path):
                continue  # a download (a new revision) wrote into the item's folder since the scan: it stays
            last.add(*self._discard(tree, path))
        return None

    def remove_junk(self, tree: Tree, cache: CacheInventory, unit: PlanUnit, found: object, out: Outcomes) -> Finisher | None:
        out[unit.path].add(*tree.remove(unit.path))
        return None


PATHS = PathDeletion()


# Where :class:`TrashDeletion` moves a folder before removing it, relative to the cache root.
TRASH = ".hfcache-trash"


def trash_left(path: str) -> ScanWarning:
    """What a scan says of a :data:`TRASH` folder at ``path`` (never an item: :meth:`TrashDeletion.recover` empties it)."""
    return ScanWarning(path, "left by an interrupted hfcache prune; the next prune removes it", blocks_deletion=False)


class TrashDeletion(PathDeletion):
    """:class:`PathDeletion`, but a folder leaves its place at once: renamed into ``<root>/<trash>/``, then removed.

    A library that finds a unit's folder at all finds it whole: a vLLM engine starting while
    its compile cache goes either loads it complete or compiles anew, never half a folder
    ("Inductor cache lookup failed"); TF Hub and ModelScope download again what is gone,
    but load a half-removed folder as it is. A prune killed between the rename and the
    removal leaves the folder in the trash, which the scan reports (never as an item) and
    :meth:`recover` empties under the next prune's lock. The trash folder is removed when
    empty. Where the rename fails (the folder cannot be moved on its file system), the folder
    is removed in place, as :class:`PathDeletion` does.
    """

    def __init__(self, trash: str = TRASH) -> None:
        self.trash = trash
        self._count = 0

    def _discard(self, tree: Tree, path: str) -> tuple[int, str | None]:
        try:
            st = tree.lstat(path)
        except OSError:
            st = None  # (a link or mount on the way: remove says why, and touches nothing)
        if st is None or not stat_mod.S_ISDIR(st.st_mode):
            return tree.remove(path)
        if tree.mount_inside(path) is not None:
            return tree.remove(path)  # (which refuses it: a mount point is never entered nor moved away)
        trash = os.path.join(tree.path, self.trash)
        self._count += 1
        aside = os.path.join(trash, f"{os.path.basename(path)}.{os.getpid()}.{self._count}")
        try:
            tree.makedirs(trash)
            tree.rename(path, aside)
        except OSError:
            return tree.remove(path)
        freed, error = tree.remove(aside)
        self._drop_trash(tree, trash)
        return freed, error

    def _drop_trash(self, tree: Tree, trash: str) -> None:
        try:
            tree.rmdir(trash)
        except OSError:
            pass  # (not empty: what failed to go stays there, for the next prune's recover)

    def recover(self, tree: Tree, cache: CacheInventory) -> list[str]:
        trash = os.path.join(tree.path, self.trash)
        names = tree.listdir(trash)
        if not names:
            self._drop_trash(tree, trash)
            return []
        errors = [e for e in (tree.remove(os.path.join(trash, n))[1] for n in names) if e]
        self._drop_trash(tree, trash)
        done = f"{trash}: removed {len(names) - len(errors)} folder(s) an interrupted prune had moved there"
        return [done, *errors]
