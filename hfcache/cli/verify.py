"""``hfcache verify``: every cached file hashed against what its cache says it should be, offline."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hfcache.caches.scan import scan_caches
from hfcache.cli.app import (
    CacheDirOption,
    DryRunOption,
    FormatOption,
    JsonOption,
    KindOption,
    LockWaitOption,
    LogOption,
    NameOption,
    OutputFormat,
    QuietOption,
    StateOption,
    TypeOption,
    VerboseOption,
    YesOption,
    _format,
    _jobs,
    _no_collection,
    _progress,
    _scope,
    _user_errors,
    app,
)
from hfcache.cli.prune import _refuse_outputs_in_caches
from hfcache.errors import EXIT_CORRUPT
from hfcache.model import Inventory, Item, Revision
from hfcache.output import render
from hfcache.plan.query import names_revision

if TYPE_CHECKING:
    from hfcache.plan.decisions import Plan
    from hfcache.verify.memo import Memo
    from hfcache.verify.run import FileCheck, VerifyReport


@app.command()
def verify(
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
    item_type: TypeOption = None,
    name: NameOption = None,
    revision: Annotated[
        Optional[list[str]],
        typer.Option("--revision", metavar="REV", help="Only this revision: a commit (or its start), a ref (repeatable)."),
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Hash every file, even those unchanged since an earlier verify.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="List every file checked, not only corrupt and missing ones.")] = False,
    state: StateOption = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=0, metavar="N", help="Hash N files at once; 0 (default): one per CPU.")
    ] = 0,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Take what is corrupt or missing out of the cache (kept in a quarantine folder first), through prune's checks.",
        ),
    ] = False,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    lock_wait: LockWaitOption = "10s",
    log: LogOption = None,
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Check every cached file against the hash its cache keeps for it, offline: ok, corrupt, missing or unverifiable.

    A hub blob is named by the sha256 (or git hash) of its content, a torch checkpoint by the
    start of its sha256. Files are read without moving their access times or evicting what
    the page cache held; a file unchanged since an earlier verify is not read again (--full
    reads it). Nothing is written into a cache. Exit 8 when a file is corrupt or missing.

    Example: hfcache verify --name 'meta-llama/*' --jobs 8
    """
    from hfcache.caches.registry import registry
    from hfcache.state import state_path
    from hfcache.verify.memo import Reuse
    from hfcache.verify.run import verify as run_verify
    from hfcache.verify.state import State

    fmt = _format(output_format, as_json)
    with _user_errors(verbose=verbose), _no_collection():
        scope = _scope(item_type, name, kind)
        wanted = tuple(revision or ())

        def chosen(item: Item, rev: Revision) -> bool:
            if not scope.holds(item):
                return False
            return not wanted or any(names_revision(w, rev.revision, rev.refs) for w in wanted)

        path = state_path(state)
        if path is not None:  # before it is opened (made): the roots given and every kind's default, what is scanned
            _refuse_outputs_in_caches(cache_dir or (), state=path)
        # A repo unchanged since a verify judged it whole is counted from its memo, not walked
        # (hfcache.verify.memo); not when every file is to be listed or judged one by one.
        lists_files = show_all or fmt is OutputFormat.json
        memos, early = (None, []) if full or wanted or lists_files else _memos_in(path)

        def scan_and_verify(reuse: Reuse | None) -> tuple[Inventory, VerifyReport]:
            with _progress(not quiet):
                # Scanned as scan scans by default (worker processes: 0.7 s -> 0.4 s of a 100,000-file
                # repeat run on 2 CPUs), each revision's files listed so they are not walked again.
                inventory = scan_caches(
                    cache_dir or None, kinds=kind or None, jobs=_jobs(0), ledger=False, listing=True, skip=reuse
                )
            db = State(path)
            try:
                with _progress(not quiet):
                    report = run_verify(
                        inventory,
                        kinds=registry().kinds,
                        chosen=chosen,
                        jobs=jobs or os.cpu_count() or 1,
                        full=full,
                        state=db,
                        reused=reuse.hits if reuse is not None else None,
                        make_memos=not lists_files,
                    )
            finally:
                db.close()
            return inventory, report

        inventory, report = scan_and_verify(Reuse(memos, scope.holds_id, jobs=_jobs(0)) if memos is not None else None)
        if report.changed_memos:  # a repo counted from its memo changed while others were read: all judged anew
            inventory, report = scan_and_verify(None)
    if repair and report.problems:
        _repair(report, inventory, fmt=fmt, quiet=quiet, dry_run=dry_run, yes=yes, lock_wait=lock_wait, log=log, verbose=verbose)
        return
    if fmt is OutputFormat.json:
        from hfcache.output.serialize import verify_to_dict

        with _no_collection():
            render.json_document(verify_to_dict(report))
    elif fmt is OutputFormat.ids:
        render.raw("".join(f"{f.path}\n" for c in report.caches for f in c.files if f.status in ("corrupt", "missing")))
    else:
        from hfcache.output import views

        views.verify_tables(report, show_all=show_all, markdown=fmt is OutputFormat.markdown)
    if not quiet:
        for warning in [*early, *report.warnings]:
            render.warning(warning)
        if not any(c.exists for c in inventory.caches):
            render.note("No model caches found: nothing to verify (hfcache scan says where it looked).")
        for cache in inventory.caches:
            render.warnings(cache)  # what the scan found odd (a damaged model is still verified)
    if report.problems:
        raise typer.Exit(EXIT_CORRUPT)


def _memos_in(path: str | None) -> tuple[dict[str, Memo], list[str]]:
    """The memos of the state database at ``path``, and its warnings (a corrupt one moved aside, ...).

    Read only when it exists: a verify that fails at its scan makes no database.
    """
    from hfcache.verify.state import State

    if path is None or not os.path.exists(path):
        return {}, []
    db = State(path)
    try:
        return db.memos(), db.warnings
    finally:
        db.close()


def _repair(
    report: VerifyReport,
    inventory: Inventory,
    *,
    fmt: OutputFormat,
    quiet: bool,
    dry_run: bool,
    yes: bool,
    lock_wait: str,
    log: str | None,
    verbose: int,
) -> None:
    """``--repair``: the plan that takes the damaged files out, through prune's question, checks and audit log.

    The verify's findings are shown first (JSON: only the repair's document, on stdout); each
    corrupt content is kept in the quarantine folder once the question is answered, before
    anything is deleted. Exit 8 when something damaged stays (a dry run), 1 when a unit
    could not go, 0 when everything damaged left the cache.
    """
    import time

    from hfcache.caches.registry import registry
    from hfcache.cli.prune import _Run
    from hfcache.units import parse_duration
    from hfcache.verify.repair import damaged, default_quarantine, repair_plan

    if fmt not in (OutputFormat.json, OutputFormat.ids):
        from hfcache.output import views

        views.verify_tables(report, markdown=fmt is OutputFormat.markdown)
    with _user_errors(verbose=verbose):
        plan = repair_plan(inventory, report, registry().kinds, now=time.time())
        folder = os.path.join(os.path.dirname(os.path.abspath(log)), "quarantine") if log else default_quarantine()
        _refuse_outputs_in_caches((c.root for c in inventory.caches), quarantine=folder, log=log)
        found = damaged(report)
        run = _Run(
            yes=yes,
            fmt=fmt,
            quiet=quiet,
            lock_wait=float(parse_duration(lock_wait)),
            log=log,
            named=True,
            prepare=lambda plan: _kept(plan, found, folder),
        )
        if dry_run:
            run.emit(plan)
            raise typer.Exit(EXIT_CORRUPT)
        run(plan, None)  # hashing took time: the plan is checked against a fresh scan


def _kept(plan: Plan, found: list[FileCheck], folder: str) -> tuple[Plan, list[str]]:
    """Once the question is answered: each corrupt content kept in quarantine; what changed since the verify stays."""
    from hfcache.verify import repair

    notes, changed = repair.quarantine(found, folder)
    if changed:
        notes.append(f"{len(changed)} file(s) changed since the verify judged them: not repaired (a next verify checks them)")
    return repair.without_changed(plan, changed), notes
