"""What one run of ``scan``, ``metrics`` or ``prune`` saw, as an :class:`Observation` to record.

Per cache its size and its file system's size and free bytes; per revision its size and
the access time the scan read; per model its size; and which revisions running processes
use right now. A process is matched to a revision by the identity of a file it holds,
``(st_dev, st_ino)``, never by its path alone: a container reaches a cache through a bind
mount or its own mount namespace, under names that are not this machine's. Its path only
suggests where to look (the same file names under one of our roots); the inode decides.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from hfcache.fs.system import OpenFiles
from hfcache.model import CacheInventory, Disk, Inventory

_TAIL = 8  # how many trailing parts of a held file's name are tried under a root (models--o--n/blobs/<etag> is 3)


class CacheSample(NamedTuple):
    kind: str
    root: str
    size: int
    device: int | None
    fs_total: int | None
    fs_free: int | None


class RevisionSeen(NamedTuple):
    path: str
    kind: str
    root: str
    item: str
    revision: str
    size: int
    atime: float


@dataclass(frozen=True)
class Observation:
    """What one run saw at ``at``; ``held`` maps a revision's path to the programs holding one of its files."""

    at: float
    caches: tuple[CacheSample, ...]
    revisions: tuple[RevisionSeen, ...]
    items: tuple[tuple[str, str, int], ...]  # (root, model id, size)
    held: Mapping[str, tuple[str, ...]]


def observe(
    inventory: Inventory, disks: Mapping[str, Disk], *, at: float, held: Mapping[str, tuple[str, ...]] | None = None
) -> Observation:
    """The :class:`Observation` of ``inventory`` (``disks``: each root's file system, where known). Reads nothing."""
    caches, revisions, items = [], [], []
    for cache in inventory.caches:
        if not cache.exists:
            continue
        disk = disks.get(cache.root)
        caches.append(CacheSample(cache.kind, cache.root, cache.size_bytes, *(disk if disk else (None, None, None))))
        for item in cache.items:
            items.append((cache.root, item.id, item.size_bytes))
            for rev in item.revisions:
                revisions.append(
                    RevisionSeen(rev.path, cache.kind, cache.root, item.id, rev.revision, rev.size_bytes, rev.last_accessed)
                )
    return Observation(at, tuple(caches), tuple(revisions), tuple(items), dict(held or {}))


def _owners(cache: CacheInventory) -> tuple[dict[str, list[tuple[str, str]]], list[tuple[str, str]]]:
    """Where each revision's bytes are: by file name, (revision path, full path) of its blobs; and its unit paths."""
    by_name: dict[str, list[tuple[str, str]]] = {}
    units: list[tuple[str, str]] = []
    for item in cache.items:
        for rev in item.revisions:
            for key in rev.blobs:
                # A hub blob key is relative to its repo folder (blobs/<etag>); Ollama's, a bare name, to the store's blobs/.
                base = item.path if "/" in key else os.path.join(cache.root, "blobs")
                by_name.setdefault(os.path.basename(key), []).append((rev.path, os.path.join(base, key)))
            for unit in rev.unit_paths:
                units.append((rev.path, unit))
                if not rev.blobs:  # a file unit (a torch checkpoint): found by its name too
                    by_name.setdefault(os.path.basename(unit), []).append((rev.path, unit))
    return by_name, units


def _here(name: str, root: str, key: tuple[int, int]) -> str | None:
    """The path under ``root`` of the file a process named ``name`` (in its namespace) and holds as ``key``."""
    parts = [p for p in name.split("/") if p]
    if name.endswith(" (deleted)"):
        return None
    if name.startswith(root + os.sep):
        parts = parts[len([p for p in root.split("/") if p]) :]  # our own namespace: the name itself first
    for n in range(min(len(parts), _TAIL), 0, -1):
        candidate = os.path.join(root, *parts[-n:])
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == key:
            return os.path.normpath(candidate)
    return None


def held_revisions(inventory: Inventory, files: OpenFiles) -> dict[str, tuple[str, ...]]:
    """Revision path -> the programs holding (open or mapped) a file of it now, matched by inode.

    Only files on the devices of the cache roots are looked at. Each name a process gave a
    held file suggests where to look: its trailing parts under each root (a cache mounted
    whole elsewhere), else its file name among the revisions' blobs and files (one repo
    folder mounted alone); a candidate counts only when it is the very inode held. A blob
    several revisions share is a use of each. Not found: a file held through a hard link of
    another name, or a payload of the hub's shared Xet store (its repo blobs are links).
    """
    out: dict[str, set[str]] = {}
    devices: dict[int, list[CacheInventory]] = {}
    for cache in inventory.caches:
        if cache.exists:
            try:
                devices.setdefault(os.stat(cache.root).st_dev, []).append(cache)
            except OSError:
                continue
    owners: dict[str, tuple[dict[str, list[tuple[str, str]]], list[tuple[str, str]]]] = {}
    for key, names in files.paths.items():
        for cache in devices.get(key[0], ()):
            if cache.root not in owners:
                owners[cache.root] = _owners(cache)
            for rev in _revisions_holding(cache, owners[cache.root], key, names):
                out.setdefault(rev, set()).update(files.programs.get(key, ("?",)))
    return {rev: tuple(sorted(programs)) for rev, programs in out.items()}


def _revisions_holding(
    cache: CacheInventory,
    owned: tuple[dict[str, list[tuple[str, str]]], list[tuple[str, str]]],
    key: tuple[int, int],
    names: tuple[str, ...],
) -> set[str]:
    by_name, units = owned
    for name in names:
        found = _here(name, cache.root, key)
        if found is not None:
            revs = {rev for rev, path in by_name.get(os.path.basename(found), ()) if path == found}
            return revs | {rev for rev, unit in units if found == unit or found.startswith(unit + os.sep)}
    revs = set()
    for name in names:  # not under the root by any tail: by its file name among the revisions' own files
        for rev, path in by_name.get(os.path.basename(name), ()):
            if rev not in revs and _is(path, key):
                revs.add(rev)
    return revs


def _is(path: str, key: tuple[int, int]) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == key
