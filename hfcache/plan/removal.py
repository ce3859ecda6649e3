"""Plans that remove what is named (``hfcache rm``): repos, revisions, ``hf://`` URIs, other kinds' ids.

A target names an item by its id (``org/name``; a torch checkpoint's or a Keras file's id),
optionally one revision of it (``org/name@main``, a ref, or ``org/name@<commit>``), the way
``hf cache rm`` takes them; ``hf://models/org/name``, ``hf://datasets/...`` and
``hf://spaces/...`` name a hub repo of that type. The plan is the same value a policy makes,
and goes through the same dry run, question, checks, audit log and exit codes. Pure: the
inventory in, the plan out.

>>> parse_target("org/model@v1.0")
Target(text='org/model@v1.0', id='org/model', revision='v1.0', type=None, kind=None, file=None)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import NamedTuple

from hfcache.caches.deletion import FileDeletion
from hfcache.caches.protocol import CacheKind, Uri
from hfcache.caches.registry import registry
from hfcache.errors import UsageError
from hfcache.model import CacheInventory, Inventory, Item, Revision, RevisionFile
from hfcache.plan.accounting import Reclaim
from hfcache.plan.decisions import Plan, PlanCache, PlanUnit, What, file_unit, junk_pieces, revision_unit
from hfcache.plan.policies import DEFAULT_JUNK_GRACE, Case, Decision, Rule, junk

log = logging.getLogger(__name__)


class Target(NamedTuple):
    """What one command-line argument names: an item id, maybe a revision (or ref), maybe a type and kind.

    ``kind`` is set when a kind's own URI scheme named it (``hf://`` names hub items only);
    ``file`` when it names a file (or a folder) in the item (``hf://org/name/onnx/model.onnx``).
    """

    text: str
    id: str
    revision: str | None = None
    type: str | None = None
    kind: str | None = None
    file: str | None = None


def _bad(text: str) -> UsageError:
    return UsageError(f"not a repo id, id@revision or URI: {text!r}")


def _read_uri(kind: CacheKind, text: str) -> Uri | None:
    try:
        return kind.parse_uri(text)
    except Exception as e:  # noqa: BLE001 - a plug-in's parser: its failure is its own, never the command's
        log.warning("cache kind %s could not read %r: %s: %s", kind.kind, text, type(e).__name__, e)
        return None


def parse_target(text: str, *, item_type: str | None = None, kinds: Iterable[CacheKind] = ()) -> Target:
    """``org/name``, ``org/name@rev``, or a URI one of ``kinds`` reads (``hf://...``); a :class:`UsageError` else.

    A URI names items of the kind that read it, of the type it says (``--type`` may not say
    otherwise). Anything else is an item id as ``scan`` shows it, optionally ``@revision``.
    """
    if not text.strip() or any(c in text for c in "\0\n\r"):
        raise _bad(text)
    for kind in kinds:
        uri = _read_uri(kind, text)
        if uri is None:
            continue
        if not isinstance(uri, Uri) or not uri.id.strip("/") or uri.revision == "":
            raise _bad(text)
        if item_type is not None and uri.type is not None and item_type != uri.type:
            raise UsageError(f"{text!r} names a {uri.type}, not a {item_type}: drop --type or change the URI")
        if uri.file is not None and any(part in ("", ".", "..") for part in uri.file.split("/")):
            raise UsageError(f"not a file of a repo: {uri.file!r} (in {text!r})")
        return Target(text, uri.id.strip("/"), uri.revision, uri.type or item_type, kind.kind, uri.file)
    ident, at, revision = text.rpartition("@") if "@" in text else (text, "", "")
    if not ident or ident.startswith("/") or (at and not revision):
        raise _bad(text)
    return Target(text, ident, revision or None, item_type)


def _matches(item: Item, revision: str) -> list[Revision]:
    """The revisions ``revision`` names: a commit or a ref, exactly; else ``refs/<revision>`` (refs/pr/1 as pr/1)."""
    exact = [r for r in item.revisions if r.revision == revision or revision in r.refs]
    return exact or [r for r in item.revisions if f"refs/{revision}" in r.refs]


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _search(
    inventory: Inventory, target: Target, same: Callable[[str, str], bool]
) -> list[tuple[CacheInventory, Item, list[Revision]]]:
    out = []
    for cache in inventory.caches:
        if target.kind is not None and cache.kind != target.kind:
            continue
        for item in cache.items:
            if target.type is not None and item.type != target.type:
                continue
            if item.id == target.text and target.kind is None:  # an id with an @ in it (a Keras file name)
                out.append((cache, item, list(item.revisions)))
            elif same(item.id, target.id):
                revs = list(item.revisions) if target.revision is None else _matches(item, target.revision)
                if revs:
                    out.append((cache, item, revs))
    return out


def _found(inventory: Inventory, target: Target, kinds: frozenset[str]) -> list[tuple[CacheInventory, Item, list[Revision]]]:
    """Every item (and its revisions) ``target`` names. An id that is an item's whole id wins over id@revision.

    As ``hf cache rm`` reads them, a bare 40-hex commit names that revision wherever it is,
    and an id matches without regard to case when nothing matches it exactly (more than one
    item then is an error: say which).
    """
    out = _search(inventory, target, str.__eq__)
    if not out and target.kind is None and target.revision is None and _COMMIT.fullmatch(target.id.lower()):
        commit = target.id.lower()
        out = [
            (cache, item, [r])
            for cache in inventory.caches
            for item in cache.items
            for r in item.revisions
            if r.revision == commit and target.type in (None, item.type)
        ]
    if not out:
        out = _search(inventory, target, lambda a, b: a.lower() == b.lower())
        named = sorted({item.id for _, item, _ in out})
        if len(named) > 1:
            raise UsageError(f"{target.text!r} matches {', '.join(map(repr, named))} but none exactly: say which")
    places: dict[tuple[str, str, str], set[str]] = {}
    for cache, item, _ in out:
        places.setdefault((cache.root, item.id, item.type), set()).add(item.path)
    for (root, ident, _), paths in places.items():
        if len(paths) > 1:  # one id for several folders (Ollama folds the case of hosts and namespaces): never all
            raise UsageError(
                f"{target.text!r} names {len(paths)} items called {ident!r} in {root} ({', '.join(sorted(paths))}): "
                "hfcache cannot tell them apart, so nothing deleted"
            )
    found_kinds = {cache.kind for cache, _, _ in out}
    if len(found_kinds) > 1 and not kinds:
        raise UsageError(
            f"{target.text!r} is in more than one kind of cache ({', '.join(sorted(found_kinds))}): say which with --kind"
        )
    return out


FilesOf = Callable[[CacheInventory, Item, Revision], "list[RevisionFile] | None"]


def kind_files(cache: CacheInventory, item: Item, rev: Revision) -> list[RevisionFile] | None:
    """The files of ``rev`` as its kind lists them; None for a kind whose revisions hold no files of their own."""
    kind = registry().kinds.get(cache.kind)
    deletion = kind.deletion if kind is not None else None
    return deletion.files(cache, item, rev) if isinstance(deletion, FileDeletion) else None


def _named_files(
    inventory: Inventory, target: Target, kinds: frozenset[str], files_of: FilesOf
) -> list[tuple[CacheInventory, Item, Revision, RevisionFile]]:
    """Every file (or every file in the folder) ``target.file`` names, in each revision the target names."""
    out = []
    for cache, item, revs in _found(inventory, target, kinds):
        for rev in revs:
            listed = files_of(cache, item, rev)
            if listed is None:
                raise UsageError(f"{target.text!r}: {cache.kind} revisions hold no files of their own: name the revision")
            prefix = f"{target.file}/"
            out += [(cache, item, rev, f) for f in listed if f.name == target.file or f.name.startswith(prefix)]
    return out


def removal_plan(
    inventory: Inventory,
    targets: Iterable[Target],
    *,
    now: float,
    chosen_kinds: Iterable[str] = (),
    files_of: FilesOf = kind_files,
    rule: Rule = Rule.NAMED,
) -> Plan:
    """The plan that removes every revision (or file of one) ``targets`` name, counted as a policy's plan is.

    Raises :class:`UsageError` when a target names nothing in ``inventory`` (nothing is removed
    then: a typo never turns into half a removal). A model something odd was found in is kept,
    with the reason, as every policy keeps it. A revision refs point to is removed with them,
    and its reason says so; a model's last revision takes the whole model. A file goes from
    every revision named that holds it (``files_of`` lists them); the revisions stay.
    ``rule`` is who named them (``verify --repair`` names what it found damaged).
    """
    targets = list(targets)
    kinds = frozenset(chosen_kinds)
    chosen: dict[str, tuple[CacheInventory, Item, Revision, Target]] = {}
    named_files: dict[str, tuple[CacheInventory, Item, Revision, RevisionFile, Target]] = {}
    bare: dict[str, tuple[CacheInventory, Item, Target]] = {}  # items with no revision (a hub repo after probes)
    missing = []
    for target in targets:
        if target.file is not None:
            files = _named_files(inventory, target, kinds, files_of)
            for cache, item, rev, f in files:
                named_files.setdefault(f.path, (cache, item, rev, f, target))
            hit = bool(files)
        else:
            found = _found(inventory, target, kinds)
            for cache, item, revs in found:
                for rev in revs:
                    chosen.setdefault(rev.path, (cache, item, rev, target))
                if not item.revisions and target.revision is None and item.unit_paths == (item.path,):  # its own folder
                    bare.setdefault(item.path, (cache, item, target))
            hit = bool(found)
        if not hit:
            missing.append(repr(target.text))
    if missing:
        raise UsageError(f"not in the caches scanned, so nothing deleted: {', '.join(missing)}")
    delete: list[PlanUnit] = []
    keep: list[PlanUnit] = []
    reclaims: dict[str, Reclaim] = {}
    swept: set[str] = set()
    for path in sorted(chosen):
        cache, item, rev, target = chosen[path]
        whole = all(r.path in chosen for r in item.revisions)
        refs = ", ".join(rev.refs) or None
        named = Decision(rule, Case.WHOLE if whole else Case.TARGET, subject=target.text, scope=refs)
        if not item.deletable:
            keep.append(revision_unit(cache.root, item, rev, (named, _damaged(item)), 0, False))
            continue
        sim = reclaims.setdefault(cache.root, Reclaim(cache))
        delete.append(revision_unit(cache.root, item, rev, (named,), sim.remove_revision(item, rev), whole))
        if whole and item.path not in swept:
            swept.add(item.path)
            delete.extend(_stale_junk(cache, item, named, sim, now))
    delete += _file_units(named_files, chosen, reclaims, keep, files_of, rule)
    for cache, item, target in bare.values():
        named = Decision(rule, Case.WHOLE, subject=target.text)
        if not item.deletable:
            keep.append(_bare_unit(cache, item, (named, _damaged(item))))
            continue
        sim = reclaims.setdefault(cache.root, Reclaim(cache))
        delete.extend(_stale_junk(cache, item, named, sim, now))
        delete.append(_bare_unit(cache, item, (named,)))
    caches = tuple(dict.fromkeys(PlanCache(u.kind, u.root) for u in (*delete, *keep)))
    order = lambda u: (u.root, u.path)  # noqa: E731 - as make_plan orders
    return Plan(
        delete=tuple(sorted(delete, key=order)),
        keep=tuple(sorted(keep, key=order)),
        created_at=now,
        policy=(f"remove: {', '.join(t.text for t in targets)}",)
        if rule is Rule.NAMED
        else (f"repair: {len(targets)} found by verify",),
        caches=caches,
    )


def _bare_unit(cache: CacheInventory, item: Item, reasons: tuple[Decision, ...]) -> PlanUnit:
    """An item with no revision to remove goes whole, as an emptied repo does (a hub repo holding only what probes recorded).

    Execution removes its folder last, after its junk, and never while a snapshot, a blob or
    a download appears in it.
    """
    return PlanUnit(
        cache.kind,
        cache.root,
        item.id,
        None,
        item.path,
        item.size_bytes,
        reasons,
        what=What.LEFTOVER,
        type=item.type,
        size_bytes=item.size_bytes,
        last_modified=item.last_modified,
        item_removed=True,
    )


def _damaged(item: Item) -> Decision:
    everything = (*item.warnings, *(w for r in item.revisions for w in r.warnings))
    blocking = next(w for w in everything if w.blocks_deletion)
    return Decision(Rule.DAMAGED, Case.BLOCKED, keep=True, subject=str(blocking))


def _file_units(
    named: dict[str, tuple[CacheInventory, Item, Revision, RevisionFile, Target]],
    chosen: dict[str, tuple[CacheInventory, Item, Revision, Target]],
    reclaims: dict[str, Reclaim],
    keep: list[PlanUnit],
    files_of: FilesOf,
    rule: Rule,
) -> list[PlanUnit]:
    """One unit per named file of a revision that stays; a blob is freed by the last file to leave it, as execution sees."""
    units = []
    rest: dict[str, set[str | None]] = {}  # revision path -> the keys its files not named still use
    for path in sorted(named):
        cache, item, rev, f, target = named[path]
        if rev.path in chosen:
            continue  # the whole revision goes anyway
        reason = Decision(rule, Case.FILE, subject=target.text)
        if not item.deletable and not item.damage_only_in(named):
            keep.append(file_unit(cache.root, item, rev, f, (reason, _damaged(item)), 0))
            continue
        if rev.path not in rest:
            rest[rev.path] = {g.key for g in files_of(cache, item, rev) or () if g.path not in named}
        sim = reclaims.setdefault(cache.root, Reclaim(cache))
        freed = sim.remove_file(item, rev, f.key, f.key not in rest[rev.path])
        units.append(file_unit(cache.root, item, rev, f, (reason,), freed))
    return units


def _stale_junk(cache: CacheInventory, item: Item, named: Decision, sim: Reclaim, now: float) -> list[PlanUnit]:
    """A model removed whole takes its junk with it (partials, orphan blobs, leftovers), as ``prune --junk`` would.

    Junk the junk policy keeps (modified within the grace period: a download may be under
    way; its lock held) stays, and with it the repo folder around it.
    """
    mine = replace(
        cache,
        partial_files=tuple(p for p in cache.partial_files if p.item_id == item.id),
        orphan_files=tuple(o for o in cache.orphan_files if o.item_id == item.id),
        unreferenced_payloads=(),
        leftovers=tuple(lo for lo in cache.leftovers if lo.item_id == item.id),
    )
    orphans = {o.path: o for o in mine.orphan_files}
    decided = junk(mine, now=now, grace=DEFAULT_JUNK_GRACE)
    units = []
    for path, what, _, size, mtime in junk_pieces(mine):
        if any(d.keep for d in decided[path]):
            continue
        freed = sim.remove_orphan(orphans[path], item) if what == What.ORPHAN else size
        reasons = (named, *decided[path])
        units.append(
            PlanUnit(cache.kind, cache.root, item.id, None, path, freed, reasons, what=what, size_bytes=size, last_modified=mtime)
        )
    return units
