"""Mount points inside a cache: what lies beyond one is not counted, and nothing touching one is deleted.

A scan walks into mount points below its root like any folder; :func:`confine_to_mount`
turns its inventory into what a scan stopping at them sees (:class:`_Confine`).
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Collection, Iterable
from dataclasses import replace

from hfcache.caches._common import counted
from hfcache.model import CacheInventory, Item, ScanWarning

MOUNT_WARNING = "mount point inside the cache: nothing beyond it is counted or deleted"


def _at_or_beyond(path: str, mount: str) -> bool:
    """``path`` is the mount point itself or lies beyond it (on the mounted file system)."""
    return path == mount or path.startswith(mount + os.sep)


def _beyond(path: str, mounts: Iterable[str]) -> str | None:
    """The mount point ``path`` is, or lies beyond, or None."""
    return next((m for m in mounts if _at_or_beyond(path, m)), None)


def _mount_problem(label: str, paths: Iterable[str], mounts: Iterable[str]) -> ScanWarning | None:
    """A blocking warning, naming the mount point, when one of ``paths`` is, holds or lies beyond one."""
    for path in paths:
        for m in mounts:
            if path == m:
                return ScanWarning(m, f"{label} is a mount point: nothing in it is counted or deleted")
            if m.startswith(path.rstrip(os.sep) + os.sep):
                return ScanWarning(m, f"mount point inside {label}: nothing beyond it is counted or deleted")
            if path.startswith(m + os.sep):
                return ScanWarning(m, f"{label} lies beyond a mount point: not counted, never deleted")
    return None


def _measure_short_of(paths: Iterable[str], mounts: Collection[str]) -> tuple[int, float, float, int]:
    """Bytes, newest atime and mtime, and files of ``paths``, never at or beyond a mount point.

    Counted the way :func:`hfcache.caches._common.measure` counts a unit (``lstat`` only,
    hard links once, a folder with no files takes its own times), stopping at each of ``mounts``.
    """
    points = set(mounts)
    seen: set[tuple[int, int]] = set()
    size = files = 0
    atime = mtime = 0.0
    for path in paths:
        if _beyond(path, points) is not None:
            continue
        try:
            top = os.lstat(path)
        except OSError:
            continue
        found: list[os.stat_result] = []
        stack = [path] if stat_mod.S_ISDIR(top.st_mode) else []
        if not stack:
            found.append(top)
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    entries = list(it)
            except OSError:
                continue
            for entry in entries:
                if entry.path in points:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat_mod.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                else:
                    found.append(st)
        for st in found:
            size += counted(st, seen)
        files += len(found)
        atime = max(atime, *(st.st_atime for st in found or [top]))
        mtime = max(mtime, *(st.st_mtime for st in found or [top]))
    return size, atime, mtime, files


def _newest(folder: str, keys: Iterable[str], fallback: str) -> tuple[float, float]:
    """Newest atime and mtime of the blob keys left to a revision (the hub's way: the link's target), else the folder's."""
    atime = mtime = 0.0
    found = False
    for key in keys:
        try:
            st = os.stat(key if os.path.isabs(key) else os.path.join(folder, key))
        except OSError:
            continue
        found = True
        atime, mtime = max(atime, st.st_atime), max(mtime, st.st_mtime)
    if not found:
        try:
            st = os.stat(fallback)
        except OSError:
            return 0.0, 0.0
        return st.st_atime, st.st_mtime
    return atime, mtime


class _Confine:
    """Turns the inventory of a scan that walked into mount points into what stops at them.

    * the cache gets one warning per mount point, and the mount points join ``protected``;
    * an item or revision whose paths are, hold, or lie beyond a mount point carries a
      blocking warning naming it (so a plan keeps the whole item, with that reason), and so
      does an item with a blob linking to shared data beyond one;
    * what lies beyond a mount point leaves every size and total: ``lstat``-measured units
      (every kind without blob keys) are measured again, stopping at the mount points;
      units counted by blob keys (the hub) lose the keys whose file, or shared payload,
      lies beyond one. A blob inside the cache reached only through a link beyond a mount
      point stays counted (it must not turn into an orphan that junk cleaning deletes);
    * items lying wholly beyond a mount point, and junk (partial downloads, orphans,
      unreferenced payloads, leftovers) that is, holds or lies beyond one, are left out:
      junk has no "not deletable" mark, so it is never listed for deletion.
    """

    def __init__(self, cache: CacheInventory, mounts: list[str]) -> None:
        self.cache = cache
        self.mounts = mounts
        self.ledger = cache.ledger
        self.keyed = self.ledger is not None or any(r.blobs for i in cache.items for r in i.revisions)
        # Without a ledger, the shared data a blob links to is looked up only when a mount
        # point lies outside every item (inside an item, the item is not deleted anyway).
        item_paths = [p for i in cache.items for p in (*i.unit_paths, *(p for r in i.revisions for p in r.unit_paths))]
        self.loose = self.ledger is None and any(not any(_at_or_beyond(m, p) for p in item_paths) for m in mounts)
        self.total_gone = 0
        self.payloads_gone: dict[str, int] = {}
        self.foreign_gone: set[str] = set()

    # -- keys (the hub's accounting) -----------------------------------------------------------

    def _key(self, item: Item, key: str) -> tuple[int, str | None]:
        """``(bytes the scan counted for the key, shared payload it links to or None)``."""
        path = key if os.path.isabs(key) else os.path.join(item.path, key)
        if self.ledger is not None:
            found = self.ledger.blobs.get(item.path, {}).get(key)
            if found is not None:
                return found
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0
        store = None
        if self.loose and os.path.islink(path):
            store = os.path.realpath(path)
        return size, store

    def _keyed_item(self, item: Item) -> tuple[Item, ScanWarning | None]:
        """The item without the bytes of its keys beyond a mount point; a warning if it links to data beyond one."""
        mounts = self.mounts
        gone: dict[str, int] = {}
        linked_beyond: str | None = None
        every = {k for r in item.revisions for k in r.blobs}
        if self.ledger is not None:
            every |= set(self.ledger.blobs.get(item.path, {}))
        for key in every:
            path = key if os.path.isabs(key) else os.path.join(item.path, key)
            key_beyond = _beyond(path, mounts)
            needed = key_beyond is not None or self.ledger is not None or self.loose
            if not needed:
                continue
            size, store = self._key(item, key)
            store_beyond = _beyond(store, mounts) if store else None
            if store and store_beyond is not None:
                linked_beyond = linked_beyond or store_beyond
                self.payloads_gone[store] = self.ledger.payloads.get(store, size) if self.ledger else size
            if key_beyond is None and store_beyond is None:
                continue
            gone[key] = size
            if key_beyond is not None and store is None and any(key in r.blobs for r in item.revisions):
                if not os.path.isabs(key):
                    self.total_gone += size  # a file of the repo, counted once in the cache total
                elif key not in self.foreign_gone:
                    self.foreign_gone.add(key)  # a file elsewhere in the cache, counted once in all
                    self.total_gone += size
        if not gone:
            return item, self._linked(item, linked_beyond)
        revisions = []
        for rev in item.revisions:
            mine = [k for k in rev.blobs if k in gone]
            if not mine:
                revisions.append(rev)
                continue
            only = [k for k in mine if sum(k in r.blobs for r in item.revisions) == 1]
            files = sum(1 for k in mine if not k.startswith("blobs/") and not os.path.isabs(k))
            atime, mtime = _newest(item.path, rev.blobs - set(mine), rev.path)
            revisions.append(
                replace(
                    rev,
                    size_bytes=max(0, rev.size_bytes - sum(gone[k] for k in mine)),
                    reclaimable_bytes=max(0, rev.reclaimable_bytes - sum(gone[k] for k in only)),
                    nb_files=max(0, rev.nb_files - files),
                    last_accessed=atime,
                    last_modified=mtime,
                )
            )
        used = [k for k in gone if any(k in r.blobs for r in item.revisions)]
        item = replace(
            item,
            revisions=tuple(revisions),
            size_bytes=max(0, item.size_bytes - sum(gone[k] for k in used)),
            nb_blobs=max(0, item.nb_blobs - len(used)),
            last_accessed=max((r.last_accessed for r in revisions), default=item.last_accessed),
            last_modified=max((r.last_modified for r in revisions), default=item.last_modified),
        )
        return item, self._linked(item, linked_beyond)

    @staticmethod
    def _linked(item: Item, mount: str | None) -> ScanWarning | None:
        if mount is None:
            return None
        return ScanWarning(mount, f"{item.id} links to shared data beyond a mount point: never deleted")

    # -- lstat-measured units ------------------------------------------------------------------

    def _measured_item(self, item: Item) -> Item:
        """The item with each revision that touches a mount point measured again, stopping there."""
        revisions = []
        less = fewer = 0
        changed = False
        for rev in item.revisions:
            if _mount_problem("", rev.unit_paths, self.mounts) is None:
                revisions.append(rev)
                continue
            changed = True
            size, atime, mtime, files = _measure_short_of(rev.unit_paths, self.mounts)
            cut = rev.size_bytes - min(size, rev.size_bytes)
            dropped = rev.nb_files - min(files, rev.nb_files)
            less, fewer = less + cut, fewer + dropped
            revisions.append(
                replace(
                    rev,
                    size_bytes=rev.size_bytes - cut,
                    reclaimable_bytes=max(0, rev.reclaimable_bytes - cut),
                    nb_files=rev.nb_files - dropped,
                    last_accessed=atime or rev.last_accessed,
                    last_modified=mtime or rev.last_modified,
                )
            )
        self.total_gone += less
        if not changed:
            return item
        return replace(
            item,
            revisions=tuple(revisions),
            size_bytes=max(0, item.size_bytes - less),
            nb_blobs=max(0, item.nb_blobs - fewer),
            last_accessed=max((r.last_accessed for r in revisions), default=item.last_accessed),
            last_modified=max((r.last_modified for r in revisions), default=item.last_modified),
        )

    # -- the whole cache -----------------------------------------------------------------------

    def _item(self, item: Item) -> Item | None:
        """The item as a scan stopping at mount points sees it; None when it lies wholly beyond one."""
        mounts = self.mounts
        paths = [*item.unit_paths, *(p for r in item.revisions for p in r.unit_paths)]
        wholly_beyond = all(any(p.startswith(m + os.sep) for m in mounts) for p in paths)
        linked = None
        if self.keyed:
            item, linked = self._keyed_item(item)
        else:
            item = self._measured_item(item)
        if wholly_beyond:
            if not self.keyed:
                self.total_gone += item.size_bytes  # what _measured_item left: a plug-in's extra bytes
            return None
        revisions = []
        named: set[str] = set()
        for rev in item.revisions:
            problem = _mount_problem(f"{item.id} revision {rev.revision}", rev.unit_paths, mounts)
            if problem is not None:
                named.add(problem.path)
                rev = replace(rev, warnings=(*rev.warnings, problem))
            revisions.append(rev)
        warnings = list(item.warnings)
        # The item's own folder (a hub repo's blobs/, refs/) may hold a mount point no revision does.
        problem = _mount_problem(item.id, item.unit_paths, [m for m in mounts if m not in named])
        if problem is not None:
            warnings.append(problem)
        if linked is not None:
            warnings.append(linked)
        return replace(item, revisions=tuple(revisions), warnings=tuple(warnings))

    def __call__(self) -> CacheInventory:
        cache = self.cache
        mounts = self.mounts
        items = [i for i in map(self._item, cache.items) if i is not None]

        def clear(path: str) -> bool:
            return _mount_problem("", (path,), mounts) is None

        unreferenced = []
        for p in cache.unreferenced_payloads:
            if clear(p.path):
                unreferenced.append(p)
            elif self.ledger is None:
                self.payloads_gone.setdefault(p.path, p.size_bytes)
        if self.ledger is not None:
            self.payloads_gone.update({p: n for p, n in self.ledger.payloads.items() if _beyond(p, mounts)})
        orphans = [
            o for o in cache.orphan_files if clear(o.path) and not (o.shared_payload and _beyond(o.shared_payload, mounts))
        ]
        gone = self.total_gone + sum(self.payloads_gone.values())
        warnings = [ScanWarning(m, MOUNT_WARNING, blocks_deletion=False) for m in mounts]
        return replace(
            cache,
            items=tuple(items),
            size_bytes=max(0, cache.size_bytes - gone),
            partial_files=tuple(p for p in cache.partial_files if clear(p.path)),
            orphan_files=tuple(orphans),
            unreferenced_payloads=tuple(unreferenced),
            leftovers=tuple(lo for lo in cache.leftovers if clear(lo.path)),
            warnings=(*cache.warnings, *warnings),
            protected=(*cache.protected, *(m for m in mounts if m not in cache.protected)),
        )


def confine_to_mount(cache: CacheInventory, mounts: list[str]) -> CacheInventory:
    """``cache`` as a scan that never crosses ``mounts`` (mount points strictly inside its root) sees it.

    See :class:`_Confine`. A mount point beyond another one is not seen (nor reported), and
    an inventory with no mount point inside comes back unchanged.
    """
    if not mounts or not cache.exists:
        return cache
    outermost: list[str] = []
    for m in sorted(set(mounts)):
        if _beyond(m, outermost) is None:
            outermost.append(m)
    return _Confine(cache, outermost)()
