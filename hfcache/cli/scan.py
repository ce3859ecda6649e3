"""``hfcache scan``: the inventory as a table, Markdown or JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from hfcache.caches.registry import registry
from hfcache.caches.scan import scan_caches
from hfcache.cli.app import (
    AgeBy,
    CacheDirOption,
    FormatOption,
    JobsOption,
    JsonOption,
    KindOption,
    NameOption,
    OutputFormat,
    QuietOption,
    StateOption,
    TypeOption,
    VerboseOption,
    _format,
    _jobs,
    _progress,
    _remember,
    _scope,
    _user_errors,
    app,
)
from hfcache.errors import UsageError
from hfcache.model import Inventory
from hfcache.output import render
from hfcache.plan.query import Scope, Selection, parse_sort, revision_rows, select
from hfcache.units import parse_duration, parse_size

if TYPE_CHECKING:
    pass


@app.command()
def scan(
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
    revisions: Annotated[bool, typer.Option("--revisions", help="One row per revision instead of per repo.")] = False,
    sort: Annotated[
        str, typer.Option("--sort", metavar="KEY[:asc|desc]", help="Order by name, size, accessed or modified.")
    ] = "name",
    item_type: TypeOption = None,
    name: NameOption = None,
    larger_than: Annotated[
        Optional[str], typer.Option("--larger-than", metavar="SIZE", help="Only entries bigger than SIZE (500MB, 2GiB).")
    ] = None,
    smaller_than: Annotated[
        Optional[str], typer.Option("--smaller-than", metavar="SIZE", help="Only entries smaller than SIZE.")
    ] = None,
    older_than: Annotated[
        Optional[str], typer.Option("--older-than", metavar="AGE", help="Only entries not used for AGE (30d, 12h, 2w).")
    ] = None,
    newer_than: Annotated[
        Optional[str], typer.Option("--newer-than", metavar="AGE", help="Only entries used within AGE.")
    ] = None,
    age_by: Annotated[
        AgeBy, typer.Option("--age-by", help="Measure age by last access (atime) or last modification (mtime).")
    ] = AgeBy.atime,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", metavar="N", min=1, help="Only the first N rows in this order (items, or revisions)."),
    ] = None,
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    archive: Annotated[
        Optional[str],
        typer.Option("--archive", metavar="DEST", help="Also list the revisions archived in DEST that are not in the caches."),
    ] = None,
    all_users: Annotated[
        bool,
        typer.Option("--all-users", help="Every account's caches (as root): per-account totals, models cached twice."),
    ] = False,
    passwd: Annotated[
        Optional[str],
        typer.Option("--passwd", metavar="FILE", help="With --all-users: the accounts of this passwd file (a host's)."),
    ] = None,
    state: StateOption = None,
    verbose: VerboseOption = 0,
    jobs: JobsOption = 0,
) -> None:
    """Show what the model caches hold: models, revisions, refs, versions, sizes and ages.

    Every kind of cache found is shown (Hugging Face hub, torch hub, ModelScope, TF Hub, vLLM's
    compile cache, Keras, Xet, datasets, kagglehub, Ollama, transformers < 4.22, llama.cpp's
    flat cache), each where its library would put it.

    Example: hfcache scan --kind torch --revisions --larger-than 1GB --sort size
    """
    fmt = _format(output_format, as_json)
    from hfcache.output.serialize import inventory_to_dict

    if all_users or passwd:
        with _user_errors(verbose=verbose):
            if cache_dir:
                raise UsageError("--all-users scans each account's own places: it takes no --cache-dir")
            _all_users(passwd, kind, fmt, quiet=quiet, jobs=jobs)
        return
    with _user_errors(verbose=verbose):
        scope = _scope(item_type, name, kind)
        selection = Selection(
            types=scope.types,
            names=scope.names,
            larger_than=parse_size(larger_than) if larger_than is not None else None,
            smaller_than=parse_size(smaller_than) if smaller_than is not None else None,
            older_than=parse_duration(older_than) if older_than is not None else None,
            newer_than=parse_duration(newer_than) if newer_than is not None else None,
            age_by=age_by.value,
            revisions=revisions,
        )
        parse_sort(sort)  # refuse a bad key before the (possibly long) scan
        with _progress(not quiet):
            # With --revisions the footer counts the blobs of the revisions shown, each once: the ledger has them.
            inventory = scan_caches(cache_dir or None, kinds=kind or None, jobs=_jobs(jobs), ledger=revisions)
        _remember(inventory, state, quiet=quiet)
        shown = select(inventory, selection, now=inventory.scanned_at, sort=sort, limit=limit)
        archived = _archived(archive, inventory, scope) if archive else None
    everything = not kind and not cache_dir
    if fmt is OutputFormat.json:
        document = inventory_to_dict(shown)
        if archived is not None:
            document["archived"] = archived
        render.json_document(document)
    elif fmt is OutputFormat.ids:
        if revisions:
            rows = [f"{item.id}@{rev.revision}" for cache in shown.caches for item, rev in revision_rows(cache, sort)]
        else:
            rows = [item.id for cache in shown.caches for item in cache.items]
        render.raw("".join(f"{row}\n" for row in rows))
    else:
        from hfcache.output import views  # Rich's tables: only when one is shown

        views.scan_tables(
            shown,
            revisions=revisions,
            filtered=not selection.is_empty or limit is not None,
            show_missing=not everything,
            markdown=fmt is OutputFormat.markdown,
            sort=sort,
        )
        if archived is not None and archive:
            from hfcache.output.archives import archive_table

            archive_table(f"Archived in {archive}, not in the caches", archived, markdown=fmt is OutputFormat.markdown)
    if quiet:
        return
    for problem in registry().problems:
        render.warning(problem)
    missing = [c for c in inventory.caches if not c.exists]
    if everything and len(missing) == len(inventory.caches):
        render.note("No model caches found: nothing cached yet. Looked in:")
        for cache in missing:
            render.note(f"  {cache.root} ({cache.title or cache.kind})")
    elif not everything:
        for cache in missing:
            render.note(f"No {cache.title or cache.kind} at {cache.root} yet: nothing cached.")
    for cache in inventory.caches:
        render.warnings(cache)


def _archived(dest: str, inventory: Inventory, scope: Scope) -> list[dict[str, Any]]:
    """The manifests of ``dest`` whose revision no scanned cache holds (in the scope), each revision once."""
    from hfcache.archive.restore import merged
    from hfcache.archive.store import Archive

    archive = Archive(dest)
    if not archive.exists():
        raise UsageError(f"{dest} is not an hfcache archive (no hfcache-archive.json there)", path=dest)
    here = {(c.kind, i.id, r.revision) for c in inventory.caches for i in c.items for r in i.revisions}
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for m in archive.manifests():
        key = (m["kind"], m["id"], m["revision"])
        if key not in here and scope.holds_id(m["id"], m.get("type")):
            groups.setdefault(key, []).append(m)
    for problem in archive.warnings:
        render.warning(problem)
    return [merged(found) for _, found in sorted(groups.items())]


def _all_users(passwd: str | None, kind: list[str] | None, fmt: OutputFormat, *, quiet: bool, jobs: int) -> None:
    """``scan --all-users``: each account's caches, totals, and the models several accounts cache."""
    import os

    from hfcache.caches.accounts import accounts, scan_accounts, shared

    if not quiet and hasattr(os, "geteuid") and os.geteuid() != 0:
        render.warning("not root: other accounts' caches may not be readable, and are then left out or counted short")
    with _progress(not quiet):
        scanned = scan_accounts(accounts(passwd), kinds=kind or None, jobs=_jobs(jobs))
    twice = shared(scanned)
    for account, _ in scanned if not quiet else ():
        if account.unreadable:
            render.warning(f"{account.name}: {account.home} cannot be read by this account: its caches are unknown")
    if fmt is OutputFormat.json:
        from hfcache.output.serialize import accounts_to_dict

        render.json_document(accounts_to_dict(scanned, twice))
    else:
        from hfcache.output.views import accounts_tables

        accounts_tables(scanned, twice, markdown=fmt is OutputFormat.markdown)
