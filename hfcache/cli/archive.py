"""``hfcache archive ls`` and ``hfcache restore``: what an archive holds, and bringing units back into a cache."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hfcache.cli.app import (
    CacheDirOption,
    FormatOption,
    JsonOption,
    KindOption,
    LockWaitOption,
    OutputFormat,
    QuietOption,
    VerboseOption,
    _format,
    _progress,
    _user_errors,
    app,
)
from hfcache.errors import EXIT_PARTIAL, UsageError
from hfcache.output import render
from hfcache.units import describe_size, iso, parse_duration

if TYPE_CHECKING:
    from collections.abc import Iterable

    from hfcache.archive.store import Archive
    from hfcache.caches.protocol import CacheKind

archive_app = typer.Typer(
    name="archive",
    help="What an archive (prune --archive-to DEST) holds.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(archive_app)

DestArgument = Annotated[
    str, typer.Argument(metavar="DEST", help="The archive: a folder, or an fsspec URL (s3://bucket/prefix).")
]


def _open(dest: str) -> tuple[Archive, list[dict[str, Any]]]:
    """The archive at ``dest`` and its well-formed manifests (the others said, one warning each); exit 2 for no archive."""
    from hfcache.archive.store import Archive

    archive = Archive(dest)
    if not archive.exists():
        raise UsageError(f"{dest} is not an hfcache archive (no hfcache-archive.json there)", path=dest)
    manifests = archive.manifests()
    for problem in archive.warnings:
        render.warning(problem)
    return archive, manifests


@archive_app.command("ls")
def archive_ls(
    dest: DestArgument,
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Every unit in the archive: kind, id, revision, refs, size, when and from which host it was archived.

    Example: hfcache archive ls /mnt/cold/hf-archive
    """
    fmt = _format(output_format, as_json)
    with _user_errors(verbose=verbose):
        _, manifests = _open(dest)
    if fmt is OutputFormat.json:
        render.json_document({"version": 1, "archive": dest, "units": manifests})
        return
    if fmt is OutputFormat.ids:
        render.raw("".join(f"{m['id']}@{m['revision']}\n" for m in manifests))
        return
    from hfcache.output.archives import archive_table

    archive_table(dest, manifests, markdown=fmt is OutputFormat.markdown)


def _restore_plans(
    dest: str, manifests: list[dict[str, Any]], targets: list[str], cache_dirs: list[str], only: list[str] | None
) -> list[tuple[dict[str, Any], str, str, str]]:
    """What ``restore`` brings back: (manifest, cache root, its lock file, its scratch folder) per unit; exit 2 for a
    target that names nothing, a kind not installed, or a unit with no cache of its kind to go to."""
    from hfcache.archive.restore import matching
    from hfcache.caches.registry import registry

    kinds = registry().kinds
    for name in only or ():
        if name not in kinds:
            raise UsageError(f"--kind {name}: no such kind (one of {', '.join(sorted(kinds))})")
    if only:
        manifests = [m for m in manifests if m.get("kind") in only]
    chosen: list[dict[str, Any]] = []
    for target in targets:
        found = matching(manifests, target)
        if not found:
            raise UsageError(f"{target}: not in the archive {dest} (hfcache archive ls {dest})")
        chosen.extend(m for m in found if m not in chosen)
    plans = []
    roots: dict[str, str | None] = {}
    new: dict[str, set[str]] = {}
    for m in chosen:
        of = kinds.get(str(m.get("kind")))
        if of is None:
            raise UsageError(f"{m.get('id')}: kind {m.get('kind')!r} is not installed here")
        if of.kind not in roots:  # (each kind's place looked for once, not once per unit: every kind reads each folder)
            roots[of.kind] = root = _restore_root(of, cache_dirs, set(only or ()), kinds.values())
            if root is not None and not (os.path.isdir(root) and of.recognizes(root)):  # a new folder: now of this kind
                new.setdefault(root, set()).add(of.kind)
        root = roots[of.kind]
        if root is None and not cache_dirs:
            raise UsageError(f"{m.get('id')}: no cache of kind {of.kind} here; use --cache-dir")
        if root is None:
            raise UsageError(
                f"{m.get('id')}: no --cache-dir is a cache of kind {of.kind} (a new, empty one takes it with --kind {of.kind})"
            )
        plans.append((m, root, os.path.join(root, of.lock_file), os.path.dirname(of.lock_file)))
    for root, took in new.items():
        if len(took) > 1:
            kinds_said = ", ".join(sorted(took))
            raise UsageError(f"--cache-dir {root}: a new folder takes one kind's units, not {kinds_said} (use --kind)")
    return plans


def _restore_root(of: CacheKind, cache_dirs: list[str], chosen: set[str], every: Iterable[CacheKind]) -> str | None:
    """Where a unit of kind ``of`` goes: its kind's default cache, or the ``--cache-dir`` that is a cache of its kind.

    A new or empty folder takes it when it is the only ``--cache-dir``, or when ``--kind`` names
    its kind; a cache of another kind never does (a hub revision written into a torch hub cache
    is lost to both libraries), nor a folder of other things no kind recognises (``$HF_HOME``
    for its ``hub/``, ``~/.cache/torch`` for its ``hub/``, a home folder: no library would look
    there).
    """
    if not cache_dirs:
        roots = of.default_roots(dict(os.environ))[:1]
        return os.path.abspath(roots[0]) if roots else None
    for root in cache_dirs:
        if os.path.isdir(root) and of.recognizes(root):
            return os.path.abspath(root)
    for root in cache_dirs:
        if _unused(root) and not any(k.recognizes(root) for k in every) and (of.kind in chosen or len(cache_dirs) == 1):
            return os.path.abspath(root)
    return None


def _unused(root: str) -> bool:
    """Whether ``root`` is not there yet, or is a folder holding nothing but OS litter and a killed restore's own files."""
    from hfcache.archive.restore import SCRATCH
    from hfcache.caches._common import FILES_TO_IGNORE

    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return not os.path.lexists(root)  # (a dangling symlink is not a new folder)
    except OSError:
        return False
    return not set(names) - FILES_TO_IGNORE - {SCRATCH}


@app.command()
def restore(
    dest: DestArgument,
    targets: Annotated[
        list[str], typer.Argument(metavar="ID[@REV]...", help="What to bring back: a model id, @ a revision or ref.")
    ],
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
    lock_wait: LockWaitOption = "10s",
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Bring archived revisions back into the cache, as their library lays them out, each file's hash checked.

    Restores into the default cache of each unit's kind, or into the --cache-dir that is a
    cache of its kind (a new, empty folder when it is the only one, or with --kind; --kind
    also takes only that kind's units). Nothing in the cache is overwritten: what is already
    there stays (a newer ref is never moved back). Exit 1 when a unit could not be restored,
    2 when a target names nothing in the archive.

    Example: hfcache restore /mnt/cold/hf-archive meta-llama/Llama-3.2-1B@main
    """
    from hfcache.archive.restore import Restored, restore_manifest
    from hfcache.execute.prune_lock import PruneLocks

    fmt = _format(output_format, as_json)
    with _user_errors(verbose=verbose):
        archive, manifests = _open(dest)
        plans = _restore_plans(dest, manifests, targets, list(cache_dir or ()), kind)
        results: list[Restored] = []
        with (
            _progress(not quiet),
            PruneLocks({root: lock for _, root, lock, _ in plans}, float(parse_duration(lock_wait))) as locks,
        ):
            for m, root, _, scratch in plans:
                if root in locks.failed:
                    results.append(Restored(m, root, error=f"the prune lock of {root}: {locks.failed[root]}"))
                    continue
                results.append(restore_manifest(archive, m, root, scratch_in=scratch))
    if fmt is OutputFormat.json:
        render.json_document(
            {
                "version": 1,
                "archive": dest,
                "restored_at": iso(time.time()),
                "units": [
                    {
                        "kind": r.manifest.get("kind"),
                        "id": r.manifest.get("id"),
                        "revision": r.manifest.get("revision"),
                        "root": r.root,
                        "status": "failed" if r.error else "restored",
                        "written_bytes": r.written,
                        "already_there": r.present,
                        "notes": list(r.notes),
                        "error": r.error,
                    }
                    for r in results
                ],
            }
        )
    else:
        for r in results:
            what = f"{r.manifest.get('id')}@{str(r.manifest.get('revision'))[:12]}"
            if r.error:
                render.error(f"{what}: {r.error}")
            else:
                render.note(
                    f"{what}: restored into {r.root} ({describe_size(r.written)} written, {r.present} file(s) already there)"
                )
            for note in r.notes:
                render.warning(f"{what}: {note}")
    if any(r.error for r in results):
        raise typer.Exit(EXIT_PARTIAL)
