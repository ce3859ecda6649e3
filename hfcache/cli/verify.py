"""``hfcache verify``: every cached file hashed against what its cache says it should be, offline."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from hfcache.caches.scan import scan_caches
from hfcache.cli.app import (
    CacheDirOption,
    FormatOption,
    JsonOption,
    KindOption,
    NameOption,
    OutputFormat,
    QuietOption,
    TypeOption,
    VerboseOption,
    _format,
    _progress,
    _scope,
    _user_errors,
    app,
)
from hfcache.cli.prune import _refuse_outputs_in_caches
from hfcache.errors import EXIT_CORRUPT
from hfcache.model import Item, Revision
from hfcache.output import render


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
    state: Annotated[
        Optional[str],
        typer.Option("--state", metavar="FILE", help="The state database (default $HFCACHE_STATE, else the user state folder)."),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=0, metavar="N", help="Hash N files at once; 0 (default): one per CPU.")
    ] = 0,
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
    from hfcache.verify.run import verify as run_verify
    from hfcache.verify.state import default_state_path, open_state

    fmt = _format(output_format, as_json)
    with _user_errors(verbose=verbose):
        scope = _scope(item_type, name, kind)
        wanted = tuple(revision or ())

        def chosen(item: Item, rev: Revision) -> bool:
            if not scope.holds(item):
                return False
            return not wanted or any(
                w == rev.revision or w in rev.refs or (len(w) >= 7 and rev.revision.startswith(w)) for w in wanted
            )

        with _progress(not quiet):
            inventory = scan_caches(cache_dir or None, kinds=kind or None, ledger=False)
        path = state or default_state_path()
        _refuse_outputs_in_caches((c.root for c in inventory.caches), state=path)
        db = open_state(path)
        try:
            with _progress(not quiet):
                report = run_verify(
                    inventory, kinds=registry().kinds, chosen=chosen, jobs=jobs or os.cpu_count() or 1, full=full, state=db
                )
        finally:
            db.close()
    if fmt is OutputFormat.json:
        from hfcache.output.serialize import verify_to_dict

        render.json_document(verify_to_dict(report))
    elif fmt is OutputFormat.ids:
        render.raw("".join(f"{f.path}\n" for c in report.caches for f in c.files if f.status in ("corrupt", "missing")))
    else:
        from hfcache.output import views

        views.verify_tables(report, show_all=show_all, markdown=fmt is OutputFormat.markdown)
    if not quiet:
        for warning in report.warnings:
            render.warning(warning)
    if report.problems:
        raise typer.Exit(EXIT_CORRUPT)
