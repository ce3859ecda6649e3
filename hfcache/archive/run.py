"""Archiving the units of a plan before they leave the cache (``prune --archive-to DEST``).

Called once the plan is confirmed and before anything is deleted (the ``prepare`` step of
``prune``'s run): each revision unit is copied into the archive (:mod:`hfcache.archive.store`:
objects first, each read back and hashed, the manifest last), and only a unit whose manifest
is written stays in the plan's ``delete``. A unit that cannot be archived whole moves to
``keep`` with the reason, and stays in the cache. Junk (partial downloads, orphans) is not
archived: it goes as the plan says.

Killed at any moment, the rule holds: a unit leaves the cache only after its manifest is in
the archive, and a manifest is written only after every object it names was verified; so
either the unit is whole in the cache, or a complete, verified copy is in the archive (or
both, when the kill came between the two: the next prune removes it, its objects already
there). Objects are stored once by content: a blob shared by revisions, repos or machines
is uploaded once, and a second run skips what the first one finished.
"""

from __future__ import annotations

import errno
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from functools import partial
from typing import Any, NamedTuple

from hfcache import progress
from hfcache.archive.store import Archive, ArchiveError
from hfcache.caches.protocol import CacheKind, Layout, Stored
from hfcache.model import CacheInventory, Inventory, Item, Revision
from hfcache.plan.decisions import Plan, PlanUnit, What
from hfcache.plan.policies import Case, Decision, Rule
from hfcache.units import describe_size

UPLOADS = 8  # files of a unit uploaded at once to an object store (each waits on the network)
LOCAL_COPIES = min(4, os.cpu_count() or 1)  # ... copied at once to a folder: one hashes while another writes
FULL = (errno.ENOSPC, errno.EDQUOT)  # a destination out of room (or over its quota)
AHEAD = 4  # units whose copies are under way while the oldest one's are awaited (archive_plan)


def _note(text: str) -> Decision:
    return Decision(Rule.RECORDED, Case.TEXT, subject=text)


def manifest_of(
    cache: CacheInventory, item: Item, rev: Revision, layout: Layout, files: list[dict[str, Any]], now: float
) -> dict[str, Any]:
    return {
        "kind": cache.kind,
        "root": cache.root,
        "id": item.id,
        "type": item.type,
        "revision": rev.revision,
        "refs": list(rev.refs),
        "version": rev.version,
        "default": rev.default,
        "size_bytes": rev.size_bytes,
        "last_accessed": rev.last_accessed,
        "last_modified": rev.last_modified,
        "archived_at": now,
        "files": files,
        "links": [{"place": p, "target": t} for p, t in layout.links],
        "texts": [{"place": p, "text": t} for p, t in layout.texts],
        "dirs": list(layout.dirs),
        "merge": layout.merge,
    }


def _put(archive: Archive, stored: Stored) -> tuple[Stored, str, int, int]:
    try:
        return (stored, *archive.put_file(stored.source, check=stored.check))
    except ArchiveError:
        raise
    except OSError as e:
        error = ArchiveError(f"{e.filename or stored.source}: {e.strerror or e}")
        error.errno = e.errno  # (a full destination is tried again: archive_plan)
        raise error from None


class _Started(NamedTuple):
    """A unit whose files are being copied (futures of a pool shared by several units)."""

    cache: CacheInventory
    item: Item
    rev: Revision
    layout: Layout
    copies: list[Future[tuple[Stored, str, int, int]]]


def _start(archive: Archive, kind: CacheKind, cache: CacheInventory, item: Item, rev: Revision, pool: Executor) -> _Started:
    """Lay the unit out and hand each of its files to ``pool``; raises :class:`ArchiveError` for a unit that cannot be."""
    layout = kind.layout(cache, item, rev)
    if layout.problem:
        raise ArchiveError(layout.problem)
    # What the kind names each file by (a torch checkpoint's sha256 prefix), where its layout did not say.
    named = {e.data: (e.algorithm, e.digest) for e in kind.expected(cache, item, rev) if e.data and e.algorithm and e.digest}
    layout = layout._replace(files=tuple(f if f.check else f._replace(check=named.get(f.source)) for f in layout.files))
    return _Started(cache, item, rev, layout, [pool.submit(_put, archive, stored) for stored in layout.files])


def _finish(archive: Archive, started: _Started, *, now: float, done: Callable[[int], None]) -> tuple[str, int]:
    """Wait for the unit's copies, then write its manifest: (where it is, bytes uploaded). Raises :class:`ArchiveError`
    (its copies not begun are called off) when any file could not be archived."""
    files = []
    uploaded = 0
    try:
        for copy in started.copies:
            stored, sha, size, sent = copy.result()
            uploaded += sent
            done(size)
            files.append({"place": stored.place, "name": stored.name, "sha256": sha, "size": size})
    except BaseException:
        for copy in started.copies:
            copy.cancel()
        raise
    manifest = manifest_of(started.cache, started.item, started.rev, started.layout, files, now)
    return archive.put_manifest(manifest), uploaded


def _pool(archive: Archive) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=LOCAL_COPIES if archive.local else UPLOADS)


def archive_unit(
    archive: Archive,
    kind: CacheKind,
    cache: CacheInventory,
    item: Item,
    rev: Revision,
    *,
    now: float,
    done: Callable[[int], None] = lambda n: None,
) -> tuple[str, int]:
    """Copy one revision into ``archive``: (where its manifest is, bytes uploaded). Raises :class:`ArchiveError`.

    Its files go up in parallel: :data:`UPLOADS` at once to an object store (each upload waits
    on the network), :data:`LOCAL_COPIES` to a folder (one hashes while another writes).
    ``done`` is told the bytes of each file finished. :func:`archive_plan` runs several units'
    copies in one pool instead.
    """
    with _pool(archive) as pool:
        return _finish(archive, _start(archive, kind, cache, item, rev, pool), now=now, done=done)


class _Units:
    """The archiving of a plan's units: a few units' copies under way in one pool, each finished in plan order."""

    def __init__(self, archive: Archive, total: int, clock: Callable[[], float]) -> None:
        self.archive = archive
        self.total = total
        self.clock = clock
        self.copied = self.uploaded = self.archived = 0
        self.outcome: dict[int, PlanUnit] = {}  # plan order -> the unit as it goes, or as it is kept
        self.going: set[int] = set()
        self.pending: deque[tuple[int, PlanUnit, _Started, Callable[[], _Started]]] = deque()
        # Units whose copy found the destination full while others' copies ran: tried again alone at the end
        # (on a destination with room for one unit but not for several at once, they would all fail together).
        self.again: list[tuple[int, PlanUnit, _Started, Callable[[], _Started]]] = []

    def done(self, n: int) -> None:
        self.copied += n
        progress.report("archiving", min(self.copied, self.total), self.total)

    def goes(self, i: int, unit: PlanUnit) -> None:
        self.outcome[i] = unit
        self.going.add(i)

    def kept(self, i: int, unit: PlanUnit, e: Exception) -> None:
        why = str(e) if isinstance(e, ArchiveError) else f"{getattr(e, 'strerror', None) or e}"
        self.outcome[i] = replace(unit, reclaim_bytes=0, reasons=(*unit.reasons, _note(f"archive: {why}; kept in the cache")))

    def finish_oldest(self, *, alone: bool = False) -> None:
        """Wait for the oldest unit's copies and write its manifest (``alone``: no other unit's copies ran with it)."""
        i, unit, started, restart = self.pending.popleft()
        try:
            _, sent = _finish(self.archive, started, now=self.clock(), done=self.done)
        except Exception as e:  # noqa: BLE001 - ArchiveError, or the destination failing (full, unreachable, a back-end's own error)
            if not alone and getattr(e, "errno", None) in FULL:
                self.again.append((i, unit, started, restart))
            else:
                self.kept(i, unit, e)
            return
        self.uploaded += sent
        self.archived += 1
        self.goes(i, replace(unit, reasons=(*unit.reasons, _note(f"archive: copied to {self.archive.url} and verified"))))

    def in_order(self, going: bool) -> list[PlanUnit]:
        return [self.outcome[i] for i in sorted(self.outcome) if (i in self.going) == going]


def archive_plan(
    plan: Plan,
    inventory: Inventory,
    archive: Archive,
    kinds: Mapping[str, CacheKind],
    *,
    clock: Callable[[], float] = time.time,
) -> tuple[Plan, list[str]]:
    """``plan`` with each revision unit archived (and marked so), or moved to ``keep`` with why; and notes to say.

    The files of a few units (:data:`AHEAD`) are copied at once from one pool: a unit's small
    files and short shards leave no copier idle while its largest shard is still going.
    """
    archive.ensure()
    where: dict[str, tuple[CacheInventory, Item, Revision]] = {}
    for cache in inventory.caches:
        for item in cache.items:
            for rev in item.revisions:
                where[rev.path] = (cache, item, rev)
    run = _Units(archive, sum(u.size_bytes for u in plan.delete if u.what == What.REVISION), clock)
    pool = _pool(archive)  # (not ``with``: its exit would wait for the copies under way, a signal too)
    try:
        for i, unit in enumerate(plan.delete):
            if unit.what != What.REVISION:
                run.goes(i, unit)
                continue
            found, kind = where.get(unit.path), kinds.get(unit.kind)
            try:
                if found is None:
                    raise ArchiveError("not in the caches any more")
                if kind is None:
                    raise ArchiveError(f"kind {unit.kind} is not installed")
                restart: Callable[[], _Started] = partial(_start, archive, kind, *found, pool)
                run.pending.append((i, unit, restart(), restart))
            except Exception as e:  # noqa: BLE001 - as in _Units.finish_oldest
                run.kept(i, unit, e)
            while len(run.pending) > AHEAD:
                run.finish_oldest()
        while run.pending:
            run.finish_oldest()
        # The destination was full: each unit tried again on its own, once every failed copy gave back what it took.
        wait([copy for _, _, failed, _ in run.again for copy in failed.copies])
        for i, unit, _, again in run.again:
            try:
                run.pending.append((i, unit, again(), again))
            except Exception as e:  # noqa: BLE001 - as in _Units.finish_oldest
                run.kept(i, unit, e)
                continue
            run.finish_oldest(alone=True)
    except BaseException:
        # A signal, a bug: nothing is deleted. The copies not begun are called off and those under way not awaited
        # (a shard's upload can take minutes; the command exits at once, as after a kill: the next run resumes or redoes them).
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()  # (the copies of a unit kept for a failed file may still be going)
    kept = run.in_order(False)
    notes = [f"archived {run.archived} unit(s) to {archive.url} ({describe_size(run.uploaded)} uploaded, the rest already there)"]
    if kept:
        notes.append(f"{len(kept)} unit(s) could not be archived and stay in the cache (see their reasons)")
    return replace(plan, delete=tuple(run.in_order(True)), keep=(*plan.keep, *kept)), notes
