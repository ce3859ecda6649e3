"""The prune workflow as a library: policy, scan, checks, plan, saved plans, execution.

``hfcache prune`` and ``hfcache apply`` are thin layers over these functions::

    >>> from hfcache.plan.settings import Settings
    >>> policy = build_policy(Settings(keep=2), use_config=False)
    >>> policy.for_item("huggingface", "org/model").keep
    2

The reading of the system (mount options, free space) happens here, so that
:func:`hfcache.plan.build.make_plan` stays pure.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import replace

from hfcache.caches.protocol import PRUNE_LOCK, CacheKind
from hfcache.caches.registry import registry
from hfcache.caches.scan import scan_caches
from hfcache.errors import UsageError
from hfcache.execute.audit import AuditLog
from hfcache.execute.prune_lock import DEFAULT_LOCK_WAIT, PruneLocks
from hfcache.execute.run import check_roots, execute_plan, recover
from hfcache.fs.system import disk_of, frozen_atimes
from hfcache.model import CacheInventory, Disk, Inventory, Use
from hfcache.plan.build import make_plan
from hfcache.plan.decisions import Execution, Plan, PlanUnit, What
from hfcache.plan.planfile import load_plan_file, plan_to_dict
from hfcache.plan.query import Scope
from hfcache.plan.settings import DEFAULT_WINDOW, Policy, Settings, find_config, load_config, validate

logger = logging.getLogger(__name__)

NO_POLICY = (
    "no policy given: use --keep, --max-age, --max-size, --min-free or --junk, or a policy file "
    "(--config); nothing to do is never 'delete everything'"
)


def build_policy(
    overrides: Settings,
    *,
    protect: tuple[str, ...] = (),
    config: str | None = None,
    use_config: bool = True,
) -> Policy:
    """The policy file found (see :func:`hfcache.plan.settings.find_config`) with the command line on top.

    Raises :class:`UsageError` (exit 2) for bad values or an empty policy, before any scan.
    """
    validate(overrides, where="command line")
    if overrides.keep_per and not overrides.keep:
        raise UsageError("--keep-per needs --keep N (how many to keep in each series)")
    if overrides.window and not overrides.min_uses:
        raise UsageError("--window needs --min-uses N (how many days of use in the window)")
    if overrides.min_uses and not overrides.window:
        validate(replace(overrides, window=DEFAULT_WINDOW), where="command line (--window 30d, the default)")
    path = find_config(config) if use_config else None
    logger.info("policy file: %s", path or "none")
    policy = load_config(path, kinds=tuple(registry().kinds)) if path else Policy()
    policy = replace(policy, overrides=overrides, protect=(*policy.protect, *protect))
    if path:
        policy = replace(policy, sources=(path,))
    if policy.is_empty:
        raise UsageError(NO_POLICY)
    return policy


def check_access_times(inventory: Inventory, policy: Policy) -> list[str]:
    """Refuse an atime policy where access times never move; returns warnings for lesser problems.

    Under ``noatime`` (and on read-only and overlay mounts: see
    :func:`~hfcache.fs.system.frozen_atimes`) access times never move, so "not accessed for
    30 days" would select models read every day. ``relatime`` (Linux's default) moves atime at most once a day,
    which is fine for ages counted in days. Quotas order by atime too: there they fall back
    on nothing, so a warning says the order is by age of download. Ages by use (``age_by:
    use``, the usage history) are allowed there: see :func:`usage_for`.
    """
    warnings = []
    for cache in inventory.caches:
        if not cache.exists:
            continue
        by_atime = [i.id for i in cache.items if (s := policy.for_item(cache.kind, i.id)).max_age and s.age_by in (None, "atime")]
        settings = policy.for_cache(cache.kind)
        quota_by_atime = (settings.max_size or settings.min_free) and (settings.age_by or "atime") == "atime"
        if not by_atime and not quota_by_atime:
            continue
        mount = frozen_atimes(cache.root)
        if mount is None:
            continue
        where = f"{cache.root} is on {mount}"
        if by_atime:
            raise UsageError(
                f"{where}: access times never change there, so max-age by atime is refused (of {by_atime[0]}); "
                "use --age-by use (the usage history) or --age-by mtime"
            )
        warnings.append(f"{where}: least-recently-used order is by download time there (use --age-by use or mtime)")
    return warnings


def usage_for(inventory: Inventory, policy: Policy, state: str | None) -> tuple[dict[str, Use], list[str]]:
    """What the usage history at ``state`` knows of each revision, when ``policy`` ages by use or counts uses.

    On a ``noatime`` mount a revision's access time is its download time, so a use before
    the history began watching it cannot be told from no use: there its last use is taken to
    be no earlier than the moment the history first saw it, and a revision the history does
    not know at all (no database, ``--state off``) is taken to be in use now. A database that
    someone else can write is not trusted with deciding deletions (a warning; as if there was
    none). Returns the uses and warnings.
    """
    levels = policy.levels()
    if not any(s.age_by == "use" or s.min_uses for s in levels):
        return {}, []
    from hfcache.plan.settings import DEFAULT_WINDOW

    window = max([s.window or DEFAULT_WINDOW for s in levels if s.min_uses] or [0.0])
    found, warnings = _read_usage(
        state, [c.root for c in inventory.caches if c.exists], inventory.scanned_at - window, now=inventory.scanned_at
    )
    now = inventory.scanned_at
    for cache in inventory.caches:
        frozen = frozen_atimes(cache.root) if cache.exists else None
        if frozen is None:
            continue
        unknown = 0
        for item in cache.items:
            for rev in item.revisions:
                use = found.get(rev.path)
                if use is None:
                    unknown += 1
                    found[rev.path] = Use(now, "watched", None, (), now)
                elif use.first_seen > use.last:
                    found[rev.path] = use._replace(last=use.first_seen, source="watched", program=None)
        if unknown:
            warnings.append(
                f"{cache.root} is on {frozen} and the usage history knows nothing of {unknown} revision(s) there: "
                "they are taken to be in use now"
            )
    return found, warnings


def _read_usage(state: str | None, roots: list[str], since: float, *, now: float) -> tuple[dict[str, Use], list[str]]:
    if state is None or not os.path.exists(state):
        return {}, []
    from hfcache.history.store import usage
    from hfcache.state import StateDB

    problem = _untrusted(state)
    if problem:
        return {}, [f"state database {state} {problem}: its usage history is not used to decide deletions"]
    with StateDB(state) as db:
        return usage(db, roots, since=since, now=now), db.warnings


def _untrusted(path: str) -> str | None:
    """Why a state database may not decide deletions: another account owns it or its folder, or others may write them.

    SQLite also reads ``<db>-wal`` (and ``-shm``, ``-journal``) beside it: in a folder anyone
    may write, even a sticky one such as ``/tmp``, another account could plant a ``-wal``
    that rewrites the history when it is read. So the folder must be the account's own to
    write, and any of those files there must be the account's too.
    """
    me = os.geteuid() if hasattr(os, "geteuid") else None
    folder = os.path.dirname(os.path.abspath(path))
    for place in (path, folder, *(path + s for s in ("-wal", "-shm", "-journal"))):
        try:
            st = os.stat(place)
        except FileNotFoundError:
            if place == path or place == folder:
                return "cannot be checked (gone)"
            continue
        except OSError as e:
            return f"cannot be checked ({e.strerror or e})"
        if me is not None and st.st_uid not in (me, 0):
            return f"(or {os.path.basename(place)} beside it) belongs to uid {st.st_uid}, not to this account"
        if st.st_mode & 0o002:
            return f"(or its folder {folder}) can be written by anyone"
    return None


def desired_of(state: str | None) -> dict[str, str]:
    """The revisions manifests want on this node (``hfcache sync``), by path -> manifest.

    None (``--state off``): none. Raises :class:`~hfcache.desired.DesiredUnknown` (exit 2) when
    the list cannot be read: what must stay is unknown, so nothing is deleted.
    """
    from hfcache.desired import wanted

    return wanted(state)


def hold_desired(plan: Plan, wanted: Mapping[str, str]) -> Plan:
    """``plan`` with every unit in a revision a manifest wants moved to ``keep``, with why (``apply``, ``rm``)."""
    from hfcache.plan.policies import listed

    def wanting(path: str) -> str | None:
        return wanted.get(path) or next((m for p, m in wanted.items() if path.startswith(p + os.sep)), None)

    held = {u.path: manifest for u in plan.delete if (manifest := wanting(u.path))}
    if not held:
        return plan
    kept = tuple(replace(u, reclaim_bytes=0, reasons=(*u.reasons, listed(held[u.path]))) for u in plan.delete if u.path in held)
    # A model that keeps a revision is not removed whole: its folder stays, whatever else of it goes.
    staying = {(u.root, u.id) for u in kept}
    delete = tuple(replace(u, item_removed=False) if (u.root, u.id) in staying else u for u in plan.delete if u.path not in held)
    return replace(plan, delete=delete, keep=(*plan.keep, *kept))


def plan_prune(
    inventory: Inventory,
    policy: Policy,
    scope: Scope = Scope(),
    usage: Mapping[str, Use] | None = None,
    desired: Mapping[str, str] | None = None,
) -> Plan:
    """The plan for ``inventory``, with the free space of each root's file system when ``min_free`` needs it.

    ``scope`` narrows what it may delete (``--type``, ``--name``), ``usage`` is the usage
    history's (:func:`usage_for`), ``desired`` what ``hfcache sync`` keeps (:func:`desired_of`):
    see :func:`hfcache.plan.build.make_plan`.
    """
    disks: dict[str, Disk] = {}
    for cache in inventory.caches:
        if cache.exists and policy.for_cache(cache.kind).min_free is not None:
            disks[cache.root] = disk_of(cache.root)
    plan = make_plan(inventory, policy, now=inventory.scanned_at, disks=disks, scope=scope, usage=usage, desired=desired)
    if policy.sources:
        plan = replace(plan, policy=(f"file: {', '.join(policy.sources)}", *plan.policy))
    return plan


def rescan(plan: Plan) -> Inventory:
    """A fresh scan of exactly the caches a plan names (each as its kind)."""
    caches: list[CacheInventory] = []
    scanned_at = 0.0
    for kind, root, _ in plan.caches:
        inv = scan_caches([root], kinds=[kind])
        caches.extend(inv.caches)
        scanned_at = inv.scanned_at
    return Inventory(caches=tuple(caches), scanned_at=scanned_at)


def _lock_file(kind: CacheKind | None) -> str:
    return kind.lock_file if kind is not None else PRUNE_LOCK  # a kind not installed here: the default place


def lock_files(plan: Plan) -> dict[str, str]:
    """The prune lock file of each root the plan deletes from (where its kind keeps it)."""
    kinds = registry().kinds
    roots = {u.root for u in plan.delete}
    return {c.root: os.path.join(c.root, _lock_file(kinds.get(c.kind))) for c in plan.caches if c.root in roots}


def run_plan(
    plan: Plan,
    inventory: Inventory | None = None,
    *,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    log: str | None = None,
    jobs: int = 1,
) -> Execution:
    """Execute ``plan`` against ``inventory`` (a fresh scan of its caches when None).

    The audit log (``log``, default :func:`hfcache.execute.audit.default_log_path`) is opened
    first: a log that cannot be written stops the run before anything is deleted. Then the
    prune lock of every root is taken, waiting up to ``lock_wait`` seconds
    (:class:`~hfcache.errors.CacheBusy` after that). Under the locks, what an interrupted
    prune left half-done is finished or rolled back first (:func:`hfcache.execute.run.recover`).
    When another prune held a lock, or the repair changed something, the caches are scanned
    again, since the scan behind ``inventory`` is stale. ``jobs`` over 1 lets many hub repos
    be deleted by that many processes at once (:mod:`hfcache.execute.workers`).
    """
    check_roots(plan)
    locks_needed = lock_files(plan)
    with AuditLog(log) as audit, PruneLocks(locks_needed, lock_wait) as locks:
        logger.info("audit log: %s; prune locks: %s", audit.path, ", ".join(sorted(locks_needed.values())))
        if locks.waited:
            logger.info("waited for another prune of the same cache: scanning again")
        roots = {u.root for u in plan.delete} - set(locks.failed)
        repaired = recover(Inventory(caches=tuple(CacheInventory(c.kind, c.root) for c in plan.caches if c.root in roots)))
        fresh = rescan(plan) if inventory is None or locks.waited or repaired else inventory
        if repaired:  # said first, with the plan's own warnings
            plan = replace(plan, warnings=(*repaired, *plan.warnings))
        return execute_plan(plan, fresh, audit=audit, failed=locks.failed, jobs=jobs)


def repair(plan: Plan, *, lock_wait: float = DEFAULT_LOCK_WAIT) -> list[str]:
    """Finish or roll back what an interrupted prune left in the plan's caches, under their prune locks.

    :func:`run_plan` does this before executing; this is for a run with nothing to delete.
    A cache whose lock cannot be created (read-only) is left as it is.
    """
    kinds = registry().kinds
    needed = {c.root: os.path.join(c.root, _lock_file(kinds.get(c.kind))) for c in plan.caches if os.path.isdir(c.root)}
    with PruneLocks(needed, lock_wait) as locks:
        return recover(
            Inventory(
                caches=tuple(CacheInventory(c.kind, c.root) for c in plan.caches if c.root in set(needed) - set(locks.failed))
            )
        )


def archives_of(policy: Policy) -> list[str]:
    """Every archive the policy sends units to (``archive_to``), each checked now: a URL no back-end serves is exit 2."""
    dests = list(dict.fromkeys(s.archive_to for s in policy.levels() if s.archive_to))
    if dests:
        from hfcache.archive.store import Archive

        for dest in dests:
            Archive(dest)
    return dests


def archive_units(plan: Plan, policy: Policy) -> tuple[Plan, list[str]]:
    """Copy each revision unit of ``plan`` whose model's policy says ``archive_to`` into that archive, before it goes.

    A fresh scan of the plan's caches says what each unit is now. A unit that cannot be
    archived whole leaves ``delete`` for ``keep``, with the reason (see
    :func:`hfcache.archive.run.archive_plan`); units with no archive go as planned.
    """
    from hfcache.archive.run import archive_plan
    from hfcache.archive.store import Archive

    inventory = rescan(plan)
    notes: list[str] = []
    by_dest: dict[str | None, list[PlanUnit]] = {}
    for unit in plan.delete:
        dest = policy.for_item(unit.kind, unit.id).archive_to if unit.id and unit.what == What.REVISION else None
        by_dest.setdefault(dest, []).append(unit)
    delete = list(by_dest.pop(None, []))
    keep = list(plan.keep)
    for dest, units in by_dest.items():
        assert dest is not None
        part, said = archive_plan(replace(plan, delete=tuple(units), keep=()), inventory, Archive(dest), registry().kinds)
        delete.extend(part.delete)
        keep.extend(part.keep)
        notes.extend(said)
    order = lambda u: (u.root, u.path)  # noqa: E731 - the plan's own order
    return replace(plan, delete=tuple(sorted(delete, key=order)), keep=tuple(sorted(keep, key=order))), notes


def write_plan(plan: Plan, path: str) -> None:
    """Save a plan as JSON, atomically (a reader never sees half a plan; a symlink at ``path`` is replaced)."""
    from hfcache.output.files import atomic_write

    try:
        atomic_write(path, json.dumps(plan_to_dict(plan), indent=2) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write plan to {path}: {e.strerror or e}", path=path) from None


def read_plan(path: str) -> Plan:
    """Read a plan saved by ``--plan-out``; one clear error (exit 2) for anything that is not one."""
    return load_plan_file(path)
