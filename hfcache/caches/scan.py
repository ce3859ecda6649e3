"""Cache kinds behind one small protocol, their registry, and the scan over all selected roots.

A kind knows where its library puts its cache (read from the environment at call time),
how to recognise and scan a root into the common inventory model, and through that model
what its deletion units are (each revision's ``unit_paths``) and what must never be deleted
(``CacheInventory.protected``). Built-in kinds: the Hugging Face hub, torch hub, Keras, Xet,
datasets, kagglehub and the pre-4.22 transformers cache. Other packages add kinds through
the entry-point group ``hfcache.caches``; an entry point names a class or factory (called
with no arguments) or an instance::

    [project.entry-points."hfcache.caches"]
    ollama = "hfcache_ollama:OllamaCache"
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from hfcache.caches.protocol import CacheKind
from hfcache.caches.registry import Registry, registry, select_kinds
from hfcache.errors import CacheNotADirectory, CacheNotFound, CacheUnreadable, HfcacheError, NotACache
from hfcache.fs.mounts import mount_points_under
from hfcache.model import CacheInventory, Inventory, Item, ScanWarning

log = logging.getLogger(__name__)


# Optional, read only through the functions below: ``shapes`` (regular expressions over the
# paths a prune may remove, relative to the root; none: the kind is scanned, never pruned),
# ``deletion`` (how units leave the disk, :class:`hfcache.caches.deletion.Deletion`; default: each
# unit's paths), ``lock_file`` (hfcache's prune lock, relative to the root) and ``parallel``.


def _choose_kind(root: str, allowed: list[CacheKind]) -> CacheKind:
    """The kind of an explicit root: the first allowed kind that recognises it, else the first allowed one."""
    if len(allowed) > 1 and os.path.isdir(root):
        for kind in allowed:
            if kind.recognizes(root):
                return kind
    return allowed[0]


def _failed(kind: CacheKind, root: str, error: HfcacheError) -> CacheInventory:
    """A default root that cannot be scanned, while scanning every kind: a warning, not the end of the scan."""
    warning = ScanWarning(os.path.abspath(root), f"not scanned: {error}")
    return CacheInventory(kind=kind.kind, title=kind.title, root=os.path.abspath(root), warnings=(warning,))


# ---------------------------------------------------------------------------------------------
# Mount points inside a cache: what lies beyond one is not counted, and nothing touching one is deleted

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


def _counted(st: os.stat_result, seen: set[tuple[int, int]]) -> int:
    if st.st_nlink > 1:
        if (st.st_dev, st.st_ino) in seen:
            return 0
        seen.add((st.st_dev, st.st_ino))
    return st.st_size


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
            size += _counted(st, seen)
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


def _identity(root: str) -> tuple[object, ...]:
    """What makes two roots one folder: ``(st_dev, st_ino)`` of the resolved root (a bind mount too), else its path."""
    try:
        st = os.stat(root)
    except OSError:
        return ("path", os.path.abspath(root))
    return ("inode", st.st_dev, st.st_ino)


def scan_caches(
    cache_dirs: Iterable[str | os.PathLike[str]] | None = None,
    *,
    kinds: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
    kind_registry: Registry | None = None,
    jobs: int = 1,
    ledger: bool = True,
) -> Inventory:
    """Scan the default roots of ``kinds`` (all when None), or the given roots instead.

    Default roots come from ``env`` (default ``os.environ``). A given root is scanned as
    the first of ``kinds`` that recognises it (the hub cache when none does, so its error
    explains what is wrong). Roots given twice (also through different spellings, symlinks
    or bind mounts: the same ``(st_dev, st_ino)``) are scanned once, under the path given
    first. What lies beyond a mount point inside a root is not counted and never deleted
    (:func:`confine_to_mount`). When every kind is scanned by default, one kind's unreadable
    or unrecognisable root becomes a warning on that cache; otherwise it is an error.
    ``jobs`` > 1 and ``ledger=False`` (no blob ledger: for an inventory that is only shown,
    not planned with) are passed on to kinds that take them (``parallel``: the hub's).

    >>> import tempfile
    >>> inv = scan_caches([tempfile.mkdtemp()])
    >>> [(c.kind, c.items) for c in inv.caches]
    [('huggingface', ())]
    """
    reg = registry() if kind_registry is None else kind_registry
    allowed = select_kinds(kinds, reg)
    scanned_at = time.time() if now is None else now
    environ = os.environ if env is None else env
    roots: list[tuple[CacheKind, str, bool]]
    if cache_dirs is None:
        roots = [(k, root, False) for k in allowed for root in k.default_roots(environ)]
    else:
        roots = [(_choose_kind(os.fspath(d), allowed), os.fspath(d), True) for d in cache_dirs]
    forgiving = cache_dirs is None and kinds is None
    caches: list[CacheInventory] = []
    seen: set[str] = set()
    folders: dict[tuple[object, ...], str] = {}
    for kind, root, explicit in roots:
        identity = _identity(root)
        if identity in folders:
            log.info("%s: %s is the folder %s already scanned: scanned once", kind.kind, root, folders[identity])
            continue
        folders[identity] = root
        started = time.monotonic()
        try:
            options = {"jobs": jobs} if jobs > 1 else {}
            if not ledger:
                options["ledger"] = False
            if options and kind.parallel:
                inventory = kind.scan(root, explicit=explicit, **options)
            else:
                inventory = kind.scan(root, explicit=explicit)
        except (NotACache, CacheUnreadable, CacheNotADirectory, CacheNotFound) as e:
            if not forgiving:
                raise
            inventory = _failed(kind, root, e)
        else:
            inventory = confine_to_mount(inventory, mount_points_under(inventory.root) if inventory.exists else [])
        if not inventory.exists:
            log.info("%s: %s does not exist (nothing cached yet)", kind.kind, root)
        elif log.isEnabledFor(logging.INFO):  # the counts below walk every item: only for -v
            log.info(
                "%s: scanned %s in %.2fs: %d items, %d revisions, %d bytes, %d warnings",
                kind.kind,
                inventory.root,
                time.monotonic() - started,
                len(inventory.items),
                sum(len(i.revisions) for i in inventory.items),
                inventory.size_bytes,
                len(inventory.all_warnings),
            )
        if inventory.root in seen:
            continue
        seen.add(inventory.root)
        caches.append(inventory)
    return Inventory(caches=tuple(caches), scanned_at=scanned_at)
