"""Plans: which units a policy deletes, which it keeps, why, and exactly how many bytes go.

:func:`make_plan` combines the policies of :mod:`hfcache.plan.policies` the way borg's
``do_prune`` does, and the way README and ``man hfcache`` document it:

1. every policy given (``keep``, ``max_age``, ``junk``) selects units on its own;
2. a unit is deleted when at least one policy selects it and nothing keeps it: a
   protection (``--protect``, a protected model rule), a keep rule (the ``N`` latest
   revisions and ``main``), or damage the scan found (a blocking warning);
3. removing the last revision of a model needs ``allow_remove_all``, except when
   ``max_age`` selected every one of them (or for junk);
4. quotas run last, over what survives: ``max_size`` per cache, then ``min_free`` per
   file system, evicting the least recently used units until the target is met.

A :class:`~hfcache.plan.query.Scope` (``prune --type --name``) narrows all of it: only the
revisions of the items in the scope, and the junk of those items, are decided about; the
rest is not in the plan at all, neither deleted nor listed as kept. The quotas still measure
what they measure (the whole cache, the whole file system): they only have fewer units to
evict, and say so when the scope cannot reach their target.

The plan is a value; :mod:`hfcache.execute.run` carries it out. Its ``reclaim_bytes`` is
counted by :class:`hfcache.plan.accounting.Reclaim`, so a byte shared with a unit that stays
is not counted, and no byte is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from hfcache.model import CacheInventory, Disk, Inventory, Item, Revision, Use
from hfcache.plan.accounting import Reclaim
from hfcache.plan.decisions import Plan, PlanCache, PlanUnit, What, junk_pieces, revision_unit
from hfcache.plan.policies import (
    DEFAULT_JUNK_GRACE,
    Candidate,
    Case,
    Decision,
    Rule,
    evict_lru,
    junk,
    keep_latest,
    listed,
    lru_order,
    matches,
    max_age,
    min_uses,
)
from hfcache.plan.query import Scope
from hfcache.plan.settings import DEFAULT_WINDOW, Policy
from hfcache.units import describe_size


def candidate(item: Item, rev: Revision, use: Use | None = None) -> Candidate:
    """The policies' view of ``rev``, with what the usage history knows of it (``use``), if anything."""
    c = Candidate(
        path=rev.path,
        item_id=item.id,
        revision=rev.revision,
        kind=item.kind,
        version=rev.version,
        refs=rev.refs,
        last_accessed=rev.last_accessed,
        last_modified=rev.last_modified,
        size_bytes=rev.size_bytes,
        default=rev.default,
    )
    if use is None:
        return c
    how = {"process": f"by {use.program or 'a process'} (history)", "atime": "(access time, history)"}
    used_by = how.get(use.source or "", "(not seen in use since the history began)")
    return replace(
        c, last_used=use.last, used_by=used_by, use_days=use.days, watched_since=use.first_seen, unwatched_days=use.unwatched
    )


_OF_USE = (Rule.MAX_AGE, Rule.MIN_USES)  # rules that may take a model's last revision: it is not used


class _CachePlan:
    """The decisions for one cache while a plan is made (see :func:`make_plan`); :meth:`decide` makes them."""

    def __init__(
        self,
        cache: CacheInventory,
        policy: Policy,
        now: float,
        scope: Scope = Scope(),
        usage: Mapping[str, Use] | None = None,
        desired: Mapping[str, str] | None = None,
    ) -> None:
        self.cache = cache
        self.usage = usage or {}
        self.desired = desired or {}
        self.policy = policy
        self.now = now
        self.scope = scope
        self.settings = policy.for_cache(cache.kind)
        self.age_by = self.settings.age_by or "atime"
        self.grace = self.settings.junk_grace if self.settings.junk_grace is not None else DEFAULT_JUNK_GRACE
        self.sim = Reclaim(cache)
        self.selects: dict[str, list[Decision]] = {}
        self.vetoes: dict[str, list[Decision]] = {}
        self.kept_by_rule: set[str] = set()
        self.going: dict[str, int] = {}  # path -> reclaim bytes, in the order the bytes were counted
        self.units: dict[str, tuple[Item, Revision]] = {}
        self.cands: dict[str, Candidate] = {}
        self.junk: list[PlanUnit] = []
        self.junk_kept: list[PlanUnit] = []
        self.warnings: list[str] = []

    def decide(self) -> _CachePlan:
        """Every policy of this cache, in the one order that works (the file system's min_free comes after, across caches).

        Selections and vetoes first, then the last-revision rule over them, then junk; the
        bytes of what goes are counted before the size target evicts more, least recently
        used first, from what stays.
        """
        self.decide_revisions()
        self.last_revision_rule()
        self.decide_junk()
        self.count_going()
        self.quota()
        return self

    def add(self, decisions: Mapping[str, Decision]) -> None:
        for path, d in decisions.items():
            (self.vetoes if d.keep else self.selects).setdefault(path, []).append(d)
            if d.keep and d.policy not in (Rule.PROTECT, Rule.DAMAGED):
                self.kept_by_rule.add(path)  # listed in the plan's keep even when nothing selected it

    def decide_revisions(self) -> None:
        for item in self.cache.items:
            if not self.scope.holds(item):
                continue  # out of the scope: no unit, so no policy (quotas included) ever decides about it
            settings = self.policy.for_item(item.kind, item.id)
            cands = [candidate(item, rev, self.usage.get(rev.path)) for rev in item.revisions]
            for c, rev in zip(cands, item.revisions, strict=True):
                self.units[c.path] = (item, rev)
                self.cands[c.path] = c
            if settings.keep:
                self.add(keep_latest(cands, n=settings.keep, per=settings.keep_per))
            if settings.max_age:
                self.add(max_age(cands, now=self.now, older_than=settings.max_age, age_by=settings.age_by or "atime"))
            if settings.min_uses:
                window = settings.window or DEFAULT_WINDOW
                self.add(min_uses(cands, now=self.now, uses=settings.min_uses, window=window))
            glob = self.policy.protected_by(item.kind, item.id)
            if glob is not None:
                self.add({c.path: matches(glob) for c in cands})
            self.add({c.path: listed(self.desired[c.path]) for c in cands if c.path in self.desired})
            if not item.deletable:
                everything = (*item.warnings, *(w for r in item.revisions for w in r.warnings))
                blocking = next(w for w in everything if w.blocks_deletion)
                self.add({c.path: Decision(Rule.DAMAGED, Case.BLOCKED, keep=True, subject=str(blocking)) for c in cands})

    def last_revision_rule(self) -> None:
        """Keep one revision of a model every policy would empty, unless allowed (or a rule of use took them all).

        A rule of use (max-age, min-uses) that selects every revision says the whole model is
        unused: it goes, as the user's age or use limit asks.
        """
        if self.settings.allow_remove_all:
            return
        for item in self.cache.items:
            paths = [r.path for r in item.revisions]
            if not paths or not all(p in self.selects and p not in self.vetoes for p in paths):
                continue
            if all(any(d.policy in _OF_USE for d in self.selects[p]) for p in paths):
                continue
            spare = [p for p in paths if not any(d.policy in _OF_USE for d in self.selects[p])]
            newest = max(spare, key=lambda p: (self.cands[p].last_modified, p))
            self.add({newest: Decision(Rule.LAST_REVISION, Case.LAST, keep=True, scope=item.id)})

    def decide_junk(self) -> None:
        if not self.settings.junk:
            return
        cache = self.cache
        items = {i.id: i for i in cache.items}
        orphans = {o.path: o for o in cache.orphan_files}
        decided = junk(cache, now=self.now, grace=self.grace)
        in_scope = self.scope.junk_filter(cache)
        for path, what, item_id, size, mtime in junk_pieces(cache):
            if not in_scope(item_id, path):
                continue
            select, *keep = decided[path]
            glob = self.policy.protected_by(cache.kind, item_id) if item_id else None
            if glob is not None:
                keep = [matches(glob)]
            unit = PlanUnit(
                cache.kind, cache.root, item_id, None, path, 0, (select,), what=what, size_bytes=size, last_modified=mtime
            )
            if keep:
                self.junk_kept.append(replace(unit, reasons=(select, *keep)))
            elif what == What.ORPHAN:
                self.junk.append(replace(unit, reclaim_bytes=self.sim.remove_orphan(orphans[path], items.get(item_id or ""))))
            else:
                self.junk.append(replace(unit, reclaim_bytes=size))

    def count_going(self) -> None:
        """Count the bytes of the revisions selected so far, in path order."""
        for path in sorted(self.selects):
            if path not in self.vetoes and path not in self.going:
                item, rev = self.units[path]
                self.going[path] = self.sim.remove_revision(item, rev)

    def evictable(self) -> list[Candidate]:
        """Revisions still staying that a quota may evict, least recently used first."""
        free = [c for p, c in self.cands.items() if p not in self.going and p not in self.vetoes]
        return lru_order(free, age_by=self.age_by)

    def may_evict(self, policy: Rule) -> Callable[[Candidate], Decision | None]:
        def allowed(c: Candidate) -> Decision | None:
            item, _ = self.units[c.path]
            if not self.settings.allow_remove_all and len(self.sim.remaining(item)) <= 1:
                return Decision(policy, Case.LAST, keep=True, scope=item.id)
            return None

        return allowed

    def evict(self, c: Candidate) -> int:
        item, rev = self.units[c.path]
        freed = self.sim.remove_revision(item, rev)
        self.going[c.path] = freed
        return freed

    def quota(self) -> None:
        limit = self.settings.max_size
        if limit is None or self.sim.total <= limit:
            return

        def decision(c: Candidate) -> Decision:
            age = self.now - c.time(self.age_by)
            return Decision(Rule.MAX_SIZE, Case.LRU, by=self.age_by, age=age, limit=limit, subject=c.signal(self.age_by))

        selected, saved, left = evict_lru(
            self.evictable(),
            excess=self.sim.total - limit,
            free=self.evict,
            decision=decision,
            allowed=self.may_evict(Rule.MAX_SIZE),
        )
        self.add(selected)
        self.add(saved)
        if left > 0:
            rest = "kept by a rule" if self.scope.is_everything else "out of the scope or kept by a rule"
            self.warnings.append(
                f"{self.cache.root}: stays {describe_size(left)} over max_size {describe_size(limit)}: everything left is {rest}"
            )


def _min_free(plans: list[_CachePlan], disks: Mapping[str, Disk], now: float) -> list[str]:
    """Evict across the caches of each file system until it has ``min_free`` free, counting the plan so far."""
    by_device: dict[int, list[_CachePlan]] = {}
    for cp in plans:
        if cp.settings.min_free is not None and cp.cache.root in disks:
            by_device.setdefault(disks[cp.cache.root].device, []).append(cp)
    warnings = [_free_space(group, disks[group[0].cache.root], now) for group in by_device.values()]
    return [w for w in warnings if w]


def _free_space(group: list[_CachePlan], disk: Disk, now: float) -> str | None:
    target = max(cp.settings.min_free.target(total=disk.total) for cp in group if cp.settings.min_free)
    planned = sum(sum(cp.going.values()) + sum(u.reclaim_bytes for u in cp.junk) for cp in group)
    excess = target - disk.free - planned
    if excess <= 0:
        return None
    owner: dict[str, _CachePlan] = {}
    merged: list[Candidate] = []
    for cp in group:
        for c in cp.evictable():
            owner[c.path] = cp
            merged.append(c)
    merged.sort(key=lambda c: (c.time(owner[c.path].age_by), c.last_modified, c.path))

    def decision(c: Candidate) -> Decision:
        cp = owner[c.path]
        return Decision(
            Rule.MIN_FREE, Case.LRU, by=cp.age_by, age=now - c.time(cp.age_by), limit=target, subject=c.signal(cp.age_by)
        )

    selected, saved, left = evict_lru(
        merged,
        excess=excess,
        free=lambda c: owner[c.path].evict(c),
        decision=decision,
        allowed=lambda c: owner[c.path].may_evict(Rule.MIN_FREE)(c),
    )
    for path, d in {**selected, **saved}.items():
        owner[path].add({path: d})
    if left > 0:
        roots = ", ".join(cp.cache.root for cp in group)
        rest = "kept" if all(cp.scope.is_everything for cp in group) else "out of the scope or kept"
        return f"{roots}: the file system stays {describe_size(left)} short of min_free: everything left is {rest}"
    return None


def _revision_unit(cp: _CachePlan, path: str, reasons: list[Decision], reclaim: int, removed: bool) -> PlanUnit:
    item, rev = cp.units[path]
    return revision_unit(cp.cache.root, item, rev, tuple(reasons), reclaim, removed)


def make_plan(
    inventory: Inventory,
    policy: Policy,
    *,
    now: float,
    disks: Mapping[str, Disk] | None = None,
    scope: Scope = Scope(),
    usage: Mapping[str, Use] | None = None,
    desired: Mapping[str, str] | None = None,
) -> Plan:
    """The plan ``policy`` makes for ``inventory`` at time ``now``. Pure: reads no disk, no clock.

    ``disks`` gives each cache root's file system (needed by ``min_free`` only). ``usage``
    is what the usage history knows of each revision (by its path), for ``age_by: use`` and
    ``min_uses``; a revision it does not name is aged by its access time. ``desired`` (revision
    path -> manifest) are the revisions ``hfcache sync`` keeps on this node: protected. ``scope``
    narrows what the plan may delete (see the module's docstring); the plan's ``policy``
    lines state it, and its warnings say which of its globs match nothing. Raises
    ``ValueError`` for an empty policy: nothing to do never means "delete everything".
    """
    if policy.is_empty:
        raise ValueError("empty policy")
    plans = []
    for cache in inventory.caches:
        if not cache.exists:
            continue
        plans.append(_CachePlan(cache, policy, now, scope, usage, desired).decide())
    warnings = scope.unmatched(inventory)
    if any(cp.settings.min_free for cp in plans):
        warnings.extend(_min_free(plans, disks or {}, now))

    delete: list[PlanUnit] = []
    keep: list[PlanUnit] = []
    for cp in plans:
        warnings.extend(cp.warnings)
        removed = {item.path for item in cp.cache.items if item.revisions and all(r.path in cp.going for r in item.revisions)}
        for path, reclaim in cp.going.items():
            item, _ = cp.units[path]
            delete.append(_revision_unit(cp, path, cp.selects.get(path, []), reclaim, item.path in removed))
        for path, vetoes in cp.vetoes.items():
            if path in cp.going or not (path in cp.selects or path in cp.kept_by_rule):
                continue
            keep.append(_revision_unit(cp, path, [*cp.selects.get(path, []), *vetoes], 0, False))
        delete.extend(cp.junk)
        keep.extend(cp.junk_kept)
    order = lambda u: (u.root, u.path)  # noqa: E731 - hf's export_as_table sorts by path too
    return Plan(
        delete=tuple(sorted(delete, key=order)),
        keep=tuple(sorted(keep, key=order)),
        created_at=now,
        policy=(*policy.describe(), *(() if scope.is_everything else (f"scope: {scope.describe()}",))),
        caches=tuple(PlanCache(cp.cache.kind, cp.cache.root, cp.grace) for cp in plans),
        warnings=tuple(warnings),
    )
