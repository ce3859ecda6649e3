"""``hfcache rm``: remove named repos, revisions or items, through the same plan, checks and audit as ``prune``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

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
    OutputFormat,
    QuietOption,
    StateOption,
    VerboseOption,
    YesOption,
    _format,
    _jobs,
    _progress,
    _user_errors,
    app,
)
from hfcache.cli.prune import ShowKeptOption, _refuse_outputs_in_caches, _Run
from hfcache.units import parse_duration


@app.command("rm")
def rm(
    targets: Annotated[
        list[str],
        typer.Argument(
            metavar="TARGET...",
            help=(
                "What to remove: a repo id (org/name), id@revision (a ref or a commit), an hf:// URI"
                " (hf://org/name/file: that file of every revision), another kind's item id."
            ),
        ),
    ],
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
    item_type: Annotated[
        Optional[str],
        typer.Option("--type", metavar="TYPE", help="Only items of this type (model, dataset, space, checkpoint, ...)."),
    ] = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    lock_wait: LockWaitOption = "10s",
    log: LogOption = None,
    show_kept: ShowKeptOption = False,
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    state: StateOption = None,
    verbose: VerboseOption = 0,
    jobs: JobsOption = 0,
) -> None:
    """Remove named models or revisions: the plan, the question and the safety checks of prune.

    A target names nothing in the caches scanned: nothing is removed (exit 2). A revision refs
    point to goes with its refs, and the plan says so; a model's last revision takes the model.

    Example: hfcache rm meta-llama/Llama-3.1-8B@v1.0 hf://datasets/org/data --dry-run
    """
    from hfcache.history.watch import state_path
    from hfcache.plan.removal import parse_target, removal_plan
    from hfcache.prune import desired_of, hold_desired

    fmt = _format(output_format, as_json)
    with _user_errors(verbose=verbose):
        kinds = [k for k in registry().kinds.values() if not kind or k.kind in kind]
        wanted = [parse_target(t, item_type=item_type, kinds=kinds) for t in targets]  # refused before the scan
        run = _Run(
            yes=yes,
            fmt=fmt,
            quiet=quiet,
            lock_wait=float(parse_duration(lock_wait)),
            log=log,
            show_kept=show_kept,
            named=True,
            jobs=jobs,
        )
        with _progress(not quiet):
            inventory = scan_caches(cache_dir or None, kinds=kind or None, jobs=_jobs(jobs))
        _refuse_outputs_in_caches((c.root for c in inventory.caches), log=None if dry_run else log)
        plan = removal_plan(inventory, wanted, now=inventory.scanned_at, chosen_kinds=kind or ())
        plan = hold_desired(plan, desired_of(state_path(state)))  # what hfcache sync keeps on this node stays
        if dry_run:
            run.emit(plan)
        else:
            run(plan, inventory)
