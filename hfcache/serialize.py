"""The inventory as plain data: JSON contract version 1.

Required fields (others may be added, none changes meaning)::

    {"version": 1, "caches": [CACHE, ...]}
    CACHE: {"kind", "root", "size_bytes", "items": [ITEM, ...], "warnings": [str, ...]}
    ITEM:  {"id", "type", "path", "size_bytes", "last_accessed", "last_modified", "revisions": [REV, ...]}
    REV:   {"revision", "refs", "size_bytes", "reclaimable_bytes", "version", "path", "last_accessed",
            "last_modified"}

``kind`` is one of ``huggingface``, ``torch``, ``keras``, ``xet``, ``datasets``, ``kagglehub``,
``transformers-legacy`` or a plug-in's name. ``version`` is a normalised version string or
null. ``paths`` (items and revisions) lists what deleting them removes; ``protected`` (caches)
lists what must never be deleted. Times are ISO 8601 strings in UTC, sizes integers (bytes).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import PlanFileError
from .model import CacheInventory, Inventory, Item, Revision, uses_refs

if TYPE_CHECKING:
    from .plan import Plan, PlanUnit

# The plan functions import .plan (and with it the policy file reader and yaml) when first
# called: `hfcache scan --json` does not need them (issue 7: every import is start-up time).

JSON_VERSION = 1


def iso(timestamp: float) -> str:
    """Epoch seconds as ISO 8601 UTC with a ``Z``.

    >>> iso(0)
    '1970-01-01T00:00:00Z'
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def revision_to_dict(rev: Revision, *, has_refs: bool = True) -> dict[str, Any]:
    """``detached`` is null for kinds without refs (everything but the hub): no ref can point there."""
    return {
        "revision": rev.revision,
        "refs": list(rev.refs),
        "detached": rev.detached if has_refs else None,
        "size_bytes": rev.size_bytes,
        "reclaimable_bytes": rev.reclaimable_bytes,
        "version": rev.version,
        "path": rev.path,
        "paths": list(rev.unit_paths),
        "last_accessed": iso(rev.last_accessed),
        "last_modified": iso(rev.last_modified),
        "nb_files": rev.nb_files,
        "warnings": [str(w) for w in rev.warnings],
    }


def item_to_dict(item: Item) -> dict[str, Any]:
    has_refs = uses_refs(item.kind)
    return {
        "id": item.id,
        "type": item.type,
        "path": item.path,
        "paths": list(item.unit_paths),
        "size_bytes": item.size_bytes,
        "last_accessed": iso(item.last_accessed),
        "last_modified": iso(item.last_modified),
        "nb_blobs": item.nb_blobs,
        "deletable": item.deletable,
        "warnings": [str(w) for w in item.warnings],
        "revisions": [revision_to_dict(r, has_refs=has_refs) for r in item.revisions],
    }


def cache_to_dict(cache: CacheInventory, now: float) -> dict[str, Any]:
    return {
        "kind": cache.kind,
        "title": cache.title,
        "root": cache.root,
        "exists": cache.exists,
        "size_bytes": cache.size_bytes,
        "shared_store": cache.shared_store,
        "protected": list(cache.protected),
        "items": [item_to_dict(i) for i in cache.items],
        "partial_files": [
            {
                "path": p.path,
                "item_id": p.item_id,
                "size_bytes": p.size_bytes,
                "last_modified": iso(p.last_modified),
                "age_seconds": max(0, int(now - p.last_modified)),
                "scheme": p.scheme,
                "lock_path": p.lock_path,
                "lock_held": p.lock_held,
            }
            for p in cache.partial_files
        ],
        "orphan_files": [
            {
                "path": o.path,
                "item_id": o.item_id,
                "size_bytes": o.size_bytes,
                "last_accessed": iso(o.last_accessed),
                "last_modified": iso(o.last_modified),
                "shared_payload": o.shared_payload,
            }
            for o in cache.orphan_files
        ],
        "unreferenced_payloads": [
            {
                "path": s.path,
                "size_bytes": s.size_bytes,
                "last_accessed": iso(s.last_accessed),
                "last_modified": iso(s.last_modified),
                "has_manifest": s.has_manifest,
            }
            for s in cache.unreferenced_payloads
        ],
        "leftovers": [
            {
                "path": lo.path,
                "item_id": lo.item_id,
                "commit": lo.commit,
                "size_bytes": lo.size_bytes,
                "last_modified": iso(lo.last_modified),
            }
            for lo in cache.leftovers
        ],
        "warnings": [str(w) for w in cache.all_warnings],
    }


def inventory_to_dict(inventory: Inventory) -> dict[str, Any]:
    """The whole inventory in the version-1 JSON contract."""
    return {
        "version": JSON_VERSION,
        "scanned_at": iso(inventory.scanned_at),
        "caches": [cache_to_dict(c, inventory.scanned_at) for c in inventory.caches],
    }


# ---------------------------------------------------------------------------------------------
# Plans: JSON contract version 1
#
#   {"version": 1, "dry_run": bool, "reclaim_bytes": int, "delete": [UNIT, ...], "keep": [UNIT, ...]}
#   UNIT: {"kind", "id", "revision", "path", "reclaim_bytes", "reasons": [str, ...]}
#   after a real run, each delete UNIT also has "status" (deleted | skipped | failed) and
#   "freed_bytes", and the plan has "freed_bytes".
# Also written (and read back by ``hfcache apply``): "root", "what", "type", "version", "refs",
# "size_bytes", "item_removed", and the times both as ISO strings and as epoch seconds.


def unit_to_dict(unit: PlanUnit) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": unit.kind,
        "id": unit.id,
        "revision": unit.revision,
        "path": unit.path,
        "reclaim_bytes": unit.reclaim_bytes,
        "reasons": list(unit.reasons),
        "root": unit.root,
        "what": unit.what,
        "type": unit.type,
        "version": unit.version,
        "refs": list(unit.refs),
        "size_bytes": unit.size_bytes,
        "item_removed": unit.item_removed,
        "last_accessed": iso(unit.last_accessed),
        "last_modified": iso(unit.last_modified),
        "last_accessed_epoch": unit.last_accessed,
        "last_modified_epoch": unit.last_modified,
    }
    if unit.status is not None:
        out.update(status=unit.status, freed_bytes=unit.freed_bytes, error=unit.error)
    return out


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """A plan (or a run's result) in the version-1 plan contract."""
    from .plan import PLAN_VERSION

    out: dict[str, Any] = {
        "version": PLAN_VERSION,
        "dry_run": plan.dry_run,
        "reclaim_bytes": plan.reclaim_bytes,
        "created_at": iso(plan.created_at),
        "created_at_epoch": plan.created_at,
        "policy": list(plan.policy),
        "caches": [{"kind": c.kind, "root": c.root, "junk_grace": c.junk_grace} for c in plan.caches],
        "warnings": list(plan.warnings),
        "delete": [unit_to_dict(u) for u in plan.delete],
        "keep": [unit_to_dict(u) for u in plan.keep],
    }
    if not plan.dry_run:
        out["freed_bytes"] = plan.freed_bytes
        out["failed"] = len(plan.failed)
    return out


def _unit_from_dict(data: Any, where: str) -> PlanUnit:
    from .plan import WHATS, PlanUnit

    if not isinstance(data, dict):
        raise PlanFileError(f"{where}: expected an object")
    try:
        unit = PlanUnit(
            kind=str(data["kind"]),
            root=str(data["root"]),
            id=None if data["id"] is None else str(data["id"]),
            revision=None if data["revision"] is None else str(data["revision"]),
            path=str(data["path"]),
            reclaim_bytes=int(data["reclaim_bytes"]),
            reasons=tuple(str(r) for r in data["reasons"]),
            what=str(data.get("what", "revision")),
            type=data.get("type"),
            version=data.get("version"),
            refs=tuple(str(r) for r in data.get("refs", ())),
            size_bytes=int(data.get("size_bytes", 0)),
            last_accessed=float(data["last_accessed_epoch"]),
            last_modified=float(data["last_modified_epoch"]),
            item_removed=bool(data.get("item_removed", False)),
        )
    except KeyError as e:
        raise PlanFileError(f"{where}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise PlanFileError(f"{where}: {e}") from None
    if unit.what not in WHATS:
        raise PlanFileError(f"{where}: unknown unit kind {unit.what!r}")
    return unit


def plan_from_dict(data: Any, *, source: str = "plan") -> Plan:
    """Read back a plan written by :func:`plan_to_dict` (``hfcache prune --plan-out``)."""
    from .config import DEFAULT_JUNK_GRACE
    from .plan import PLAN_VERSION, Plan, PlanCache

    if not isinstance(data, dict) or data.get("version") != PLAN_VERSION or "delete" not in data:
        raise PlanFileError(f"{source}: not an hfcache plan (version {PLAN_VERSION})")
    if not data.get("dry_run", True):
        raise PlanFileError(f"{source}: this is the record of a run, not a plan to apply")
    try:
        caches = tuple(
            PlanCache(str(c["kind"]), str(c["root"]), float(c.get("junk_grace", DEFAULT_JUNK_GRACE)))
            for c in data.get("caches", ())
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PlanFileError(f"{source}: bad caches list ({e})") from None
    return Plan(
        delete=tuple(_unit_from_dict(u, f"{source}: delete[{i}]") for i, u in enumerate(data["delete"])),
        keep=tuple(_unit_from_dict(u, f"{source}: keep[{i}]") for i, u in enumerate(data.get("keep", ()))),
        created_at=float(data.get("created_at_epoch", 0.0)),
        policy=tuple(str(p) for p in data.get("policy", ())),
        caches=caches,
        warnings=tuple(str(w) for w in data.get("warnings", ())),
    )
