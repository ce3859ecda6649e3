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

from typing import TYPE_CHECKING, Any

from hfcache.model import CacheInventory, Inventory, Item, Revision
from hfcache.units import iso

if TYPE_CHECKING:
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
