"""Plans that remove what is named (``hfcache rm``): repos, revisions, ``hf://`` URIs, other kinds' ids.

A target names an item by its id (``org/name``; a torch checkpoint's or a Keras file's id),
optionally one revision of it (``org/name@main``, a ref, or ``org/name@<commit>``), the way
``hf cache rm`` takes them; ``hf://models/org/name``, ``hf://datasets/...`` and
``hf://spaces/...`` name a hub repo of that type. The plan is the same value a policy makes,
and goes through the same dry run, question, checks, audit log and exit codes. Pure: the
inventory in, the plan out.

>>> parse_target("org/model@v1.0")
Target(text='org/model@v1.0', id='org/model', revision='v1.0', type=None)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from hfcache.caches.protocol import CacheKind
from hfcache.errors import UsageError
from hfcache.model import CacheInventory, Inventory, Item, Revision
from hfcache.plan.accounting import Reclaim
from hfcache.plan.decisions import Plan, PlanCache, PlanUnit
from hfcache.plan.policies import Case, Decision, Rule


class Target(NamedTuple):
    """What one command-line argument names: an item id, maybe a revision (or ref), maybe a type."""

    text: str
    id: str
    revision: str | None = None
    type: str | None = None


def parse_target(text: str, *, item_type: str | None = None, kinds: Iterable[CacheKind] = ()) -> Target:
    """``org/name``, ``org/name@rev``, or a URI one of ``kinds`` reads (``hf://...``); a :class:`UsageError` else."""
    given = text.strip()
    uri = next((u for u in (k.parse_uri(given) for k in kinds) if u is not None), None)
    if uri is not None:
        ident, revision, kind_type = uri.id, uri.revision, item_type or uri.type
        at = "@" if revision else ""
    else:
        ident, at, rest = given.partition("@")
        revision, kind_type = rest or None, item_type
    if not ident or ident.startswith("/") or "://" in ident or (at and not revision) or any(c in ident for c in "\0\n"):
        raise UsageError(f"not a repo id, id@revision or URI: {text!r}")
    return Target(text, ident.rstrip("/"), revision, kind_type)


def _matches(rev: Revision, revision: str) -> bool:
    return rev.revision == revision or revision in rev.refs or f"refs/{revision}" in rev.refs


def _found(inventory: Inventory, target: Target) -> list[tuple[CacheInventory, Item, list[Revision]]]:
    out = []
    for cache in inventory.caches:
        for item in cache.items:
            if item.id != target.id or (target.type is not None and item.type != target.type):
                continue
            revs = [r for r in item.revisions if target.revision is None or _matches(r, target.revision)]
            if revs:
                out.append((cache, item, revs))
    return out


def removal_plan(inventory: Inventory, targets: Iterable[Target], *, now: float) -> Plan:
    """The plan that removes every revision ``targets`` name, counted as a policy's plan is.

    Raises :class:`UsageError` when a target names nothing in ``inventory`` (nothing is removed
    then: a typo never turns into half a removal). A model something odd was found in is kept,
    with the reason, as every policy keeps it. A revision refs point to is removed with them,
    and its reason says so; a model's last revision takes the whole model.
    """
    targets = list(targets)
    chosen: dict[str, tuple[CacheInventory, Item, Revision, Target]] = {}
    missing = []
    for target in targets:
        found = _found(inventory, target)
        if not found:
            missing.append(target.text)
        for cache, item, revs in found:
            for rev in revs:
                chosen.setdefault(rev.path, (cache, item, rev, target))
    if missing:
        raise UsageError(f"not in the caches scanned, so nothing deleted: {', '.join(missing)}")
    delete: list[PlanUnit] = []
    keep: list[PlanUnit] = []
    reclaims: dict[str, Reclaim] = {}
    for path in sorted(chosen):
        cache, item, rev, target = chosen[path]
        whole = all(r.path in chosen for r in item.revisions)
        refs = ", ".join(rev.refs) or None
        named = Decision(Rule.NAMED, Case.WHOLE if whole else Case.TARGET, subject=target.text, scope=refs)
        if not item.deletable:
            everything = (*item.warnings, *(w for r in item.revisions for w in r.warnings))
            blocking = next(w for w in everything if w.blocks_deletion)
            keep.append(
                _unit(cache, item, rev, (named, Decision(Rule.DAMAGED, Case.BLOCKED, keep=True, subject=str(blocking))), 0, False)
            )
            continue
        reclaim = reclaims.setdefault(cache.root, Reclaim(cache)).remove_revision(item, rev)
        delete.append(_unit(cache, item, rev, (named,), reclaim, whole))
    caches = tuple(dict.fromkeys(PlanCache(u.kind, u.root) for u in (*delete, *keep)))
    order = lambda u: (u.root, u.path)  # noqa: E731 - as make_plan orders
    return Plan(
        delete=tuple(sorted(delete, key=order)),
        keep=tuple(sorted(keep, key=order)),
        created_at=now,
        policy=(f"remove: {', '.join(t.text for t in targets)}",),
        caches=caches,
    )


def _unit(cache: CacheInventory, item: Item, rev: Revision, reasons: tuple[Decision, ...], reclaim: int, whole: bool) -> PlanUnit:
    return PlanUnit(
        kind=item.kind,
        root=cache.root,
        id=item.id,
        revision=rev.revision,
        path=rev.path,
        reclaim_bytes=reclaim,
        reasons=reasons,
        type=item.type,
        version=rev.version,
        refs=rev.refs,
        size_bytes=rev.size_bytes,
        last_accessed=rev.last_accessed,
        last_modified=rev.last_modified,
        item_removed=whole,
    )
