"""Carrying out a plan: exactly its units, in the order that never leaves a kept revision broken.

:func:`execute_plan` takes a :class:`~hfcache.plan.decisions.Plan` and a fresh scan of its caches, and
returns an :class:`~hfcache.plan.decisions.Execution`: one result per unit, beside the plan.

1. every unit is matched against the fresh scan; one that vanished, changed, was read
   since the plan or is now damaged is *skipped* with a reason (a plan is never widened:
   what stays in the scan but not in the plan is never touched);
2. every root and every path that could be removed is checked before the first deletion
   (:func:`check_plan`, :mod:`hfcache.execute.checks`): a root that is ``/``, a home folder or no
   longer a cache of its kind, a path outside the root, behind a symlink or of a shape the
   kind never deletes refuses the whole plan (:class:`UnsafePlan`);
3. junk goes first (partial downloads, orphan blobs, unreferenced payloads, leftovers),
   then model by model (many hub repos on several processes, each repo by one:
   :mod:`hfcache.execute.workers`). Just before each unit goes, the live-use checks run (a download
   running into the item, a file open or mapped by a process, a read since the plan), then
   its kind's re-validation on disk (refs changed since the plan, now the last revision);
   a unit that fails one is skipped. The rest go by the steps their kind declares
   (:mod:`hfcache.caches.deletion`; the hub's in :mod:`hfcache.caches.huggingface.delete`), each unit
   after a durable "started" line in the audit log and followed by its outcome (models with
   one planned revision, and junk, are checked up to :data:`GROUP` at a time and their lines
   flushed with one ``fdatasync``: a group commit);
4. every step acts through :class:`hfcache.fs.ops.Tree`: relative to an open descriptor of
   the root, one component at a time, never through a symlink, never across a mount.
   ``freed_bytes`` is what of the plan's accounting actually left the disk (files whose
   last link was removed), never the estimate; a unit whose removal hit an error is
   ``failed``, with the first error;
5. a signal (SIGINT, SIGTERM, SIGHUP) or an audit log that cannot be written stops the run
   between two units; the rest are skipped, and the execution's ``stopped`` says why.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from hfcache import interrupt, progress
from hfcache.caches.deletion import PATHS, SETTLE, Deletion, FileDeletion, Finisher, ItemsApart, Outcome
from hfcache.caches.protocol import CacheKind
from hfcache.caches.registry import registry
from hfcache.errors import AuditError, UnsafePlan
from hfcache.execute.audit import AuditLog
from hfcache.execute.checks import LiveChecks, TargetCheck, home_dirs, memo_realpath, root_problem
from hfcache.execute.workers import Channel, Pool, describe_end, groups, workers_for
from hfcache.fs.ops import Tree
from hfcache.model import CacheInventory, Inventory, Item, Leftover, Revision
from hfcache.output.words import describe_all
from hfcache.parallel import can_fork
from hfcache.plan.decisions import Execution, Plan, PlanUnit, Status, UnitResult, What
from hfcache.plan.policies import DEFAULT_JUNK_GRACE

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Matching the plan against a fresh scan


@dataclass
class _Work:
    """One cache's share of the plan, matched against its fresh scan."""

    cache: CacheInventory
    junk: list[tuple[PlanUnit, object]] = field(default_factory=list)
    revisions: dict[str, tuple[Item, list[tuple[PlanUnit, Revision]]]] = field(default_factory=dict)
    files: dict[str, tuple[Item, list[tuple[PlanUnit, Revision]]]] = field(default_factory=dict)


def _match_revision(unit: PlanUnit, revs: dict[str, tuple[Item, Revision]]) -> str | None:
    found = revs.get(unit.path)
    if found is None:
        return "no longer in the cache"
    item, rev = found
    if item.id != unit.id or rev.revision != unit.revision:
        return "the path now holds something else"
    if not item.deletable:
        return "the scan now finds damage in this model"
    if rev.last_accessed > unit.last_accessed + 1:
        return "read since the plan was made"
    if rev.size_bytes != unit.size_bytes:
        return "changed since the plan was made"
    return None


def _match_file(
    unit: PlanUnit, found: tuple[Item, Revision] | None, kind: CacheKind | None, planned: Collection[str]
) -> str | None:
    """A file unit: its revision still there, undamaged, its path that revision's entry for the file."""
    if kind is None or not isinstance(kind.deletion, FileDeletion):
        return "its kind does not remove single files"
    if found is None:
        return "its revision is no longer in the cache"
    item, rev = found
    if unit.file is None or unit.path != os.path.join(rev.path, *unit.file.split("/")):
        return "the path is not that revision's entry for the file"
    if not item.deletable and not item.damage_only_in(planned):  # (its damage is what the plan removes: a repair)
        return "the scan now finds damage in this model"
    return None


def _match_junk(unit: PlanUnit, found: object | None) -> str | None:
    if found is None:
        return "no longer in the cache"
    if getattr(found, "lock_held", None):
        return "its download lock is held"
    if getattr(found, "last_modified", unit.last_modified) > unit.last_modified + 1:
        return "modified since the plan was made"
    return None


def _bare_items(cache: CacheInventory) -> Iterator[Leftover]:
    """Items with no revision (a hub repo holding only what probes recorded), as ``hfcache rm`` removes them: whole."""
    for item in cache.items:
        if not item.revisions and item.deletable and item.unit_paths == (item.path,):
            yield Leftover(item.path, item.id, None, item.size_bytes, item.last_modified)


def _prepare(plan: Plan, inventory: Inventory) -> tuple[list[_Work], dict[str, str]]:
    """Match each delete unit to the fresh scan; returns the work per cache and the skip reasons."""
    caches = {(c.kind, c.root): c for c in inventory.caches if c.exists}
    work: dict[tuple[str, str], _Work] = {}
    skipped: dict[str, str] = {}
    revisions: dict[tuple[str, str], dict[str, tuple[Item, Revision]]] = {}
    commits: dict[tuple[str, str], dict[tuple[str, str], tuple[Item, Revision]]] = {}
    junk: dict[tuple[str, str, str], dict[str, object]] = {}
    kinds = registry().kinds
    planned_files = {u.path for u in plan.delete if u.what == What.FILE}
    for unit in plan.delete:
        cache = caches.get((unit.kind, unit.root))
        if cache is None:
            skipped[unit.path] = "its cache was not found"
            continue
        w = work.setdefault((unit.kind, unit.root), _Work(cache))
        if unit.what in (What.REVISION, What.FILE):  # in : a library caller's plain "revision" too
            key = (unit.kind, unit.root)
            if key not in revisions:
                revisions[key] = {r.path: (i, r) for i in cache.items for r in i.revisions}
                commits[key] = {(i.id, r.revision): (i, r) for i, r in revisions[key].values()}
            if unit.what == What.FILE:
                found_rev = commits[key].get((unit.id or "", unit.revision or ""))
                reason = _match_file(unit, found_rev, kinds.get(unit.kind), planned_files)
                if reason is None and found_rev is not None:
                    w.files.setdefault(found_rev[0].path, (found_rev[0], []))[1].append((unit, found_rev[1]))
            else:
                reason = _match_revision(unit, revisions[key])
                if reason is None:
                    item, rev = revisions[key][unit.path]
                    w.revisions.setdefault(item.path, (item, []))[1].append((unit, rev))
        else:
            key3 = (unit.kind, unit.root, unit.what)
            if key3 not in junk:
                pool: Iterable[object] = {
                    What.PARTIAL: cache.partial_files,
                    What.ORPHAN: cache.orphan_files,
                    What.PAYLOAD: cache.unreferenced_payloads,
                    What.LEFTOVER: (*cache.leftovers, *_bare_items(cache)),
                }.get(unit.what, ())
                junk[key3] = {str(getattr(x, "path", "")): x for x in pool}
            found = junk[key3].get(unit.path)
            reason = _match_junk(unit, found)
            if reason is None:
                w.junk.append((unit, found))
        if reason is not None:
            skipped[unit.path] = reason
    for w in work.values():  # an emptied item folder after the rest of its junk: it goes only when that went
        w.junk.sort(key=lambda pair: isinstance(pair[1], Leftover) and pair[1].commit is None)
    return list(work.values()), skipped


@dataclass
class _Checked:
    """A model's planned revisions, checked just before they go: all it looked at, and those that may go."""

    deletion: Deletion
    tree: Tree
    cache: CacheInventory
    item: Item
    handled: list[PlanUnit]
    ready: list[tuple[PlanUnit, Revision]]


# ---------------------------------------------------------------------------------------------
# Carrying out a plan


def check_roots(plan: Plan) -> None:
    """Refuse a plan that would delete from ``/``, a home folder, or a root that is not a cache of its kind.

    Cheap, and run before anything else (the prune lock and the audit log are created only
    after it); :func:`execute_plan` checks again, with every path.
    """
    kinds = registry().kinds
    homes = home_dirs()
    roots = {(u.kind, u.root) for u in plan.delete}
    for kind, root in sorted(roots):
        cache = CacheInventory(kind=kind, root=root)
        known = kinds.get(kind)
        problem = root_problem(cache, known.recognizes if known is not None else None, homes)
        if problem:
            raise UnsafePlan(f"plan refused, nothing deleted: {problem}")


def _deletion(kind: CacheKind | None) -> Deletion:
    return kind.deletion if kind is not None else PATHS


def check_plan(work: list[_Work], *, kinds: Mapping[str, CacheKind], keep: Iterable[str] = ()) -> list[str]:
    """Every reason the plan may not run (empty when it may): roots, then every path it could remove."""
    homes = home_dirs()
    keep = tuple(keep)
    problems = []
    for w in work:
        kind = kinds.get(w.cache.kind)
        problem = root_problem(w.cache, kind.recognizes if kind is not None else None, homes)
        if problem:
            problems.append(problem)
            continue
        shapes = kind.shapes if kind is not None else ()  # a kind not installed here: nothing matches
        deletion = _deletion(kind)
        paths = [p for unit, found in w.junk for p in deletion.junk_targets(w.cache, unit, found)]
        paths += [p for item, units in w.revisions.values() for p in deletion.targets(w.cache, item, units)]
        resolve = memo_realpath()  # folders shared by many paths: looked at once
        check = TargetCheck(w.cache, shapes, keep, resolve=resolve)
        problems.extend(p for p in map(check, paths) if p)
        problems.extend(p for p in _file_problems(w, check, keep, resolve) if p)
    return problems


def _file_problems(w: _Work, check: TargetCheck, keep: tuple[str, ...], resolve: Callable[[str], str]) -> Iterator[str | None]:
    """A file unit's revision must be a path its kind deletes, and the file a path inside it, reached strictly."""
    for _, units in w.files.values():
        for unit, rev in units:
            inside = re.escape(os.path.relpath(rev.path, w.cache.root).replace(os.sep, "/")) + "/.+"
            yield check(rev.path) or TargetCheck(w.cache, (inside,), keep, resolve=resolve)(unit.path)


def _result(unit: PlanUnit, o: Outcome, skipped: str | None) -> UnitResult:
    if skipped is not None:
        return UnitResult(unit, Status.SKIPPED, 0, skipped)
    if o.errors:
        return UnitResult(unit, Status.FAILED, o.freed, o.errors[0])
    return UnitResult(unit, Status.DELETED, o.freed)


def _duplicates(plan: Plan) -> list[str]:
    seen: set[str] = set()
    return [u.path for u in plan.delete if u.path in seen or seen.add(u.path)]  # type: ignore[func-returns-value]


# How many units one ``fdatasync`` of their "started" lines covers (a group commit): checked one
# after another, their lines written and flushed at once, then removed one after another.
GROUP = 16

# At most this many finishers wait for their settling time (:data:`hfcache.caches.deletion.SETTLE`).
MAX_PENDING = 2000


class _Run:
    """One execution: outcomes, the audit log, the finishers waiting for their settling time."""

    def __init__(self, plan: Plan, skipped: dict[str, str], audit: AuditLog | None) -> None:
        self.plan = plan
        self.skipped = skipped
        self.audit = audit
        self.out: dict[str, Outcome] = {u.path: Outcome() for u in plan.delete}
        self.done: dict[str, UnitResult] = {}
        self.pending: list[tuple[float, Tree, Finisher, list[PlanUnit]]] = []
        self.group: list[_Checked] = []  # models checked, their units not started yet
        self.stopped: str | None = None
        self.notes: list[str] = []
        # In a worker process (hfcache.execute.workers): its pipe to the parent, told of each unit
        # started and done and of a stop at once (which stops the others), and asked whether to stop.
        self.channel: Channel | None = None

    def start(self, units: list[PlanUnit]) -> int:
        """The durable "started" lines of ``units``, flushed with one ``fdatasync`` (a group commit).

        Returns how many have their lines on disk: all, or, when a line cannot be written (the
        run then stops), those before it (none when the flush fails too). Those then do not
        begin either (:meth:`go` sees the stop), and their outcome lines say so.
        """
        n = len(units)
        if self.audit is not None and units:
            n = 0
            try:
                for unit in units:
                    self.audit.start(unit, sync=False)
                    n += 1
            except AuditError as e:
                self.stop(str(e))
            try:
                self.audit.sync()
            except AuditError as e:
                self.stop(str(e))
                n = 0
        return n

    def go(self, unit: PlanUnit) -> bool:
        """Whether ``unit``, its "started" line on disk, takes its first step now (the parent is told first).

        Not once the run is stopping (a signal, the log failing, the parent's word): the
        unit is then not attempted, and its outcome line says so.
        """
        if self.halted():
            if self.audit is not None:
                try:
                    self.audit.record(UnitResult(unit, Status.SKIPPED, 0, f"not attempted: {self.stopped}"))
                except AuditError:
                    pass  # (stopping already)
            return False
        if self.channel is not None:
            self.channel.send(("started", unit.path))
        return True

    def stop(self, why: str) -> None:
        if self.stopped is None and self.channel is not None:
            self.channel.send(("stop", why))
        self.stopped = self.stopped or why

    def finish(self, unit: PlanUnit) -> None:
        self.done[unit.path] = result = _result(unit, self.out[unit.path], self.skipped.get(unit.path))
        if self.audit is not None and result.status != Status.SKIPPED:
            try:
                self.audit.record(result)
            except AuditError as e:
                self.stop(str(e))
        why = result.error or "; ".join(describe_all(unit.reasons))
        log.info("%s %s %s: %s (%d bytes freed)", result.status, unit.what, unit.path, why, result.freed_bytes)
        if self.channel is not None:
            self.channel.send(("done", unit.path, result.status.value, result.freed_bytes, result.error))
        progress.report("deleting", len(self.done), len(self.plan.delete))

    def later(self, tree: Tree, finisher: Finisher | None, units: list[PlanUnit], *, flush: bool = True) -> None:
        """Finish ``units`` now, or once ``finisher`` ran after its settling time (not here: ``flush=False``)."""
        if finisher is None:
            tree.unlink_pending()  # (what they queued: carried out before they are reported)
            for unit in units:
                self.finish(unit)
            return
        self.pending.append((time.monotonic(), tree, finisher, units))
        if flush:
            self.flush(wait=len(self.pending) >= MAX_PENDING)

    def flush(self, *, wait: bool = True) -> None:
        """Run the waiting finishers whose settling time is over (with ``wait``: all, sleeping if needed)."""
        if not self.pending:
            return
        now = time.monotonic()
        settled = next((i for i, p in enumerate(self.pending) if p[0] + SETTLE > now), len(self.pending))
        if not wait:
            if settled and self.pending[0][0] + 2 * SETTLE <= now:  # (in batches: their removals back to back)
                self._finish_settled(settled)
            return
        if settled < len(self.pending):
            self._finish_settled(settled)  # (while the others settle)
            left = self.pending[-1][0] + SETTLE - time.monotonic()
            if left > 0:
                time.sleep(left)
        self._finish_settled(len(self.pending))
        if self.audit is not None:  # before that, the next unit's "started" line syncs them
            try:
                self.audit.sync()
            except AuditError as e:
                self.stop(str(e))

    def _finish_settled(self, n: int) -> None:
        """The first ``n`` waiting finishers, then the batch of removals, then their units are reported."""
        ready, self.pending = self.pending[:n], self.pending[n:]
        for _, tree, finisher, units in ready:
            try:
                finisher(tree)
            except OSError as e:
                self.out[units[-1].path].add(0, f"{e.filename or ''}: {e.strerror or e}")
        for tree in {id(r[1]): r[1] for r in ready}.values():
            tree.unlink_pending()
        for _, _, _, units in ready:
            for unit in units:
                self.finish(unit)

    def halted(self) -> bool:
        """Whether to start no further unit: a signal, or the audit log failing."""
        if self.stopped is None and interrupt.requested():
            self.stop(interrupt.reason())
        if self.stopped is None and self.channel is not None and self.channel.stopped():
            self.stopped = "stopped by the parent process"  # (which knows and reports the reason)
        return self.stopped is not None


def _open_trees(work: list[_Work], failed: dict[str, str]) -> dict[str, Tree]:
    trees: dict[str, Tree] = {}
    for w in work:
        try:
            trees[w.cache.root] = Tree(w.cache.root)
        except OSError as e:
            failed.setdefault(w.cache.root, f"cannot open the cache root {w.cache.root}: {e.strerror or e}")
    return trees


def recover(inventory: Inventory) -> list[str]:
    """Finish or roll back what interrupted runs left in the caches of ``inventory`` (under their prune locks)."""
    kinds = registry().kinds
    notes: list[str] = []
    for cache in inventory.caches:
        if not cache.exists:
            continue
        try:
            with Tree(cache.root) as tree:
                notes += _deletion(kinds.get(cache.kind)).recover(tree, cache)
        except OSError as e:
            notes.append(f"{cache.root}: cannot check for an interrupted prune: {e.strerror or e}")
    for note in notes:
        log.warning("%s", note)
    return notes


def execute_plan(
    plan: Plan,
    inventory: Inventory,
    *,
    live: LiveChecks | None = None,
    audit: AuditLog | None = None,
    failed: Mapping[str, str] | None = None,
    jobs: int = 1,
) -> Execution:
    """Carry out ``plan`` against ``inventory`` (a fresh scan of its caches); returns what each unit did.

    Raises :class:`UnsafePlan`, before deleting anything, when any root or target fails
    :func:`check_plan`. Then, cache by cache and model by model, each unit passes the
    live-use checks of ``live`` and its kind's re-validation on disk just before it goes
    (with the group it goes in: :func:`_remove_group`), or is skipped with the reason.
    ``audit`` gets a durable "started" line before a unit's first step and its outcome after;
    ``failed`` maps roots that may not be touched (their prune lock could not be taken) to
    the reason, and fails their units. A signal
    (:mod:`hfcache.interrupt`) or an audit log that cannot be written stops the run before
    the next unit: the rest are skipped, and the execution's ``stopped`` says why. With
    ``jobs`` over 1, the models of a kind that allows it are deleted by up to that many
    processes at once (:mod:`hfcache.execute.workers`), each model by one of them.
    """
    dupes = _duplicates(plan)
    if dupes:
        raise UnsafePlan(f"plan refused, nothing deleted: it lists {dupes[0]} more than once")
    work, skipped = _prepare(plan, inventory)
    kinds = registry().kinds
    problems = check_plan(work, kinds=kinds, keep=[audit.path] if audit else [])
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UnsafePlan(f"plan refused, nothing deleted: {problems[0]}{more}")
    live = live or LiveChecks([w.cache.root for w in work])
    graces = {(c.kind, c.root): c.junk_grace for c in plan.caches}
    failed = dict(failed or {})
    trees = _open_trees(work, failed)
    for opened in trees.values():
        opened.since = inventory.scanned_at  # (what the units were matched against)
    run = _Run(plan, skipped, audit)
    try:
        for w in work:
            deletion = _deletion(kinds.get(w.cache.kind))
            tree = trees.get(w.cache.root)
            if tree is None or w.cache.root in failed:
                why = failed.get(w.cache.root, "its cache root could not be opened")
                models = [*w.revisions.values(), *w.files.values()]
                for unit in [u for u, _ in w.junk] + [u for _, units in models for u, _ in units]:
                    run.out[unit.path].errors.append(why)
                continue
            grace = graces.get((w.cache.kind, w.cache.root), DEFAULT_JUNK_GRACE)
            _run_junk(run, live, deletion, tree, w, grace)
            _run_items(run, live, deletion, tree, w, grace, jobs)
    finally:
        run.flush()  # finishers waiting for their settling time, even when the loop stopped on an error
        for tree in trees.values():
            tree.close()
    if run.stopped:
        for u in plan.delete:
            if u.path not in run.done:
                skipped.setdefault(u.path, f"not attempted: {run.stopped}")
    results = tuple(run.done.get(u.path) or _result(u, run.out[u.path], skipped.get(u.path)) for u in plan.delete)
    return Execution(plan, results, notes=(*live.notes, *run.notes), stopped=run.stopped)


def _run_junk(run: _Run, live: LiveChecks, deletion: Deletion, tree: Tree, w: _Work, grace: float) -> None:
    """The junk of one cache: each piece checked just before it goes, then removed by its kind.

    Pieces go a group at a time (:data:`GROUP`): checked, their "started" lines flushed at
    once, then removed in order (an emptied repo folder after what it held).
    """
    group: list[tuple[PlanUnit, object]] = []
    for unit, found in w.junk:
        if run.halted():
            break
        reason = live.junk_busy(deletion, tree, w.cache, unit, found, grace)
        if reason:
            run.skipped[unit.path] = reason
            run.finish(unit)
        else:
            group.append((unit, found))
        if len(group) >= GROUP:
            _remove_junk(run, deletion, tree, w, group)
            group = []
    _remove_junk(run, deletion, tree, w, group)


def _remove_junk(run: _Run, deletion: Deletion, tree: Tree, w: _Work, group: list[tuple[PlanUnit, object]]) -> None:
    n = run.start([unit for unit, _ in group]) if group and not run.halted() else 0
    for unit, found in group[:n]:
        if run.go(unit):
            run.later(tree, deletion.remove_junk(tree, w.cache, unit, found, run.out), [unit], flush=False)
    run.flush(wait=len(run.pending) >= MAX_PENDING)


def _run_item(run: _Run, live: LiveChecks, deletion: Deletion, tree: Tree, w: _Work, path: str, grace: float) -> None:
    """Everything the plan removes of one item: its revisions, then its files.

    A model with one planned revision (and no file) is checked now and joins the run's
    group (:data:`GROUP`), which goes once full; any other item goes at once, after the group.
    """
    item, units = w.revisions.get(path, (None, []))
    if item is not None and len(units) == 1 and path not in w.files:
        run.group.append(_check_model(live, deletion, tree, w.cache, item, units, grace, run.skipped))
        if len(run.group) >= GROUP:
            _remove_group(run)
        return
    _remove_group(run)
    if item is not None and not run.halted():
        _run_model(run, live, deletion, tree, w.cache, item, units, grace)
    if path in w.files and not run.halted():
        item, units = w.files[path]
        _run_files(run, live, deletion, tree, w.cache, item, units, grace)


def _run_items(run: _Run, live: LiveChecks, deletion: Deletion, tree: Tree, w: _Work, grace: float, jobs: int) -> None:
    """The items of one cache, one after another, or on several processes when the kind allows it and they are many.

    A kind's deletion allows it by saying what its items share that deletion decides about
    (``shared_keys``, the hub's shared-store payloads): items sharing anything go together,
    to one process, in the plan's order.
    """
    paths = list(dict.fromkeys([*w.revisions, *w.files]))
    if isinstance(deletion, ItemsApart) and workers_for(len(paths), jobs) > 1 and not run.halted() and can_fork():
        items = {p: found[0] for p, found in (*w.files.items(), *w.revisions.items())}
        tasks = [[paths[i] for i in group] for group in groups([deletion.shared_keys(w.cache, items[p]) for p in paths])]
        workers = workers_for(len(tasks), jobs)
        if workers > 1:
            _run_parallel(run, live, deletion, tree, w, grace, tasks, workers)
            return
    _run_paths(run, live, deletion, tree, w, grace, paths)


def _run_paths(
    run: _Run, live: LiveChecks, deletion: Deletion, tree: Tree, w: _Work, grace: float, paths: list[str], *, last: bool = True
) -> None:
    """Items one after another (then the group they left, unless more follow: not ``last``)."""
    for path in paths:
        if run.halted():
            break
        _run_item(run, live, deletion, tree, w, path, grace)
    if last:
        _remove_group(run)


def _run_parallel(
    run: _Run, live: LiveChecks, deletion: Deletion, tree: Tree, w: _Work, grace: float, tasks: list[list[str]], workers: int
) -> None:
    """``tasks`` (lists of item paths) on ``workers`` forked processes; their outcomes become this run's."""
    units = {u.path: u for u in run.plan.delete}

    def child(channel: Channel) -> None:  # pragma: no cover - runs in a worker (coverage does not follow forks)
        tree.detach()
        run.pending.clear()  # (the junk's finishers: this process's parent runs them)
        run.group.clear()  # (empty: the parent's groups went before its workers started)
        run.channel = channel
        try:
            for i in channel.tasks():
                _run_paths(run, live, deletion, tree, w, grace, tasks[i], last=False)
                if run.halted():
                    break
            _remove_group(run)
        finally:
            run.flush()  # what it started is finished, even when a bug stopped it (as in one process)
            tree.unlink_pending()
        channel.send(("denied", live.denied))

    started: set[str] = set()

    def on_record(record: object) -> None:
        assert isinstance(record, tuple)
        if record[0] == "started":
            started.add(record[1])
        elif record[0] == "done":
            path, status, freed, error = record[1:]
            run.done[path] = UnitResult(units[path], Status(status), freed, error)
            progress.report("deleting", len(run.done), len(run.plan.delete))
        elif record[0] == "stop":
            run.stop(record[1])
            pool.stop()
        elif record[0] == "denied":
            live.denied = max(live.denied, record[1])

    def tick() -> None:
        if run.halted():
            pool.stop()

    try:
        pool = Pool(len(tasks), workers, child)
    except OSError as e:  # out of descriptors or processes: one process does it all
        log.info("cannot start processes to delete with (%s); deleting in this one", e.strerror or e)
        _run_paths(run, live, deletion, tree, w, grace, [path for task in tasks for path in task])
        return
    try:
        pool.run(on_record, tick)
    finally:
        pool.close()
    tree.forget(tree.path)  # the workers changed the cache: every folder is looked up afresh
    redo = _after_workers(run, w, tasks, pool, started)
    if pool.errors:  # a bug in a worker: an internal error, as it would be in one process (after the repair)
        raise RuntimeError(f"a deleting process failed: {pool.errors[0].strip().splitlines()[-1]}")
    # What no worker took or began (they died, or all stopped: then nothing runs), done here.
    _run_paths(run, live, deletion, tree, w, grace, [*redo, *(path for i in pool.untaken() for path in tasks[i])])


def _after_workers(run: _Run, w: _Work, tasks: list[list[str]], pool: Pool, started: set[str]) -> list[str]:
    """What dead workers took and never reported, repaired at once (as the next prune would); returns the items to do again.

    An item of which it started no unit is untouched: done again here. Of an item it began,
    a unit it started is failed, 0 bytes freed (what went is not known), saying what the
    repair left, and logged; one it did not start is failed as not attempted (the next prune
    plans it again).
    """
    if not pool.ended:
        return []
    run.flush()  # this process's own finishers (the junk's) first: the repair must not take what they wait for
    run.notes += recover(Inventory(caches=(w.cache,)))
    redo: list[str] = []
    for ended in pool.ended:
        end = describe_end(ended.status)
        log.warning("deleting process %d %s", ended.pid, end)
        for path in (path for i in ended.tasks for path in tasks[i]):
            units = [u for _, us in (w.revisions.get(path, (None, [])), w.files.get(path, (None, []))) for u, _ in us]
            left = [u for u in units if u.path not in run.done]
            if left and not any(u.path in started for u in units):
                redo.append(path)
                continue
            for unit in left:
                if unit.path not in started:
                    run.done[unit.path] = UnitResult(
                        unit, Status.FAILED, 0, f"not attempted: the process deleting its model {end}"
                    )
                    continue
                now = "it is still in the cache" if os.path.lexists(unit.path) else "it is gone"
                why = f"the process deleting it {end} before it was done; after the repair {now}"
                run.done[unit.path] = result = UnitResult(unit, Status.FAILED, 0, why)
                if run.audit is not None:  # (its "started" line is there: the log says how it ended)
                    try:
                        run.audit.record(result)
                    except AuditError as e:
                        run.stop(str(e))
    return redo


def _unit_busy(
    live: LiveChecks, deletion: Deletion, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision
) -> str | None:
    """Why a planned revision may not go now: in use, or its kind's re-validation on disk fails."""
    reason = live.revision_busy(cache, unit, rev, follow=deletion.follow_links)
    return reason or deletion.revalidate(tree, cache, item, unit, rev)


def _check_model(
    live: LiveChecks,
    deletion: Deletion,
    tree: Tree,
    cache: CacheInventory,
    item: Item,
    units: list[tuple[PlanUnit, Revision]],
    grace: float,
    skipped: dict[str, str],
) -> _Checked:
    """A model's planned revisions checked at once (none removed in between: for a model of one unit)."""
    busy = live.item_busy(deletion, tree, cache, item.path, item.id, grace)
    ready = []
    for unit, rev in units:
        reason = busy or _unit_busy(live, deletion, tree, cache, item, unit, rev)
        if reason:
            skipped[unit.path] = reason
        else:
            ready.append((unit, rev))
    return _Checked(deletion, tree, cache, item, [unit for unit, _ in units], ready)


def _remove_group(run: _Run) -> None:
    """The run's checked models: the "started" lines of all their units flushed at once, then each removed.

    Each unit goes only if the run is not stopping (:meth:`_Run.go`); one that does not, or
    whose line could not be written, is "not attempted". The finishers that came due wait
    until the group went: between a unit's checks and its removal lie only the group's.
    """
    group, run.group = run.group, []
    units = [unit for checked in group for unit, _ in checked.ready]
    n = run.start(units) if units and not run.halted() else 0
    dropped = {unit.path for unit in units[n:]}
    for c in group:
        gone: list[tuple[PlanUnit, Revision]] = []
        for unit, rev in c.ready:
            if unit.path not in dropped and run.go(unit):
                gone += _remove_revisions(run, c.deletion, c.tree, c.cache, c.item, [(unit, rev)])
            else:
                dropped.add(unit.path)
        handled = [unit for unit in c.handled if unit.path not in dropped]
        _remove_rest(run, c.deletion, c.tree, c.cache, c.item, gone, handled, flush=False)
    run.flush(wait=len(run.pending) >= MAX_PENDING)


def _remove_revisions(
    run: _Run, deletion: Deletion, tree: Tree, cache: CacheInventory, item: Item, go: list[tuple[PlanUnit, Revision]]
) -> list[tuple[PlanUnit, Revision]]:
    """Revisions whose "started" lines are on disk, removed; returns those that went."""
    gone = []
    for unit, rev in go:
        freed, error = deletion.remove_revision(tree, cache, item, unit, rev, run.out)
        run.out[unit.path].add(freed, error)
        if not error:
            gone.append((unit, rev))
    return gone


def _remove_rest(
    run: _Run,
    deletion: Deletion,
    tree: Tree,
    cache: CacheInventory,
    item: Item,
    gone: list[tuple[PlanUnit, Revision]],
    handled: list[PlanUnit],
    *,
    flush: bool = True,
) -> None:
    """What the revisions that went shared and no other uses; ``handled`` reported once that is done."""
    leaving = {rev.revision for unit, rev in gone}
    stay = [r for r in item.revisions if r.revision not in leaving]
    finisher = deletion.remove_rest(tree, cache, item, gone, stay, run.out) if gone else None
    run.later(tree, finisher, handled, flush=flush)


def _run_model(
    run: _Run,
    live: LiveChecks,
    deletion: Deletion,
    tree: Tree,
    cache: CacheInventory,
    item: Item,
    units: list[tuple[PlanUnit, Revision]],
    grace: float,
) -> None:
    """The planned revisions of one model, each checked and re-validated just before it goes; then what they shared.

    One at a time: whether a revision is now the model's last depends on those removed before it.
    """
    busy = live.item_busy(deletion, tree, cache, item.path, item.id, grace)
    gone: list[tuple[PlanUnit, Revision]] = []
    handled: list[PlanUnit] = []
    for unit, rev in units:
        if run.halted():
            break
        handled.append(unit)
        reason = busy or _unit_busy(live, deletion, tree, cache, item, unit, rev)
        if reason:
            run.skipped[unit.path] = reason
            continue
        if run.start([unit]) != 1 or not run.go(unit):
            handled.pop()
            break
        gone += _remove_revisions(run, deletion, tree, cache, item, [(unit, rev)])
    _remove_rest(run, deletion, tree, cache, item, gone, handled)


def _run_files(
    run: _Run,
    live: LiveChecks,
    deletion: Deletion,
    tree: Tree,
    cache: CacheInventory,
    item: Item,
    units: list[tuple[PlanUnit, Revision]],
    grace: float,
) -> None:
    """The planned files of one model's revisions, each checked just before it goes; then the blobs they left unused."""
    if not isinstance(deletion, FileDeletion):  # (_prepare matched no file unit of such a kind)
        return
    busy = live.item_busy(deletion, tree, cache, item.path, item.id, grace)
    left: dict[str, str] = {}  # what a removed file left for remove_file_rest -> the unit it counts to
    handled: list[PlanUnit] = []
    for unit, rev in units:
        if run.halted():
            break
        handled.append(unit)
        reason = busy or live.file_busy(unit)
        if reason:
            run.skipped[unit.path] = reason
            continue
        if run.start([unit]) != 1 or not run.go(unit):
            handled.pop()
            break
        freed, error, rest = deletion.remove_file(tree, cache, item, unit, rev)
        run.out[unit.path].add(freed, error)
        if rest is not None:
            left[rest] = unit.path  # the last file to leave a blob frees it, as the plan counted
    finisher = deletion.remove_file_rest(tree, cache, item, left, run.out) if left else None
    run.later(tree, finisher, handled)
