"""Selecting and ordering what a scan found: pure functions, the clock passed in.

What ``scan`` shows is a :class:`Selection`; what a ``prune`` may touch is a :class:`Scope`,
the part of a selection that says which items (``--type``, ``--name``): both match the same way.

>>> sel = Selection(types=frozenset({"model"}), names=("meta-llama/*",), larger_than=10**9)
>>> key, reverse = parse_sort("size")
>>> reverse
True
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from hfcache.errors import UsageError
from hfcache.model import CacheInventory, Inventory, Item, Revision

SORT_KEYS = ("name", "size", "accessed", "modified")


def matching_glob(ident: str, globs: Iterable[str]) -> str | None:
    """The first of ``globs`` matching the id ``ident``, case-insensitively (``meta-llama/*``), or None.

    >>> matching_glob("Meta-Llama/L3", ["org/*", "meta-llama/*"])
    'meta-llama/*'
    """
    ident = ident.lower()
    return next((g for g in globs if fnmatch.fnmatchcase(ident, g.lower())), None)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class Scope:
    """Which items a prune may touch: those of one of ``types`` whose id matches one of ``names``.

    An empty criterion does not narrow: ``Scope()`` is everything. Ids match as ``scan
    --name`` matches them (:func:`matching_glob`: case-insensitively, a shell glob whose
    ``*`` also crosses ``/``); a :class:`Selection`'s type and name criteria are a scope.

    >>> s = Scope(types=frozenset({"model"}), names=("org/*",))
    >>> s.holds(Item("huggingface", "ORG/a", "model", "/c/a")), s.holds(Item("huggingface", "org/a", "dataset", "/c/b"))
    (True, False)
    >>> s.describe()
    "only items of type model whose id matches 'org/*'"
    """

    types: frozenset[str] = frozenset()
    names: tuple[str, ...] = ()

    @property
    def is_everything(self) -> bool:
        return not self.types and not self.names

    def holds(self, item: Item) -> bool:
        return self.holds_id(item.id, item.type)

    def holds_id(self, item_id: str, item_type: str | None) -> bool:
        """Whether an item of this id and type is in the scope (an archived one: no Item to hand)."""
        if self.types and item_type not in self.types:
            return False
        return not self.names or matching_glob(item_id, self.names) is not None

    def junk_filter(self, cache: CacheInventory) -> Callable[[str | None, str], bool]:
        """Whether a piece of ``cache``'s junk, given its item id and path, is in the scope.

        A piece belongs to the item of its id whose folder holds it (a model and a dataset may
        share an id), else to every item of that id, and is in the scope when they all are.
        A piece of an id no item has (a first download that never finished) is in by its id
        alone, never under a type (which cannot be known). Junk of no item (shared-store
        payloads no repo links to, stray temporary files) is in only when the scope is everything.
        """
        if self.is_everything:
            return lambda item_id, path: True
        by_id: dict[str, list[Item]] = {}
        for item in cache.items:
            by_id.setdefault(item.id, []).append(item)

        def holds(item_id: str | None, path: str) -> bool:
            if item_id is None:
                return False
            same = by_id.get(item_id, [])
            owners = [i for i in same if _inside(path, i.path)] or same
            if not owners:
                return not self.types and matching_glob(item_id, self.names) is not None
            return all(self.holds(i) for i in owners)

        return holds

    def _reaches(self, cache: CacheInventory) -> bool:
        if any(self.holds(i) for i in cache.items):
            return True
        junk = self.junk_filter(cache)
        pieces = [(p.item_id, p.path) for p in cache.partial_files]
        pieces += [(o.item_id, o.path) for o in cache.orphan_files]
        pieces += [(lo.item_id, lo.path) for lo in cache.leftovers]
        return any(junk(item_id, path) for item_id, path in pieces)

    def unmatched(self, inventory: Inventory) -> list[str]:
        """A warning for each glob (or, without globs, the types) that nothing in ``inventory`` matches.

        >>> Scope(names=("org/*",)).unmatched(Inventory())
        ["scope: no item in the caches scanned matches 'org/*': nothing of it to prune"]
        """
        if self.is_everything:
            return []
        of_type = f" of type {' or '.join(sorted(self.types))}" if self.types else ""
        out = []
        for glob in dict.fromkeys(self.names) or [None]:
            part = replace(self, names=(glob,)) if glob is not None else self
            if any(part._reaches(c) for c in inventory.caches):
                continue
            if glob is None:
                out.append(f"scope: no item{of_type} in the caches scanned: nothing to prune")
            else:
                out.append(f"scope: no item{of_type} in the caches scanned matches {glob!r}: nothing of it to prune")
        return out

    def describe(self) -> str:
        """The scope in words, for a plan's header (``scope: ...``)."""
        words = "only items"
        if self.types:
            words += " of type " + " or ".join(sorted(self.types))
        if self.names:
            words += " whose id matches " + " or ".join(repr(g) for g in self.names)
        return words


# Newest and biggest first, names alphabetically: what `hf cache ls --sort` does.
_DEFAULT_ORDER = {"name": "asc", "size": "desc", "accessed": "desc", "modified": "desc"}
_SORT_RE = re.compile(r"(?P<key>[a-z]+)(?::(?P<order>asc|desc))?")


@dataclass(frozen=True)
class Selection:
    """Which items (or, with ``revisions``, which revisions) to show.

    Every criterion given must hold. Sizes are bytes; ages are seconds before ``now``,
    measured on last access (``age_by="atime"``) or last modification (``"mtime"``).
    Name globs match the repo id case-insensitively (``meta-llama/*``, ``*bert*``).
    """

    types: frozenset[str] = frozenset()
    names: tuple[str, ...] = ()
    larger_than: int | None = None
    smaller_than: int | None = None
    older_than: float | None = None
    newer_than: float | None = None
    age_by: str = "atime"
    revisions: bool = False

    @property
    def scope(self) -> Scope:
        """The type and name criteria: which items (what ``prune --type --name`` takes)."""
        return Scope(self.types, self.names)

    def matches_identity(self, item: Item) -> bool:
        return self.scope.holds(item)

    def matches_measures(self, size: int, atime: float, mtime: float, now: float) -> bool:
        if self.larger_than is not None and size <= self.larger_than:
            return False
        if self.smaller_than is not None and size >= self.smaller_than:
            return False
        age = now - (atime if self.age_by == "atime" else mtime)
        if self.older_than is not None and age <= self.older_than:
            return False
        return self.newer_than is None or age < self.newer_than

    @property
    def is_empty(self) -> bool:
        return self == Selection(revisions=self.revisions, age_by=self.age_by)


def parse_sort(text: str) -> tuple[str, bool]:
    """``"size"``, ``"name:desc"`` -> (key, reverse). Raises :class:`UsageError` for anything else."""
    match = _SORT_RE.fullmatch(text.strip().lower())
    if not match or match.group("key") not in SORT_KEYS:
        raise UsageError(f"invalid sort {text!r}: use one of {', '.join(SORT_KEYS)}, optionally with :asc or :desc")
    key = match.group("key")
    return key, (match.group("order") or _DEFAULT_ORDER[key]) == "desc"


def _sort_value(key: str) -> Callable[[Item | Revision], float | str | tuple[str, str]]:
    if key == "size":
        return lambda x: x.size_bytes
    if key == "accessed":
        return lambda x: x.last_accessed
    if key == "modified":
        return lambda x: x.last_modified
    return lambda x: (x.id.lower(), x.type) if isinstance(x, Item) else x.revision


def _revision_order(key: str) -> Callable[[tuple[Item, Revision]], Any]:
    """The order of revision rows across items: by the key's value, or by name, then newest first."""
    if key == "name":
        return lambda pair: (pair[0].id.lower(), pair[0].type, -pair[1].last_modified)
    value = _sort_value(key)
    return lambda pair: value(pair[1])


def names_revision(wanted: str, revision: str, refs: Iterable[str]) -> bool:
    """Whether ``wanted`` names this revision: the commit, one of its ``refs``, or the start of the commit (7+ characters).

    >>> names_revision("main", "3f2a9c1d" * 5, ("main",)), names_revision("3f2a9c1", "3f2a9c1d" * 5, ())
    (True, True)
    """
    return wanted == revision or wanted in refs or (len(wanted) >= 7 and revision.startswith(wanted))


def revision_rows(cache: CacheInventory, sort: str = "name") -> list[tuple[Item, Revision]]:
    """Every revision of ``cache`` with its item, ordered by ``sort`` across the whole cache.

    What ``hf cache ls --revisions --sort size`` does: the biggest revision first, whichever
    model it belongs to, not models first and revisions inside each.

    >>> a, b = Revision("a", "/c/m/a", size_bytes=1), Revision("b", "/c/n/b", size_bytes=9)
    >>> m, n = Item("k", "m", "model", "/c/m", revisions=(a,)), Item("k", "n", "model", "/c/n", revisions=(b,))
    >>> [r.revision for _, r in revision_rows(CacheInventory("k", "/c", items=(m, n)), "size")]
    ['b', 'a']
    """
    key, reverse = parse_sort(sort)
    return sorted(((i, r) for i in cache.items for r in i.revisions), key=_revision_order(key), reverse=reverse)


def _select_cache(cache: CacheInventory, sel: Selection, now: float, key: str, reverse: bool) -> CacheInventory:
    value = _sort_value(key)
    items: list[Item] = []
    for item in cache.items:
        if not sel.matches_identity(item):
            continue
        if sel.revisions:
            revs = [r for r in item.revisions if sel.matches_measures(r.size_bytes, r.last_accessed, r.last_modified, now)]
            if not revs:
                continue
            # Within an item revisions are ordered by the same key; by name means newest first.
            if key == "name":
                revs.sort(key=lambda r: r.last_modified, reverse=True)
            else:
                revs.sort(key=value, reverse=reverse)
            items.append(replace(item, revisions=tuple(revs)))
        elif sel.matches_measures(item.size_bytes, item.last_accessed, item.last_modified, now):
            items.append(item)
    items.sort(key=value, reverse=reverse)

    junk = sel.scope.junk_filter(cache)  # by type and name only, as prune --type --name takes junk
    return replace(
        cache,
        items=tuple(items),
        partial_files=tuple(p for p in cache.partial_files if junk(p.item_id, p.path)),
        orphan_files=tuple(o for o in cache.orphan_files if junk(o.item_id, o.path)),
    )


def _first(cache: CacheInventory, n: int, *, revisions: bool, sort: str) -> CacheInventory:
    """The first ``n`` rows of a selected cache: items, or with ``revisions`` revisions in their global order."""
    if not revisions:
        return replace(cache, items=cache.items[:n])
    kept = {id(r) for _, r in revision_rows(cache, sort)[:n]}
    items = tuple(replace(i, revisions=tuple(r for r in i.revisions if id(r) in kept)) for i in cache.items)
    return replace(cache, items=tuple(i for i in items if i.revisions))


def select(inventory: Inventory, sel: Selection, *, now: float, sort: str = "name", limit: int | None = None) -> Inventory:
    """The inventory restricted to ``sel`` and ordered by ``sort`` (see :func:`parse_sort`).

    Cache totals stay those of the whole cache; partial downloads and orphan blobs follow the
    type and name criteria (not size or age, which describe models). ``limit`` keeps the
    first rows (items, or revisions with ``sel.revisions``) in that order, cache after cache,
    up to that many in all.
    """
    key, reverse = parse_sort(sort)
    caches = [_select_cache(c, sel, now, key, reverse) for c in inventory.caches]
    if limit is not None:
        left = limit
        for index, cache in enumerate(caches):
            caches[index] = _first(cache, left, revisions=sel.revisions, sort=sort)
            left -= sum(len(i.revisions) for i in caches[index].items) if sel.revisions else len(caches[index].items)
    return replace(inventory, caches=tuple(caches))


def shown_bytes(cache: CacheInventory, *, revisions: bool) -> int:
    """What the rows shown of ``cache`` hold, each byte once: the figure a table's footer gives.

    Items: their sizes (items share nothing but the hub's shared store, counted in each as the
    hub counts it). Revisions: the blobs they reach, each once, and each shared-store payload
    once (from the scan's :class:`~hfcache.model.BlobLedger`); without a ledger (kinds whose
    revisions share nothing) the sum of their sizes.
    """
    if not revisions:
        return sum(i.size_bytes for i in cache.items)
    ledger = cache.ledger
    if ledger is None:
        return sum(r.size_bytes for i in cache.items for r in i.revisions)
    total = 0
    payloads: set[str] = set()
    elsewhere: dict[str, int] = {}  # files outside the repo (absolute keys), each once
    for item in cache.items:
        blobs = ledger.blobs.get(item.path, {})
        for key in set().union(*(r.blobs for r in item.revisions)):
            size, store = blobs.get(key, (0, None))
            if store is not None:
                payloads.add(store)
            elif os.path.isabs(key):
                elsewhere[key] = size
            else:
                total += size
    return total + sum(ledger.payloads.get(p, 0) for p in payloads) + sum(elsewhere.values())
