"""Carrying out a plan: exactly its units, in the order that never leaves a kept revision broken.

:func:`execute_plan` takes a :class:`~hfcache.plan.Plan` and a fresh scan of its caches:

1. every unit is matched against the fresh scan; one that vanished, changed, was read
   since the plan or is now damaged is *skipped* with a reason (a plan is never widened:
   what stays in the scan but not in the plan is never touched);
2. every root and every path that could be removed is checked before the first deletion
   (:func:`check_plan`, :mod:`hfcache.checks`): a root that is ``/``, a home folder or no
   longer a cache of its kind, a path outside the root, behind a symlink or of a shape the
   kind never deletes refuses the whole plan (:class:`UnsafePlan`);
3. junk goes first (partial downloads, orphan blobs, unreferenced payloads, leftovers),
   then model by model. Just before a model's units go, the live-use checks run (a
   download running into the repo, a file open or mapped by a process, a read since the
   plan); a unit that fails one is skipped. The rest go in huggingface_hub's
   ``DeleteCacheStrategy.execute`` order (:func:`all_steps`), the shared-store payloads
   last, swept by huggingface_hub's own ``sweep_shared_blob`` under the payload's lock;
4. nothing follows a symlink: a link is unlinked, never its target. ``freed_bytes`` is
   what actually left the disk (files whose last link we removed), never the estimate;
   a unit whose removal hit an error is ``failed``, with the first error.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from . import progress
from .audit import AuditLog
from .caches import CacheKind, registry
from .checks import LiveChecks, home_dirs, root_problem, target_problem
from .config import DEFAULT_JUNK_GRACE
from .errors import UnsafePlan
from .model import CacheInventory, Inventory, Item, Leftover, Revision
from .plan import Plan, PlanUnit

try:  # the hub's own garbage collection of its shared store (huggingface_hub >= 1.32)
    from huggingface_hub.utils._shared_blobs import sweep_shared_blob
except ImportError:  # pragma: no cover - older hub: payloads are left behind (leaked, never lost)
    sweep_shared_blob = None

log = logging.getLogger(__name__)


@dataclass
class _Outcome:
    freed: int = 0
    errors: list[str] = field(default_factory=list)

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


def _prepare(plan: Plan, inventory: Inventory) -> tuple[list[_Work], dict[str, str]]:
    """Match each delete unit to the fresh scan; returns the work per cache and the skip reasons."""
    caches = {(c.kind, c.root): c for c in inventory.caches if c.exists}
    work: dict[tuple[str, str], _Work] = {}
    skipped: dict[str, str] = {}
    revisions: dict[tuple[str, str], dict[str, tuple[Item, Revision]]] = {}
    junk: dict[tuple[str, str, str], dict[str, object]] = {}
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
                w.revisions.setdefault(item.path, (item, []))[1].append((unit, rev))
        else:
            key3 = (unit.kind, unit.root, unit.what)
            if key3 not in junk:
                pool: Iterable[object] = {
                    "partial": cache.partial_files,
                    "orphan": cache.orphan_files,
                    "payload": cache.unreferenced_payloads,
                    "leftover": cache.leftovers,
                }.get(unit.what, ())
                junk[key3] = {str(getattr(x, "path", "")): x for x in pool}
            found = junk[key3].get(unit.path)
            reason = _match_junk(unit, found)
            if reason is None:
                w.junk.append((unit, found))
        if reason is not None:
            skipped[unit.path] = reason
    return list(work.values()), skipped


# ---------------------------------------------------------------------------------------------
# What deleting a unit removes, in order


class Step(NamedTuple):
    """One removal: ``op`` is ``ref`` (unlink if it still names ``commit``), ``remove``, ``repo`` or ``sweep``.

    ``unit`` is the path of the plan unit whose ``freed_bytes`` the step counts to.
    """

    unit: str
    op: str
    path: str
    commit: str | None = None


Going = list[tuple[PlanUnit, Revision]]


def unit_steps(cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision) -> list[Step]:
    """What one revision removes on its own, in order; a failed step stops the rest of the list.

    For the hub: the refs that name it, then its snapshot, ``.no_exist/C`` and
    ``trees/C.json`` (a ref is never left pointing at a missing snapshot). For the other
    kinds: its files and folders.
    """
    if cache.kind != "huggingface":
        return [Step(unit.path, "remove", path) for path in rev.unit_paths]
    steps = [Step(unit.path, "ref", os.path.join(item.path, "refs", ref), rev.revision) for ref in rev.refs]
    steps.append(Step(unit.path, "remove", rev.path))
    steps.append(Step(unit.path, "remove", os.path.join(item.path, ".no_exist", rev.revision)))
    steps.append(Step(unit.path, "remove", os.path.join(item.path, "trees", rev.revision + ".json")))
    return steps


def shared_steps(cache: CacheInventory, item: Item, gone: Going, stay: list[Revision]) -> list[Step]:
    """What goes once the revisions ``gone`` are gone and ``stay`` remain (they may include failed ones).

    For the hub: the blobs no staying revision uses (each counted to the last going unit
    that used it, as the plan counted it), the repo folder when nothing stays, then the
    shared-store payloads those blobs linked to. For the other kinds: the item's own paths
    when nothing stays.
    """
    if not gone:
        return []
    last = gone[-1][0].path
    if cache.kind != "huggingface":
        return [] if stay else [Step(last, "remove", path) for path in item.unit_paths]
    ledger = cache.ledger.blobs.get(item.path, {}) if cache.ledger else {}
    kept = set().union(*(r.blobs for r in stay)) if stay else set()
    steps: list[Step] = []
    stores: dict[str, str] = {}
    owner: set[str] = set()
    for unit, rev in reversed(gone):
        for key in sorted(rev.blobs - kept):
            if key in owner or os.path.isabs(key):
                continue
            owner.add(key)
            if key.startswith("blobs/"):
                steps.append(Step(unit.path, "remove", os.path.join(item.path, key)))
            store = ledger.get(key, (0, None))[1]
            if store:
                stores.setdefault(store, unit.path)
    if not stay:
        for _, store in ledger.values():
            if store:
                stores.setdefault(store, last)
        steps.append(Step(last, "repo", item.path))
    steps.extend(Step(unit_path, "sweep", store) for store, unit_path in stores.items())
    return steps


def all_steps(cache: CacheInventory, item: Item, units: Going) -> list[Step]:
    """Every step deleting ``units`` of ``item`` can take (what :func:`check_plan` checks).

    For the hub this is ``DeleteCacheStrategy.execute``'s order, so an interruption leaves
    unreferenced data, never a dangling reference.
    """
    going = {rev.revision for _, rev in units}
    stay = [r for r in item.revisions if r.revision not in going]
    return [s for unit, rev in units for s in unit_steps(cache, item, unit, rev)] + shared_steps(cache, item, units, stay)


def junk_steps(unit: PlanUnit, found: object) -> list[Step]:
    """A partial download, orphan blob or leftover, then the payload an orphan linked to; a payload is swept."""
    if unit.what == "payload":
        return [Step(unit.path, "sweep", unit.path)]
    if isinstance(found, Leftover) and found.commit is None:
        return [Step(unit.path, "repo", unit.path)]  # an emptied repo folder, snapshots/ last
    steps = [Step(unit.path, "remove", unit.path)]
    store = getattr(found, "shared_payload", None)
    if store:
        steps.append(Step(unit.path, "sweep", store))
    return steps


def _sweep(store: str, root: str) -> tuple[int, str | None]:
    if sweep_shared_blob is None:  # pragma: no cover - older hub
        return 0, None
    try:
        return sweep_shared_blob(Path(store), cache_dir=root), None
    except OSError as e:
        return 0, f"{store}: {e.strerror or e}"


def _unlink_ref(step: Step) -> tuple[int, str | None]:
    """Unlink a ref only if it still names the revision (it may have moved to a kept one since)."""
    try:
        with open(step.path, encoding="utf-8") as f:
            if f.read().strip() != step.commit:
                return 0, None
    except OSError:
        return 0, None
    return _unlink(step.path)


def _remove_repo(path: str) -> tuple[int, str | None]:
    """Remove a repo folder whose revisions are gone, ``snapshots/`` last.

    Until the final two ``rmdir`` calls it stays a repo with no revisions, which the hub
    reads without complaint; a repo folder without ``snapshots/`` would be a warning.
    """
    freed, errors = 0, []
    try:
        names = sorted(os.listdir(path), key=lambda n: n == "snapshots")
    except FileNotFoundError:
        return 0, None
    except OSError as e:
        return 0, f"{path}: {e.strerror or e}"
    for name in names:
        if name == "snapshots" and errors:
            break  # something is left: stay a (revision-less) repo the hub can read
        got, err = remove_path(os.path.join(path, name))
        freed += got
        errors.extend([err] if err else [])
    if not errors:
        err = _remove_dir_entry(path, os.rmdir)
        errors.extend([err] if err else [])
    return freed, (errors[0] if errors else None)


def _run(steps: list[Step], root: str, out: dict[str, _Outcome], *, stop: bool = False) -> bool:
    """Take the steps in order; with ``stop``, stop at the first error. True when none failed."""
    ok = True
    for step in steps:
        if step.op == "ref":
            freed, error = _unlink_ref(step)
        elif step.op == "sweep":
            freed, error = _sweep(step.path, root)
        elif step.op == "repo":
            freed, error = _remove_repo(step.path)
        else:
            freed, error = remove_path(step.path)
        out[step.unit].add(freed, error)
        log.debug("%s %s: %s", step.op, step.path, error or f"done, {freed} bytes freed")
        if error:
            ok = False
            if stop:
                break
    return ok


def _delete_item(cache: CacheInventory, item: Item, going: Going, out: dict[str, _Outcome]) -> None:
    """Each revision's own steps (a failure stops that revision, which then stays), then the shared ones."""
    gone: Going = []
    failed: list[Revision] = []
    for unit, rev in going:
        if _run(unit_steps(cache, item, unit, rev), cache.root, out, stop=True):
            gone.append((unit, rev))
        else:
            failed.append(rev)
    leaving = {rev.revision for _, rev in going}
    stay = [r for r in item.revisions if r.revision not in leaving] + failed
    _run(shared_steps(cache, item, gone, stay), cache.root, out)


def _delete_junk(cache: CacheInventory, unit: PlanUnit, found: object, out: dict[str, _Outcome]) -> None:
    _run(junk_steps(unit, found), cache.root, out, stop=True)


# ---------------------------------------------------------------------------------------------
# Carrying out a plan


def check_roots(plan: Plan) -> None:
    """Refuse a plan that would delete from ``/``, a home folder, or a root that is not a cache of its kind.

    Cheap, and run before anything else (the prune lock and the audit log are created only
    after it); :func:`execute_plan` checks again, with every path.
    """
    kinds = registry().kinds
    homes = home_dirs()
    roots = {(u.kind, u.root) for u in plan.delete}
    for kind, root in sorted(roots):
        cache = CacheInventory(kind=kind, root=root)
        problem = root_problem(cache, getattr(kinds.get(kind), "recognizes", None), homes)
        if problem:
            raise UnsafePlan(f"plan refused, nothing deleted: {problem}")


def check_plan(work: list[_Work], *, kinds: Mapping[str, CacheKind], keep: Iterable[str] = ()) -> list[str]:
    """Every reason the plan may not run (empty when it may): roots, then every path it could remove."""
    homes = home_dirs()
    keep = tuple(keep)
    problems = []
    for w in work:
        kind = kinds.get(w.cache.kind)
        problem = root_problem(w.cache, getattr(kind, "recognizes", None), homes)
        if problem:
            problems.append(problem)
            continue
        shapes = tuple(getattr(kind, "shapes", ()))
        steps = [s for unit, found in w.junk for s in junk_steps(unit, found)]
        steps += [s for item, units in w.revisions.values() for s in all_steps(w.cache, item, units)]
        problems.extend(p for p in (target_problem(s.path, w.cache, shapes, keep) for s in steps) if p)
    return problems


def _result(unit: PlanUnit, o: _Outcome, skipped: str | None) -> PlanUnit:
    if skipped is not None:
        return replace(unit, status="skipped", freed_bytes=0, error=skipped)
    if o.errors:
        return replace(unit, status="failed", freed_bytes=o.freed, error=o.errors[0])
    return replace(unit, status="deleted", freed_bytes=o.freed)


def execute_plan(
    plan: Plan,
    inventory: Inventory,
    *,
    live: LiveChecks | None = None,
    audit: AuditLog | None = None,
    failed: Mapping[str, str] | None = None,
) -> Plan:
    """Carry out ``plan`` against ``inventory`` (a fresh scan of its caches); returns the plan with outcomes.

    Raises :class:`UnsafePlan`, before deleting anything, when any root or target fails
    :func:`check_plan`. Then, cache by cache and model by model, each unit passes the
    live-use checks of ``live`` just before it goes, or is skipped with the reason.
    ``audit`` gets a line per unit handled; ``failed`` maps roots that may not be touched
    (their prune lock could not be taken) to the reason, and fails their units.
    """
    work, skipped = _prepare(plan, inventory)
    problems = check_plan(work, kinds=registry().kinds, keep=[audit.path] if audit else [])
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UnsafePlan(f"plan refused, nothing deleted: {problems[0]}{more}")
    live = live or LiveChecks([w.cache.root for w in work])
    graces = {(c.kind, c.root): c.junk_grace for c in plan.caches}
    out = {u.path: _Outcome() for u in plan.delete}
    done: dict[str, PlanUnit] = {}

    def finish(unit: PlanUnit) -> None:
        done[unit.path] = result = _result(unit, out[unit.path], skipped.get(unit.path))
        if audit is not None and result.status != "skipped":
            audit.record(result)
        why = result.error or "; ".join(result.reasons)
        log.info("%s %s %s: %s (%d bytes freed)", result.status, unit.what, unit.path, why, result.freed_bytes or 0)
        progress.report("deleting", len(done), len(plan.delete))

    for w in work:
        if failed and w.cache.root in failed:
            for unit, _ in w.junk:
                out[unit.path].errors.append(failed[w.cache.root])
            for _, units in w.revisions.values():
                for unit, _ in units:
                    out[unit.path].errors.append(failed[w.cache.root])
            continue
        grace = graces.get((w.cache.kind, w.cache.root), DEFAULT_JUNK_GRACE)
        for unit, found in w.junk:
            reason = live.junk_busy(w.cache, unit, found, grace)
            if reason:
                skipped[unit.path] = reason
            else:
                _delete_junk(w.cache, unit, found, out)
            finish(unit)
        for item, units in w.revisions.values():
            busy = live.item_busy(w.cache, item.path, item.id, grace)
            going = []
            for unit, rev in units:
                reason = busy or live.revision_busy(w.cache, unit, rev)
                if reason:
                    skipped[unit.path] = reason
                else:
                    going.append((unit, rev))
            if going:
                _delete_item(w.cache, item, going, out)
            for unit, _ in units:
                finish(unit)
    results = tuple(done.get(u.path) or _result(u, out[u.path], skipped.get(u.path)) for u in plan.delete)
    return replace(plan, delete=results, dry_run=False, warnings=(*plan.warnings, *live.notes))
