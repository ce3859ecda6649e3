"""What deleting each revision frees, counted the way huggingface_hub counts it: each byte once, shared store included."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import replace

from hfcache.caches.huggingface.store import Blob
from hfcache.caches.huggingface.walk import RepoScan
from hfcache.model import Item, OrphanFile


def settle(scan_: RepoScan, ledger: bool = True) -> RepoScan:
    """Reduce a repo's blobs to what the rest of the scan needs, as soon as the repo is scanned.

    The totals, the orphans (with their times) and, with ``ledger``, the ledger's
    ``(size, payload)`` pairs; the full per-blob records go, so a 100,000-file scan never
    holds them all at once.
    """
    blobs = scan_.blobs
    item = scan_.item
    if ledger:
        scan_.counted = {k: (b.size or 0, b.store) for k, b in blobs.items()}
    scan_.store_links = [(k, b.store) for k, b in blobs.items() if b.store is not None]
    referenced: set[str] = set().union(*(r.blobs for r in item.revisions))
    for key in referenced:  # every referenced key is a counted blob (the snapshot walk sees to it)
        blob = blobs[key]
        if blob.size is None or blob.store is not None:
            continue
        if key.startswith("blobs/") or not os.path.isabs(key):  # the first test settles almost every key
            scan_.own_bytes += blob.size
        else:
            scan_.foreign[key] = blob.size
    for key in blobs.keys() - referenced - scan_.unknown:  # (a name no writer is known to use is no orphan)
        if key.startswith("blobs/"):
            blob = blobs[key]
            path = blob.path or os.path.join(item.path, key)
            scan_.orphans.append(OrphanFile(path, item.id, blob.size or 0, blob.atime, blob.mtime, blob.store))
    scan_.blobs = {}
    return scan_


def add_store_reclaim(scans: list[RepoScan], payloads: dict[str, Blob]) -> list[Item]:
    """Finish each revision's ``reclaimable_bytes`` with the shared-store payloads deleting it alone frees.

    A payload goes when every repo blob in the whole cache that links to it goes too: the
    blobs only this revision uses, or, when the revision is its repo's last one (the hub then
    deletes the whole repo folder), any blob of that repo, orphans included. The plain blobs
    only the revision uses are already counted, per repo, by :func:`hfcache.caches.huggingface.walk._build_repo`.
    """
    # Which repo blobs (referenced or orphan, in any repo) link to each shared payload.
    payload_refs: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for index, scan_ in enumerate(scans):
        for key, store in scan_.store_links:
            payload_refs[store].append((index, key))
    items = []
    for index, scan_ in enumerate(scans):
        if not scan_.store_exclusive:
            items.append(scan_.item)
            continue
        only_revision = len(scan_.item.revisions) == 1
        revisions = list(scan_.item.revisions)
        store_of = dict(scan_.store_links)
        for rev_index, keys in scan_.store_exclusive:
            exclusive = set(keys)
            freed_payloads = {
                store
                for store in (store_of[k] for k in keys)
                if all(i == index and (k in exclusive or only_revision) for i, k in payload_refs[store])
            }
            rev = revisions[rev_index]
            extra = sum(payloads[p].size or 0 for p in freed_payloads)
            revisions[rev_index] = replace(rev, reclaimable_bytes=rev.reclaimable_bytes + extra)
        items.append(replace(scan_.item, revisions=tuple(revisions)))
    return items
