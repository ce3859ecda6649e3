"""The plan as a value: decisions about units, and apart from them what executing them did.

A :class:`Plan` is made once (:func:`hfcache.plan.build.make_plan`, or read back from a plan
file) and never changes: each :class:`PlanUnit` is a decision, with its reasons. Execution
(:func:`hfcache.execute.run.execute_plan`) returns an :class:`Execution` beside it: one
:class:`UnitResult` per unit to delete, and why it stopped early, if it did.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from hfcache.model import CacheInventory, Item, Revision, RevisionFile
from hfcache.plan.policies import DEFAULT_JUNK_GRACE, Decision, Word

PLAN_VERSION = 1


class What(Word):
    """What a unit is: a revision of a model, one file of a revision, or a piece of junk."""

    REVISION = "revision"
    FILE = "file"  # one file of a revision (hfcache rm hf://org/name/path): the revision stays, without it
    PARTIAL = "partial"  # a download that did not finish
    ORPHAN = "orphan"  # a blob no revision uses
    PAYLOAD = "payload"  # a shared-store payload no repo links to
    LEFTOVER = "leftover"  # what a removed revision left (.no_exist/, trees/, an empty repo folder)


class Status(Word):
    """What executing one unit did."""

    DELETED = "deleted"
    SKIPPED = "skipped"  # not attempted: a check just before it found a reason
    FAILED = "failed"  # attempted, and something of it could not be removed


WHATS = tuple(w.value for w in What)


@dataclass(frozen=True)
class PlanUnit:
    """One decision of a plan: a revision (``what=What.REVISION``), a file of one, or a piece of junk, and why.

    ``reclaim_bytes`` is what deleting it frees on top of the units before it in the plan
    (so the plan's units add up exactly). ``item_removed`` says the model's last revision
    goes too, so its whole folder is removed. A file unit's ``path`` is the revision's entry
    for it and ``file`` its name in the repo (``onnx/model.onnx``).
    """

    kind: str
    root: str
    id: str | None
    revision: str | None
    path: str
    reclaim_bytes: int
    reasons: tuple[Decision, ...]
    what: What = What.REVISION
    type: str | None = None
    version: str | None = None
    refs: tuple[str, ...] = ()
    size_bytes: int = 0
    last_accessed: float = 0.0
    last_modified: float = 0.0
    item_removed: bool = False
    file: str | None = None


def revision_unit(root: str, item: Item, rev: Revision, reasons: tuple[Decision, ...], reclaim: int, removed: bool) -> PlanUnit:
    """The unit of one revision of ``item`` in the cache at ``root``: what a policy or ``hfcache rm`` decided."""
    return PlanUnit(
        kind=item.kind,
        root=root,
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
        item_removed=removed,
    )


def file_unit(root: str, item: Item, rev: Revision, f: RevisionFile, reasons: tuple[Decision, ...], reclaim: int) -> PlanUnit:
    """The unit of one file ``f`` of revision ``rev`` of ``item``: the revision stays, without it."""
    whole = revision_unit(root, item, rev, reasons, reclaim, False)
    return replace(whole, path=f.path, what=What.FILE, size_bytes=f.size_bytes, last_accessed=f.last_accessed, file=f.name)


class JunkPiece(NamedTuple):
    """One piece of a cache's junk as a plan lists it."""

    path: str
    what: What
    item_id: str | None
    size_bytes: int
    last_modified: float


def junk_pieces(cache: CacheInventory) -> list[JunkPiece]:
    """The junk of ``cache`` in the order plans list it: partials, orphans, unreferenced payloads, leftovers."""
    return [
        *(JunkPiece(p.path, What.PARTIAL, p.item_id, p.size_bytes, p.last_modified) for p in cache.partial_files),
        *(JunkPiece(o.path, What.ORPHAN, o.item_id, o.size_bytes, o.last_modified) for o in cache.orphan_files),
        *(JunkPiece(s.path, What.PAYLOAD, None, s.size_bytes, s.last_modified) for s in cache.unreferenced_payloads),
        *(JunkPiece(lo.path, What.LEFTOVER, lo.item_id, lo.size_bytes, lo.last_modified) for lo in cache.leftovers),
    ]


class PlanCache(NamedTuple):
    """A cache a plan covers, and the grace period its junk (and live-use checks) used."""

    kind: str
    root: str
    junk_grace: float = DEFAULT_JUNK_GRACE


@dataclass(frozen=True)
class Plan:
    """What a policy does to the scanned caches: units to delete and units kept, with reasons."""

    delete: tuple[PlanUnit, ...] = ()
    keep: tuple[PlanUnit, ...] = ()
    created_at: float = 0.0
    policy: tuple[str, ...] = ()
    caches: tuple[PlanCache, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def reclaim_bytes(self) -> int:
        return sum(u.reclaim_bytes for u in self.delete)


@dataclass(frozen=True)
class UnitResult:
    """What executing one unit of a plan did. ``freed_bytes`` counts the plan's accounting that left the disk."""

    unit: PlanUnit
    status: Status
    freed_bytes: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Execution:
    """A run of a plan: one result per unit to delete (in the plan's order), and the notes it made.

    ``stopped`` says why the run stopped before the end of the plan (a signal, the audit log
    failing), or is None. ``notes`` are warnings the run added (processes whose open files
    could not be read, ...).
    """

    plan: Plan
    results: tuple[UnitResult, ...]
    notes: tuple[str, ...] = ()
    stopped: str | None = None

    @property
    def freed_bytes(self) -> int:
        """What actually left the disk."""
        return sum(r.freed_bytes for r in self.results)

    @property
    def failed(self) -> tuple[UnitResult, ...]:
        return tuple(r for r in self.results if r.status == Status.FAILED)

    @property
    def warnings(self) -> tuple[str, ...]:
        return (*self.plan.warnings, *self.notes)
