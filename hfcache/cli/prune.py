"""``hfcache prune`` and ``hfcache apply``: a plan, the question, execution, the report and its exit code."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hfcache import interrupt
from hfcache.caches.registry import registry
from hfcache.caches.scan import scan_caches
from hfcache.cli.app import (
    CacheDirOption,
    DryRunOption,
    FormatOption,
    JobsOption,
    JsonOption,
    KindOption,
    LockWaitOption,
    LogOption,
    NameOption,
    OutputFormat,
    PruneAgeBy,
    QuietOption,
    StateOption,
    TypeOption,
    VerboseOption,
    YesOption,
    _format,
    _jobs,
    _progress,
    _remember,
    _scope,
    _user_errors,
    app,
)
from hfcache.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, ConfirmationRequired
from hfcache.output import render
from hfcache.units import parse_duration, parse_size

if TYPE_CHECKING:
    from hfcache.model import Inventory
    from hfcache.plan.decisions import Execution, Plan, PlanUnit


class KeepPer(str, Enum):
    major = "major"
    minor = "minor"


def _emit(
    plan: Plan, fmt: OutputFormat, *, execution: Execution | None = None, show_keep: bool = False, quiet: bool = False
) -> None:
    """The plan, or with ``execution`` the record of its run, in the chosen format; warnings on stderr."""
    from hfcache.plan.planfile import plan_to_dict

    if fmt is OutputFormat.json:
        render.json_document(plan_to_dict(plan, execution))
    elif fmt is OutputFormat.ids:
        units = plan.delete if execution is None else tuple(r.unit for r in execution.results if r.status == "deleted")
        render.raw("".join(f"{unit_ident(u)}\n" for u in units))
    else:
        from hfcache.output import views  # Rich's tables: only when one is shown

        views.plan_tables(plan, execution=execution, show_keep=show_keep, markdown=fmt is OutputFormat.markdown)
    if not quiet:
        render.plan_warnings(plan if execution is None else execution)


ShowKeptOption = Annotated[
    bool, typer.Option("--show-kept", help="Also list the units a rule keeps, and why (they are counted either way).")
]


def unit_ident(unit: PlanUnit) -> str:
    """A unit for scripts: ``id@revision`` for a revision, its path for junk (which has no revision)."""
    return f"{unit.id}@{unit.revision}" if unit.what == "revision" and unit.id else unit.path


def _cache_roots(roots: Iterable[str]) -> list[str]:
    """``roots`` and the default root of every known kind: the caches no output file may land in."""
    found = dict.fromkeys(roots)
    for kind in registry().kinds.values():
        try:
            found.update(dict.fromkeys(kind.default_roots(os.environ)))
        except Exception:  # noqa: BLE001 - a plug-in's broken default only loses an extra check
            continue
    return list(found)


def _refuse_outputs_in_caches(roots: Iterable[str], **outputs: str | None) -> None:
    """Exit 2 when an output file (``plan_out="plan.json"`` for ``--plan-out``) resolves into a cache."""
    from hfcache.output.files import refuse_in_caches

    every = _cache_roots(roots)
    for option, path in outputs.items():
        if path:
            refuse_in_caches(path, every, "--" + option.replace("_", "-"))


def note_prune_run(state: str | None, plan: Plan, result: Execution | None, *, quiet: bool = False) -> None:
    """Note a prune that ran (not a dry run) in the state database, per cache: units deleted and failed (for metrics'
    "last prune" gauges; a problem there is a warning)."""
    if state is None:
        return
    from hfcache.history.store import record_prune
    from hfcache.state import StateDB

    kinds = {c.root: c.kind for c in plan.caches}
    deleted = dict.fromkeys(kinds, 0)
    failed = dict.fromkeys(kinds, 0)
    for r in result.results if result is not None else ():
        kinds.setdefault(r.unit.root, r.unit.kind)
        if r.status == "deleted":
            deleted[r.unit.root] = deleted.get(r.unit.root, 0) + 1
        elif r.status == "failed":
            failed[r.unit.root] = failed.get(r.unit.root, 0) + 1
    runs = [(kind, root, deleted.get(root, 0), failed.get(root, 0)) for root, kind in kinds.items()]
    with StateDB(state) as db:
        record_prune(db, time.time(), runs)
        for problem in [] if quiet else db.warnings:
            render.warning(problem)


@dataclass(frozen=True)
class _Run:
    """How ``prune`` and ``apply`` carry out a plan: confirmation, lock wait, audit log."""

    yes: bool
    fmt: OutputFormat
    quiet: bool
    lock_wait: float
    log: str | None
    show_kept: bool = False
    # hfcache rm: what was named and not removed (kept for damage, skipped by a live check) is exit 1
    named: bool = False
    # Run once the question is answered, before anything is deleted (verify --repair: the quarantine); its notes are said
    prepare: Callable[[Plan], tuple[Plan, list[str]]] | None = None
    # The state database a prune's run is recorded in (prune and apply: for metrics' "last prune" gauges)
    state: str | None = None
    # Processes deleting models at once (--jobs; 0: the machine's default)
    jobs: int = 0

    def _record(self, plan: Plan, result: Execution | None) -> None:
        note_prune_run(self.state, plan, result, quiet=self.quiet)

    def emit(self, plan: Plan, *, execution: Execution | None = None) -> None:
        _emit(plan, self.fmt, execution=execution, show_keep=self.show_kept and execution is None, quiet=self.quiet)

    def _nothing(self, plan: Plan) -> None:
        """Nothing to delete: said; with --yes, what an interrupted prune left half-done is finished."""
        if self.yes:
            from hfcache.prune import repair

            notes = repair(plan, lock_wait=self.lock_wait)
            plan = replace(plan, warnings=(*notes, *plan.warnings)) if notes else plan
        self.emit(plan)
        self._record(plan, None)
        if self.named and plan.keep:
            raise typer.Exit(EXIT_PARTIAL)

    def _confirmed(self, plan: Plan) -> bool:
        """The question on a terminal (the plan as a table first); refused with no terminal to ask on."""
        if not sys.stdin.isatty():
            self.emit(plan)
            raise ConfirmationRequired(
                "refusing to delete without confirmation: no terminal to ask on; add --yes (or use --dry-run)"
            )
        _emit(plan, OutputFormat.table, show_keep=self.show_kept)  # a question on a terminal: always the table
        if not typer.confirm(f"Delete these {len(plan.delete)} units?", default=False):
            render.note("Nothing deleted.")
            return False
        return True

    def _prepared(self, plan: Plan) -> Plan:
        """What ``prepare`` makes of the plan once the question is answered (its notes said)."""
        assert self.prepare is not None
        plan, lines = self.prepare(plan)
        for line in [] if self.quiet else lines:
            render.note(line)
        return plan

    def __call__(self, plan: Plan, inventory: Inventory | None) -> None:
        """Ask on a terminal (unless --yes), refuse without one, then execute and report.

        Exit 1 when units failed; 130 when a signal stopped the execution (the units done
        so far are reported, the rest skipped).
        """
        from hfcache.prune import run_plan

        if self.named and plan.keep:
            from hfcache.output.words import describe_all

            for unit in plan.keep:
                named = f"{unit.id}@{unit.revision}" if unit.revision else str(unit.id)
                named += f" {unit.file}" if unit.file else ""
                render.warning(f"{named} stays: {'; '.join(describe_all(unit.reasons[1:]))}")
        if not plan.delete:
            self._nothing(plan)
            return
        roots = [*(c.root for c in plan.caches), *(u.root for u in plan.delete)]
        if inventory is not None:
            roots += [c.root for c in inventory.caches]
        _refuse_outputs_in_caches(roots, log=self.log)
        if not self.yes:
            if not self._confirmed(plan):
                return
            inventory = None  # time passed while the question was open: check against a fresh scan
        if self.prepare is not None:
            with _progress(not self.quiet):  # an archive's copies take their time: a bar on a terminal
                plan = self._prepared(plan)
            inventory = None  # the preparation took its time (an archive's uploads): check against a fresh scan
            if not plan.delete:
                self.emit(plan)
                return
        interrupt.reset()  # a signal noted before this point was raised, not deferred: stale
        with interrupt.deferred():
            with _progress(not self.quiet):
                result = run_plan(plan, inventory, lock_wait=self.lock_wait, log=self.log, jobs=_jobs(self.jobs))
            self._record(result.plan, result)
            try:
                self.emit(result.plan, execution=result)
            except OSError:
                if not interrupt.requested():
                    raise  # SIGHUP: the terminal may be gone; the audit log has the record
        stopped = result.stopped  # a signal, or the audit log could not be written
        if interrupt.requested():
            done = "stopped after the unit under way; the rest was not deleted" if stopped else "the run had ended"
            render.error(f"{interrupt.reason()}: {done}")
            raise typer.Exit(EXIT_INTERRUPTED)
        if stopped:
            render.error(f"{stopped}: stopped before the next unit; the rest was not deleted")
            raise typer.Exit(EXIT_PARTIAL)
        if result.failed or (self.named and (plan.keep or any(r.status != "deleted" for r in result.results))):
            raise typer.Exit(EXIT_PARTIAL)


@app.command()
def prune(
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
    item_type: TypeOption = None,
    name: NameOption = None,
    max_age: Annotated[
        Optional[str],
        typer.Option("--max-age", metavar="AGE", help="Delete revisions not used for AGE (30d, 12h, 2w; s m h d w)."),
    ] = None,
    keep: Annotated[
        Optional[int],
        typer.Option("--keep", metavar="N", help="Per model, keep the N latest revisions (by version, else by date) and main."),
    ] = None,
    keep_per: Annotated[
        Optional[KeepPer], typer.Option("--keep-per", help="With --keep: keep N in each major or minor version series.")
    ] = None,
    max_size: Annotated[
        Optional[str],
        typer.Option("--max-size", metavar="SIZE", help="Then evict least recently used until each cache is under SIZE."),
    ] = None,
    min_free: Annotated[
        Optional[str],
        typer.Option(
            "--min-free", metavar="SIZE|PCT", help="Then evict until the file system has SIZE (20GB) or PCT (10%) free."
        ),
    ] = None,
    junk: Annotated[
        bool, typer.Option("--junk", help="Delete stale partial downloads, orphan blobs, unreferenced payloads, leftovers.")
    ] = False,
    junk_grace: Annotated[
        Optional[str], typer.Option("--junk-grace", metavar="AGE", help="Junk younger than AGE stays (default 24h).")
    ] = None,
    protect: Annotated[
        Optional[list[str]],
        typer.Option(
            "--protect", metavar="GLOB", help="Never delete models whose id matches GLOB, e.g. 'meta-llama/*' (repeatable)."
        ),
    ] = None,
    age_by: Annotated[
        Optional[PruneAgeBy],
        typer.Option(
            "--age-by",
            help="Age and LRU order by last access (atime, default), modification, or use (the usage history, else atime).",
        ),
    ] = None,
    min_uses: Annotated[
        Optional[int],
        typer.Option(
            "--min-uses",
            metavar="N",
            help="Delete revisions used on fewer than N days of the --window (LFU, from the usage history).",
        ),
    ] = None,
    window: Annotated[
        Optional[str], typer.Option("--window", metavar="AGE", help="With --min-uses: the days counted (default 30d).")
    ] = None,
    allow_remove_all: Annotated[
        bool, typer.Option("--allow-remove-all", help="Let --keep-less policies (quotas) remove a model's last revision.")
    ] = False,
    archive_to: Annotated[
        Optional[str],
        typer.Option(
            "--archive-to",
            metavar="DEST",
            help="Copy each revision to this archive (a folder, s3://...), verified, before it leaves the cache.",
        ),
    ] = None,
    config: Annotated[
        Optional[str],
        typer.Option("--config", metavar="FILE", help="Policy file (YAML); default $HFCACHE_CONFIG, then the usual places."),
    ] = None,
    no_config: Annotated[bool, typer.Option("--no-config", help="Ignore policy files: only the command line counts.")] = False,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    plan_out: Annotated[
        Optional[str], typer.Option("--plan-out", metavar="FILE", help="Also save the plan as JSON, for 'hfcache apply'.")
    ] = None,
    lock_wait: LockWaitOption = "10s",
    log: LogOption = None,
    show_kept: ShowKeptOption = False,
    state: StateOption = None,
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
    jobs: JobsOption = 0,
) -> None:
    """Delete what retention policies select, after showing the plan with a reason for every unit.

    A unit goes when at least one policy selects it and no protection or keep rule saves
    it; --max-size and --min-free run last, over what survives.

    --kind, --type and --name scope a prune: only those items' revisions and junk
    may go; nothing else is deleted or listed (nor junk of no item, such as shared
    payloads). Quotas still measure the whole cache (--max-size) and file system
    (--min-free) but evict only in the scope; the plan says if that falls short.
    A --name that matches nothing is a warning, not an error.

    Example: hfcache prune --keep 2 --max-age 90d --protect 'meta-llama/*' --dry-run
    """
    from hfcache.history.watch import state_path
    from hfcache.plan.settings import MinFree, Settings
    from hfcache.prune import (
        archive_units,
        archives_of,
        build_policy,
        check_access_times,
        desired_of,
        plan_prune,
        usage_for,
        write_plan,
    )

    fmt = _format(output_format, as_json)
    with _user_errors(verbose=verbose):
        overrides = Settings(
            max_age=float(parse_duration(max_age)) if max_age is not None else None,
            keep=keep,
            keep_per=keep_per.value if keep_per else None,
            age_by=age_by.value if age_by else None,
            max_size=parse_size(max_size) if max_size is not None else None,
            min_free=MinFree.parse(min_free) if min_free is not None else None,
            junk=True if junk else None,
            junk_grace=float(parse_duration(junk_grace)) if junk_grace is not None else None,
            allow_remove_all=True if allow_remove_all else None,
            min_uses=min_uses,
            window=float(parse_duration(window)) if window is not None else None,
            archive_to=archive_to or None,
        )
        policy = build_policy(overrides, protect=tuple(protect or ()), config=config, use_config=not no_config)
        scope = _scope(item_type, name, kind)  # a bad --type is refused before the scan
        archives = archives_of(policy)  # a URL no back-end serves is refused before the scan

        def archive(plan: Plan) -> tuple[Plan, list[str]]:
            return archive_units(plan, policy)

        run = _Run(
            yes=yes,
            fmt=fmt,
            quiet=quiet,
            lock_wait=float(parse_duration(lock_wait)),
            log=log,
            show_kept=show_kept,
            prepare=archive if archives else None,
            state=state_path(state),
            jobs=jobs,
        )
        with _progress(not quiet):
            inventory = scan_caches(cache_dir or None, kinds=kind or None, jobs=_jobs(jobs))
        # Before the plan is written and anything deleted: no output file may land in a cache.
        _refuse_outputs_in_caches((c.root for c in inventory.caches), plan_out=plan_out, log=None if dry_run else log)
        for dest in archives:
            local = dest.removeprefix("file://") if dest.startswith("file://") or "://" not in dest else None
            if local is not None:  # a folder: never inside a cache
                _refuse_outputs_in_caches((c.root for c in inventory.caches), archive_to=local)
        _remember(inventory, state, quiet=quiet)  # before the plan: a process using a model now is a use now
        notes = check_access_times(inventory, policy)
        usage, problems = usage_for(inventory, policy, state_path(state))
        wanted = desired_of(state_path(state))
        notes += problems
        plan = plan_prune(inventory, policy, scope, usage, wanted)
        if plan_out:
            write_plan(plan, plan_out)
        if not quiet:
            for message in notes:
                render.warning(message)
        if dry_run:
            run.emit(plan)
        else:
            run(plan, inventory)


@app.command()
def apply(
    plan_file: Annotated[str, typer.Argument(metavar="FILE", help="A plan saved by 'hfcache prune --plan-out FILE'.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show the saved plan, delete nothing.")] = False,
    yes: YesOption = False,
    lock_wait: LockWaitOption = "10s",
    log: LogOption = None,
    show_kept: ShowKeptOption = False,
    state: StateOption = None,
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
    jobs: JobsOption = 0,
) -> None:
    """Execute a saved plan: each unit only if the cache still holds it unchanged (else it is skipped).

    Example: hfcache prune --max-age 30d --plan-out plan.json --dry-run && hfcache apply plan.json --yes
    """
    from hfcache.history.watch import state_path
    from hfcache.prune import desired_of, hold_desired, read_plan

    with _user_errors(verbose=verbose):
        run = _Run(
            yes=yes,
            fmt=_format(output_format, as_json),
            quiet=quiet,
            lock_wait=float(parse_duration(lock_wait)),
            log=log,
            show_kept=show_kept,
            state=state_path(state),
            jobs=jobs,
        )
        plan = read_plan(plan_file)
        plan = hold_desired(plan, desired_of(state_path(state)))  # a revision wanted since the plan was made stays
        if dry_run:
            run.emit(plan)
        else:
            run(plan, None)
