"""``hfcache sync``: make this node hold what a manifest lists, keep it there, and optionally prune the rest."""

from __future__ import annotations

import os
from typing import Annotated, Any, Optional

import typer

from hfcache.cli.app import (
    CacheDirOption,
    FormatOption,
    JobsOption,
    JsonOption,
    LockWaitOption,
    LogOption,
    OutputFormat,
    QuietOption,
    StateOption,
    VerboseOption,
    _format,
    _jobs,
    _progress,
    _remember,
    _user_errors,
    app,
)
from hfcache.errors import EXIT_PARTIAL, UsageError
from hfcache.output import render
from hfcache.units import describe_size, parse_duration


@app.command()
def sync(
    manifest: Annotated[str, typer.Argument(metavar="MANIFEST", help="The YAML manifest of what this node must hold.")],
    cache_dir: CacheDirOption = None,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Then apply this node's policy file to the rest, without asking (what it lists stays)."),
    ] = False,
    warm: Annotated[bool, typer.Option("--warm", help="Then ask the kernel to read the listed files into memory.")] = False,
    config: Annotated[
        Optional[str], typer.Option("--config", metavar="FILE", help="With --prune: the policy file (default: the usual places).")
    ] = None,
    state: StateOption = None,
    lock_wait: LockWaitOption = "10s",
    log: LogOption = None,
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
    jobs: JobsOption = 0,
) -> None:
    """Download what MANIFEST lists that is missing, with the owning library, and keep it from every policy.

    Each entry names a repo id, a revision and, optionally, which files. What is already there
    is not downloaded again. The revisions listed are kept by prune, apply and rm from then on
    (desired.json beside the state database remembers them; a new sync of the same manifest
    replaces the list).
    Exit 1 when an entry could not be fetched.

    Example: hfcache sync /etc/hfcache/node-models.yaml --prune
    """
    from hfcache.caches.registry import registry
    from hfcache.desired import record
    from hfcache.history.watch import state_path
    from hfcache.sync import desired_rows, load_manifest, report
    from hfcache.sync import sync as run_sync
    from hfcache.sync import warm as warm_files

    fmt = _format(output_format, as_json)
    with _user_errors(verbose=verbose):
        kinds = registry().kinds
        entries = load_manifest(manifest, kinds=kinds)
        roots = {}
        for entry in entries:
            kind = kinds[entry.kind]
            found = list(cache_dir or ()) or kind.default_roots(dict(os.environ))[:1]
            if not found:
                raise UsageError(f"no cache of kind {entry.kind} here; use --cache-dir")
            roots[entry.kind] = os.path.abspath(found[0])
        with _progress(not quiet):
            results = run_sync(entries, kinds=kinds, roots=roots)
        warmed = warm_files(results) if warm else 0
        path = state_path(state)
        problems: list[str] = []
        rows = desired_rows(results, roots)
        if path is not None:
            failed = [(r.entry.kind, r.entry.wanted.id) for r in results if r.status == "failed"]
            try:
                record(path, os.path.abspath(manifest), rows, failed=failed)
            except OSError as e:
                problems.append(f"what the manifest lists cannot be recorded ({e.strerror or e}): prune does not keep it")
        else:
            problems.append("--state off: what the manifest lists is fetched but not kept from later prunes")
        doc = report(os.path.abspath(manifest), results, warmed=warmed)
        # --prune keeps what this sync just fetched, whatever the state database did.
        this = {row["path"]: os.path.abspath(manifest) for row in rows}
        pruned = _prune(roots, config, state, lock_wait, log, quiet, this, jobs) if prune else None
    for problem in [] if quiet else problems:
        render.warning(problem)
    if fmt is OutputFormat.json:
        render.json_document({**doc, "prune": pruned})
    else:
        for r in doc["entries"]:
            what = f"{r['id']}@{r['revision'] or 'main'}"
            if r["status"] == "failed":
                render.error(f"{what}: not fetched: {r['error']}")
            elif not quiet:
                got = (
                    f"fetched {r['files_fetched']} file(s), {describe_size(r['bytes_fetched'])}"
                    if r["files_fetched"]
                    else "already here"
                )
                render.note(f"{what} ({str(r['resolved'])[:12]}): {got}")
        if pruned is not None and not quiet:
            render.note(f"pruned: {len(pruned['delete'])} unit(s), {describe_size(pruned.get('freed_bytes') or 0)} freed")
    if any(r["status"] == "failed" for r in doc["entries"]) or (
        pruned and any(u.get("status") == "failed" for u in pruned["delete"])
    ):
        raise typer.Exit(EXIT_PARTIAL)


def _prune(
    roots: dict[str, str],
    config: str | None,
    state: str | None,
    lock_wait: str,
    log: str | None,
    quiet: bool,
    this: dict[str, str],
    jobs: int = 0,
) -> Any:
    """The node's policy over the synced caches, what the manifests want protected; the plan and its run, as JSON."""
    from hfcache.caches.scan import scan_caches
    from hfcache.cli.prune import note_prune_run
    from hfcache.history.watch import state_path
    from hfcache.plan.planfile import plan_to_dict
    from hfcache.plan.settings import Settings
    from hfcache.prune import build_policy, desired_of, plan_prune, run_plan

    policy = build_policy(Settings(), config=config)  # no policy anywhere: a usage error, as for prune
    inventory = scan_caches(list(dict.fromkeys(roots.values())), kinds=list(roots), jobs=_jobs(jobs))
    _remember(inventory, state, quiet=quiet)  # a prune's run is recorded in the usage history, as prune's
    plan = plan_prune(inventory, policy, desired={**desired_of(state_path(state)), **this})
    if not plan.delete:
        note_prune_run(state_path(state), plan, None, quiet=quiet)
        return plan_to_dict(plan)
    with _progress(not quiet):
        result = run_plan(plan, inventory, lock_wait=float(parse_duration(lock_wait)), log=log, jobs=_jobs(jobs))
    note_prune_run(state_path(state), result.plan, result, quiet=quiet)
    return plan_to_dict(result.plan, result)
