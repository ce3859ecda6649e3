"""Carrying out a plan: exactly its units, in the order that never leaves a kept revision broken.

:func:`execute_plan` takes a :class:`~hfcache.plan.Plan` and a fresh scan of its caches:

1. every unit is matched against the fresh scan; one that vanished, changed, was read
   since the plan or is locked by a download is *skipped* with a reason (a plan is never
   widened: what stays in the scan but not in the plan is never touched);
2. every path that would be removed is checked before the first deletion: strictly
   inside its cache root, not reached through a symlink, not the root nor anything the
   cache kind protects. One failure refuses the whole plan (:class:`UnsafePlan`);
3. junk goes first (partial downloads, orphan blobs, unreferenced payloads, leftovers),
   then, per model, as huggingface_hub's ``DeleteCacheStrategy.execute`` does: the refs
   naming a revision, its snapshot, the blobs no remaining revision uses, the rest of the
   repo folder when no revision remains, and last the shared-store payloads, swept by
   huggingface_hub's own ``sweep_shared_blob`` under the payload's lock;
4. nothing follows a symlink: a link is unlinked, never its target. ``freed_bytes`` is
   what actually left the disk (files whose last link we removed), never the estimate.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import UnsafePlan
from .locks import is_lock_held
from .model import CacheInventory, Inventory, Item, Revision
from .plan import Plan, PlanUnit

try:  # the hub's own garbage collection of its shared store (huggingface_hub >= 1.32)
    from huggingface_hub.utils._shared_blobs import sweep_shared_blob
except ImportError:  # pragma: no cover - older hub: payloads are left behind (leaked, never lost)
    sweep_shared_blob = None


@dataclass
class _Outcome:
    freed: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None

    def add(self, freed: int, error: str | None) -> None:
        self.freed += freed
        if error:
            self.errors.append(error)


# ---------------------------------------------------------------------------------------------
# Removing files without following links, counting what leaves the disk


def _unlink(path: str) -> tuple[int, str | None]:
    """Unlink one file or link; bytes freed (a regular file's size when this was its last link)."""
    try:
        st = os.lstat(path)
        os.unlink(path)
    except FileNotFoundError:
        return 0, None
    except OSError as e:
        return 0, f"{path}: {e.strerror or e}"
    return (st.st_size if stat_mod.S_ISREG(st.st_mode) and st.st_nlink == 1 else 0), None


def remove_path(path: str) -> tuple[int, str | None]:
    """Remove a file, a link or a whole tree, never following a symlink. Returns (bytes freed, first error).

    A folder is emptied bottom-up; links inside it (to files or folders) are unlinked.
    A path that is already gone is not an error. The result is checked afterwards, as
    pipx's ``rmdir`` does: a tree that is still there is a failure.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0, None
    except OSError as e:
        return 0, f"{path}: {e.strerror or e}"
    if not stat_mod.S_ISDIR(st.st_mode):
        return _unlink(path)
    freed, errors = 0, []
    for folder, dirs, files, _fd in os.fwalk(path, topdown=False, follow_symlinks=False):
        for name in files:
            got, err = _unlink(os.path.join(folder, name))
            freed += got
            errors.extend([err] if err else [])
        for name in dirs:
            sub = os.path.join(folder, name)
            err = _remove_dir_entry(sub, os.unlink if os.path.islink(sub) else os.rmdir)
            errors.extend([err] if err else [])
    err = _remove_dir_entry(path, os.rmdir)
    errors.extend([err] if err else [])
    return freed, (errors[0] if errors else None)


def _remove_dir_entry(path: str, remove: Callable[[str], None]) -> str | None:
    """Remove an emptied folder (or a link to one); a path already gone is not an error."""
    try:
        remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    return None


# ---------------------------------------------------------------------------------------------
# Checks before the first deletion


def _inside(path: str, root: str) -> bool:
    return path.startswith(root.rstrip(os.sep) + os.sep)


def check_target(path: str, cache: CacheInventory) -> str | None:
    """Why ``path`` may not be deleted from ``cache``, or None when it may.

    It must be absolute, strictly inside the (resolved) root, reached without any symlink
    on the way (its parent resolves to itself), and neither a protected path nor above one.
    """
    root = os.path.realpath(cache.root)
    if root in ("/", os.path.realpath(os.path.expanduser("~"))):
        return f"cache root {root} is / or a home folder"
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        return f"{path}: not a normalised absolute path"
    if not _inside(path, root):
        return f"{path}: outside the cache root {root}"
    parent = os.path.dirname(path)
    if os.path.realpath(parent) != parent:
        return f"{path}: reached through a symlink ({parent} resolves to {os.path.realpath(parent)})"
    for kept in cache.protected:
        if path == kept or _inside(kept, path):
            return f"{path}: the cache needs {kept}"
    return None


# ---------------------------------------------------------------------------------------------
# Matching the plan against a fresh scan


@dataclass
class _Work:
    """One cache's share of the plan, matched against its fresh scan."""

    cache: CacheInventory
    junk: list[tuple[PlanUnit, object]] = field(default_factory=list)
    revisions: dict[str, tuple[Item, list[tuple[PlanUnit, Revision]]]] = field(default_factory=dict)


def _match_revision(unit: PlanUnit, revs: dict[str, tuple[Item, Revision]]) -> str | None:
    found = revs.get(unit.path)
    if found is None:
        return "no longer in the cache"
    item, rev = found
    if item.id != unit.id or rev.revision != unit.revision:
        return "the path now holds something else"
    if not item.deletable:
        return "the scan now finds damage in this model"
    if rev.last_accessed > unit.last_accessed + 1:
        return "read since the plan was made"
    if rev.size_bytes != unit.size_bytes:
        return "changed since the plan was made"
    return None


def _match_junk(unit: PlanUnit, found: object | None) -> str | None:
    if found is None:
        return "no longer in the cache"
    if getattr(found, "lock_held", None):
        return "its download lock is held"
    if getattr(found, "last_modified", unit.last_modified) > unit.last_modified + 1:
        return "modified since the plan was made"
    return None


def _repo_lock_held(cache: CacheInventory, item: Item) -> str | None:
    """A held download lock under ``.locks/<repo folder>/``: a download into this repo is running."""
    if cache.kind != "huggingface":
        return None
    folder = os.path.join(cache.root, ".locks", os.path.basename(item.path))
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    for name in names:
        if name.endswith(".lock") and is_lock_held(os.path.join(folder, name)):
            return f"a download into this repo is running (lock held: {name})"
    return None


def _prepare(plan: Plan, inventory: Inventory) -> tuple[list[_Work], dict[str, str]]:
    """Match each delete unit to the fresh scan; returns the work per cache and the skip reasons."""
    caches = {(c.kind, c.root): c for c in inventory.caches if c.exists}
    work: dict[tuple[str, str], _Work] = {}
    skipped: dict[str, str] = {}
    revisions: dict[tuple[str, str], dict[str, tuple[Item, Revision]]] = {}
    for unit in plan.delete:
        cache = caches.get((unit.kind, unit.root))
        if cache is None:
            skipped[unit.path] = "its cache was not found"
            continue
        w = work.setdefault((unit.kind, unit.root), _Work(cache))
        if unit.what == "revision":
            key = (unit.kind, unit.root)
            if key not in revisions:
                revisions[key] = {r.path: (i, r) for i in cache.items for r in i.revisions}
            revs = revisions[key]
            reason = _match_revision(unit, revs)
            if reason is None:
                item, rev = revs[unit.path]
                reason = _repo_lock_held(cache, item)
            if reason is None:
                w.revisions.setdefault(item.path, (item, []))[1].append((unit, rev))
        else:
            pool: Iterable[object] = {
                "partial": cache.partial_files,
                "orphan": cache.orphan_files,
                "payload": cache.unreferenced_payloads,
                "leftover": cache.leftovers,
            }.get(unit.what, ())
            found = next((x for x in pool if getattr(x, "path", None) == unit.path), None)
            reason = _match_junk(unit, found)
            if reason is None:
                w.junk.append((unit, found))
        if reason is not None:
            skipped[unit.path] = reason
    return list(work.values()), skipped


def _targets(w: _Work) -> list[str]:
    """Every path the work may remove (blobs are checked through their repo folder)."""
    paths = [u.path for u, _ in w.junk]
    for item, units in w.revisions.values():
        paths.append(item.path)
        for _, rev in units:
            paths.extend(rev.unit_paths)
        if len(units) == len(item.revisions):
            paths.extend(item.unit_paths)
    return paths


# ---------------------------------------------------------------------------------------------
# Deleting


def _sweep(store: str, root: str) -> tuple[int, str | None]:
    if sweep_shared_blob is None:  # pragma: no cover - older hub
        return 0, None
    return sweep_shared_blob(Path(store), cache_dir=root), None


def _delete_hub_item(cache: CacheInventory, item: Item, units: list[tuple[PlanUnit, Revision]], out: dict[str, _Outcome]) -> None:
    """Refs, then snapshots, then blobs no remaining revision uses, then the folder if emptied, then payloads."""
    going = {rev.revision for _, rev in units}
    remaining = [r for r in item.revisions if r.revision not in going]
    ledger = cache.ledger.blobs.get(item.path, {}) if cache.ledger else {}
    for unit, rev in units:
        o = out[unit.path]
        for ref in rev.refs:
            ref_path = os.path.join(item.path, "refs", ref)
            try:
                with open(ref_path, encoding="utf-8") as f:
                    if f.read().strip() != rev.revision:
                        continue  # the ref moved since the scan: it now names a revision we keep
            except OSError:
                continue
            o.add(*_unlink(ref_path))
        o.add(*remove_path(rev.path))
        for leftover in (
            os.path.join(item.path, ".no_exist", rev.revision),
            os.path.join(item.path, "trees", rev.revision + ".json"),
        ):
            o.add(*remove_path(leftover))
    kept = set().union(*(r.blobs for r in remaining)) if remaining else set()
    stores: dict[str, str] = {}
    owner: dict[str, str] = {}
    # A blob shared by several going revisions is freed by the last of them, as the plan counted it.
    for unit, rev in reversed(units):
        for key in sorted(rev.blobs - kept):
            if key in owner or os.path.isabs(key):
                continue
            owner[key] = unit.path
            if key.startswith("blobs/"):
                out[unit.path].add(*_unlink(os.path.join(item.path, key)))
            store = ledger.get(key, (0, None))[1]
            if store:
                stores.setdefault(store, unit.path)
    if not remaining:
        last = units[-1][0].path
        for _, store in ledger.values():
            if store:
                stores.setdefault(store, last)
        out[last].add(*remove_path(item.path))
    for store, unit_path in stores.items():
        out[unit_path].add(*_sweep(store, cache.root))


def _delete_item(item: Item, units: list[tuple[PlanUnit, Revision]], out: dict[str, _Outcome]) -> None:
    """Kinds that share nothing: each revision's files, then the item's own folder when none remains."""
    for unit, rev in units:
        for path in rev.unit_paths:
            out[unit.path].add(*remove_path(path))
    if len(units) == len(item.revisions):
        for path in item.unit_paths:
            out[units[-1][0].path].add(*remove_path(path))


def _delete_junk(cache: CacheInventory, unit: PlanUnit, found: object, o: _Outcome) -> None:
    if unit.what == "payload":
        o.add(*_sweep(unit.path, cache.root))
        return
    o.add(*remove_path(unit.path))
    store = getattr(found, "shared_payload", None)
    if store:
        o.add(*_sweep(store, cache.root))


def execute_plan(plan: Plan, inventory: Inventory) -> Plan:
    """Carry out ``plan`` against ``inventory`` (a fresh scan of its caches); returns the plan with outcomes.

    Raises :class:`UnsafePlan`, before deleting anything, when any target fails the checks.
    """
    work, skipped = _prepare(plan, inventory)
    problems = [p for w in work for p in (check_target(t, w.cache) for t in _targets(w)) if p]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UnsafePlan(f"plan refused, nothing deleted: {problems[0]}{more}")
    out = {u.path: _Outcome() for u in plan.delete}
    for w in work:
        for unit, found in w.junk:
            _delete_junk(w.cache, unit, found, out[unit.path])
        for item, units in w.revisions.values():
            if w.cache.kind == "huggingface":
                _delete_hub_item(w.cache, item, units, out)
            else:
                _delete_item(item, units, out)
    done = []
    for unit in plan.delete:
        o = out[unit.path]
        if unit.path in skipped:
            done.append(replace(unit, status="skipped", freed_bytes=0, error=skipped[unit.path]))
        elif o.errors:
            done.append(replace(unit, status="failed", freed_bytes=o.freed, error=o.errors[0]))
        else:
            done.append(replace(unit, status="deleted", freed_bytes=o.freed))
    return replace(plan, delete=tuple(done), dry_run=False)
