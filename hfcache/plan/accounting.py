"""Counting what a set of deletions frees, each byte once, the way huggingface_hub counts it.

:class:`Reclaim` follows one cache while units are taken away one by one and answers,
for each, how many bytes it frees *given what went before*. Summed over a plan, those
answers are exactly what the plan frees, with nothing counted twice: a blob two
revisions share is freed by whichever of them goes last, a shared-store payload by the
last repo blob linking to it.

For the hub this is ``HFCacheInfo.delete_revisions(...).expected_freed_size``: a blob of
a repo is freed when no remaining revision of that repo reaches it; a payload of the
shared store when no remaining repo blob anywhere in the cache links to it; a repo
losing its last revision goes as a whole folder, its orphan blobs' links with it. (That
last payload count is the one place hfcache counts more than huggingface_hub 2.4.0's
estimate, which leaves orphan links out although its own ``execute`` sweeps the payloads
they reach: hfcache counts what leaves the disk; tests/test_plan_properties.py.) Orphan
blobs that are plain files are not counted there (the hub does not count them either),
but they do leave the disk: a run's ``freed_bytes`` then exceeds the plan's estimate.

Other kinds share nothing between items: a revision frees its own size, and an item
losing its last revision also frees what its folder holds beside its revisions.

>>> from hfcache.model import CacheInventory, Item, Revision
>>> a, b = Revision("a", "/c/m/a", size_bytes=10), Revision("b", "/c/m/b", size_bytes=5)
>>> item = Item("torch", "m", "checkpoint", "/c/m", size_bytes=20, revisions=(a, b))
>>> r = Reclaim(CacheInventory("torch", "/c", items=(item,), size_bytes=20))
>>> r.remove_revision(item, a), r.remove_revision(item, b), r.total
(10, 10, 0)
"""

from __future__ import annotations

import os
from collections import Counter

from hfcache.model import CacheInventory, Item, OrphanFile, Revision


class Reclaim:
    """What removing units from one cache frees, one unit at a time (see the module docstring).

    ``total`` starts at the cache's deduplicated total and drops by what each revision
    frees; junk (partial downloads, orphans, unreferenced payloads, leftovers) is not in
    that total, so removing it frees bytes without moving ``total``.
    """

    def __init__(self, cache: CacheInventory) -> None:
        self.cache = cache
        self.total = cache.size_bytes
        self._remaining: dict[str, set[str]] = {}
        self._use: dict[str, Counter[str]] = {}
        self._gone: dict[str, set[str]] = {}
        self._links: Counter[str] | None = None
        self._dropped: dict[tuple[str, str], set[str]] = {}  # (item, revision) -> blob keys its removed files took

    # -- the hub's shared store -------------------------------------------------------------

    def _payload_links(self) -> Counter[str]:
        """How many repo blobs (referenced or orphan, in any repo) link to each payload."""
        if self._links is None:
            ledger = self.cache.ledger
            self._links = Counter(
                store for blobs in (ledger.blobs.values() if ledger else ()) for _, store in blobs.values() if store
            )
        return self._links

    def _unlink_blob(self, item_path: str, key: str) -> int:
        """Bytes freed when the repo blob ``key`` goes (its payload's, if it was the last link)."""
        gone = self._gone.setdefault(item_path, set())
        if key in gone or os.path.isabs(key):
            return 0  # already counted, or a link to a file elsewhere: that file stays
        gone.add(key)
        ledger = self.cache.ledger
        size, store = ledger.blobs.get(item_path, {}).get(key, (0, None)) if ledger else (0, None)
        if store is None:
            return size
        links = self._payload_links()
        links[store] -= 1
        return ledger.payloads.get(store, 0) if links[store] == 0 and ledger else 0

    # -- units ------------------------------------------------------------------------------

    def remaining(self, item: Item) -> set[str]:
        """Names of the item's revisions not removed so far."""
        return self._remaining.setdefault(item.path, {r.revision for r in item.revisions})

    def remove_revision(self, item: Item, rev: Revision) -> int:
        """Remove one revision; returns the bytes that frees now. Removing it twice frees nothing."""
        remaining = self.remaining(item)
        if rev.revision not in remaining:
            return 0
        remaining.discard(rev.revision)
        if self.cache.ledger is None:
            freed = rev.size_bytes
            if not remaining:
                freed += max(0, item.size_bytes - sum(r.size_bytes for r in item.revisions))
        else:
            use = self._use.setdefault(item.path, Counter(k for r in item.revisions for k in r.blobs))
            freed = 0
            for key in rev.blobs - self._dropped.get((item.path, rev.revision), set()):
                use[key] -= 1
                if use[key] == 0:
                    freed += self._unlink_blob(item.path, key)
            if not remaining:
                # The whole repo folder goes: links from its orphan blobs to the shared store too,
                # but orphan plain files stay out of the count, as in huggingface_hub.
                for key, (_, store) in self.cache.ledger.blobs.get(item.path, {}).items():
                    if store is not None and use[key] <= 0:
                        freed += self._unlink_blob(item.path, key)
        self.total -= freed
        return freed

    def remove_file(self, item: Item, rev: Revision, key: str | None, last: bool) -> int:
        """One file of ``rev`` goes, its revision stays; ``last``: no other file of ``rev`` uses the blob ``key``.

        The blob is freed when no remaining revision reaches it any more, as when revisions go.
        """
        if key is None or not last or rev.revision not in self.remaining(item):
            return 0
        dropped = self._dropped.setdefault((item.path, rev.revision), set())
        if key in dropped or key not in rev.blobs:
            return 0
        dropped.add(key)
        if self.cache.ledger is None:
            return 0
        use = self._use.setdefault(item.path, Counter(k for r in item.revisions for k in r.blobs))
        use[key] -= 1
        freed = self._unlink_blob(item.path, key) if use[key] == 0 else 0
        self.total -= freed
        return freed

    def remove_orphan(self, orphan: OrphanFile, item: Item | None) -> int:
        """An orphan blob: its own bytes, or its payload's when it was the payload's last link."""
        if item is None or self.cache.ledger is None:
            return orphan.size_bytes
        key = os.path.relpath(orphan.path, item.path)
        if key in self._gone.get(item.path, set()):
            return 0
        if orphan.shared_payload is None:
            self._gone.setdefault(item.path, set()).add(key)
            return orphan.size_bytes
        return self._unlink_blob(item.path, key)
