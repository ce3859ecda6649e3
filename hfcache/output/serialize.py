"""The inventory as plain data: JSON contract version 1.

Required fields (others may be added, none changes meaning)::

    {"version": 1, "caches": [CACHE, ...]}
    CACHE: {"kind", "root", "size_bytes", "items": [ITEM, ...], "warnings": [str, ...]}
    ITEM:  {"id", "type", "path", "size_bytes", "last_accessed", "last_modified", "revisions": [REV, ...]}
    REV:   {"revision", "refs", "size_bytes", "reclaimable_bytes", "version", "path", "last_accessed",
            "last_modified"}

``kind`` is one of ``huggingface``, ``torch``, ``modelscope``, ``tfhub``, ``vllm``, ``keras``,
``xet``, ``datasets``, ``kagglehub``, ``ollama``, ``transformers-legacy``, ``llama-cpp-flat``
or a plug-in's name. ``version`` is a normalised version string or null. ``paths`` (items
and revisions) lists what deleting them removes; ``protected`` (caches) lists what must
never be deleted. Times are ISO 8601 strings in UTC, sizes integers (bytes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from hfcache.model import CacheInventory, Inventory, Item, Revision
from hfcache.units import iso

if TYPE_CHECKING:
    from hfcache.caches.accounts import Account, Shared
    from hfcache.history.report import HistoryReport
    from hfcache.verify.run import VerifyReport

# The plan's JSON (contract version 1 too) is hfcache.plan.planfile's.

JSON_VERSION = 1


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


def item_to_dict(item: Item, *, has_refs: bool = True) -> dict[str, Any]:
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
        "items": [item_to_dict(i, has_refs=cache.has_refs) for i in cache.items],
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


def verify_to_dict(report: VerifyReport) -> dict[str, Any]:
    """A verify as JSON (contract version 1): every file checked, per cache, with its verdict."""
    from hfcache.verify.run import Verdict

    return {
        "version": 1,
        "started_at": iso(report.started_at),
        "finished_at": iso(report.finished_at),
        "bytes_hashed": report.bytes_hashed,
        "files_hashed": report.files_hashed,
        "problems": report.problems,
        "warnings": list(report.warnings),
        "caches": [
            {
                "kind": c.kind,
                "root": c.root,
                "counts": {str(v): c.count(v) for v in Verdict},
                # files counted from memos of unchanged repos (hfcache.verify.memo), in counts but not listed below
                # (the CLI's --json uses no memos: 0)
                "counted_from_memos": c.total - len(c.files),
                "files": [
                    {
                        "id": f.id,
                        "type": f.type,
                        "revision": f.revision,
                        "name": f.name,
                        "path": f.path,
                        "data": f.data,
                        "status": str(f.status),
                        "algorithm": f.algorithm,
                        "expected": f.expected,
                        "actual": f.actual,
                        "size_bytes": f.size_bytes,
                        "why": f.why,
                        "hashed": f.hashed,
                        "hashed_at": iso(f.hashed_at) if f.hashed_at else None,
                    }
                    for f in c.files
                ],
            }
            for c in report.caches
        ],
    }


def _series(points: Iterable[tuple[float, float]]) -> list[list[Any]]:
    return [[iso(t), int(v)] for t, v in points]


def _when(t: float | None) -> str | None:
    return iso(t) if t is not None else None


def history_to_dict(report: HistoryReport) -> dict[str, Any]:
    """``hfcache history --json``: file systems (free space over the window, its rate, when it fills), caches, growers, uses.

    Rates are bytes per day; ``forecast`` is null with too little history since the last
    cleanup, its ``full_at`` null when the file system is not filling; ``earliest``/``latest``
    bound a 90% interval (``latest`` null: not bounded at the slow end).
    """
    return {
        "version": JSON_VERSION,
        "now": iso(report.now),
        "window_seconds": report.window,
        "first_sample": _when(report.first),
        "filesystems": [
            {
                "device": fs.device,
                "roots": list(fs.roots),
                "size_bytes": fs.total,
                "free_bytes": fs.free,
                "at": iso(fs.at),
                "free_bytes_per_day": fs.rate,
                "forecast": None
                if fs.forecast is None
                else {
                    "full_at": _when(fs.forecast.at),
                    "earliest": _when(fs.forecast.earliest),
                    "latest": _when(fs.forecast.latest),
                    "free_bytes_per_day": fs.forecast.trend.per_day(),
                    "points": fs.forecast.trend.points,
                },
                "free": _series(fs.free_series),
            }
            for fs in report.filesystems
        ],
        "caches": [
            {
                "kind": c.kind,
                "root": c.root,
                "size_bytes": c.size,
                "change_bytes": c.change,
                "bytes_per_day": c.rate,
                "sizes": _series(c.series),
            }
            for c in report.caches
        ],
        "growers": [
            {"id": g.item, "root": g.root, "size_bytes": g.size, "grew_bytes": g.change, "new": g.new} for g in report.growers
        ],
        "models": [
            {
                "id": m.item,
                "root": m.root,
                "days_used": len(m.days),
                "use_days": [iso(d * 86400.0)[:10] for d in m.days],
                "last_used": _when(m.last or None),
                "last_seen_as": m.source,
                "last_used_by": m.program,
            }
            for m in report.models
        ],
    }


def accounts_to_dict(scanned: list[tuple[Account, Inventory]], twice: list[Shared]) -> dict[str, Any]:
    """``scan --all-users --json``: per account its caches (as ``scan --json``) and totals; the models cached twice."""
    return {
        "version": JSON_VERSION,
        "accounts": [
            {
                "user": account.name,
                "uid": account.uid,
                "home": account.home,
                "size_bytes": sum(c.size_bytes for c in inventory.caches),
                "unreadable": account.unreadable,
                "caches": inventory_to_dict(inventory)["caches"],
            }
            for account, inventory in scanned
        ],
        "shared": [
            {
                "kind": s.kind,
                "type": s.type,
                "id": s.id,
                "revision": s.revision,
                "accounts": [{"user": user, "size_bytes": size} for user, size in s.sizes],
                "total_bytes": s.total,
                "one_cache_saves_bytes": s.saved,
            }
            for s in twice
        ],
    }
