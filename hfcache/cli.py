"""The ``hfcache`` command: parse options, call the library, render, exit with a documented code."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hfcache import __version__, interrupt, progress
from hfcache.caches.registry import registry, select_kinds
from hfcache.caches.scan import scan_caches
from hfcache.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PARTIAL, ConfirmationRequired, HfcacheError, UsageError
from hfcache.output import render
from hfcache.parallel import auto_jobs
from hfcache.plan.query import Selection, parse_sort, select
from hfcache.units import parse_duration, parse_size

# What only prune, apply and metrics need (policy files, deletion, psutil) is imported by
# them, so that `hfcache scan` starts faster (every command starts with a scan).
if TYPE_CHECKING:
    from hfcache.model import Inventory
    from hfcache.plan.decisions import Execution, Plan

app = typer.Typer(
    name="hfcache",
    help="Inventory and housekeeping for local ML model caches (Hugging Face hub, torch hub, Keras and more).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


class AgeBy(str, Enum):
    atime = "atime"
    mtime = "mtime"


@contextmanager
def _user_errors(*, verbose: int = 0) -> Iterator[None]:
    """Domain errors become one line on stderr and their exit code, never a traceback; sets up ``--verbose``."""
    render.setup_logging(verbose)
    try:
        yield
    except HfcacheError as e:
        render.error(str(e))
        raise typer.Exit(e.exit_code) from None


@contextmanager
def _progress(enabled: bool) -> Iterator[None]:
    """A progress bar on stderr (when it is a terminal) for the work inside, gone before any output."""
    with render.progress_bar(enabled) as listener, progress.listening(listener):
        yield


def _jobs(jobs: int) -> int:
    """``--jobs``: 0 picks the default from the machine (:func:`hfcache.parallel.auto_jobs`)."""
    return jobs or auto_jobs()


def _format(output_format: OutputFormat, as_json: bool) -> OutputFormat:
    return OutputFormat.json if as_json else output_format


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hfcache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """Inventory and housekeeping for local ML model caches.

    Example: hfcache scan --revisions --sort size
    """


def _complete_kind(incomplete: str) -> list[str]:
    return [k for k in registry().kinds if k.startswith(incomplete)]


def _complete_type(incomplete: str) -> list[str]:
    types = dict.fromkeys(t for k in registry().kinds.values() for t in k.types)
    return [t for t in types if t.startswith(incomplete)]


def _check_types(types: list[str], kinds: list[str] | None) -> frozenset[str]:
    """Refuse an item type none of the selected kinds has (a typo would silently show nothing)."""
    known = dict.fromkeys(t for k in select_kinds(kinds or None, registry()) for t in k.types)
    for t in types:
        if t not in known:
            raise UsageError(f"unknown item type {t!r}; known here: {', '.join(known)}")
    return frozenset(types)


CacheDirOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--cache-dir",
        metavar="PATH",
        help="Use this cache root instead of the default ones; its kind is recognised, or set by --kind (repeatable).",
    ),
]
KindOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--kind",
        metavar="NAME",
        autocompletion=_complete_kind,
        help="Only this kind (repeatable): huggingface, torch, keras, xet, datasets, kagglehub, transformers-legacy.",
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", help="table for people, json for programs, markdown for a CI job summary."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Same as --format json.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No warnings, notes or progress bar on stderr.")]
VerboseOption = Annotated[
    int,
    typer.Option(
        "--verbose", "-v", count=True, help="Log what is done to stderr: -v each cache and unit, -vv every file operation."
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking (needed when there is no terminal).")]
JobsOption = Annotated[
    int,
    typer.Option(
        "--jobs",
        "-j",
        min=0,
        metavar="N",
        help="Scan hub repos with N worker processes; 0 (default): one per CPU, at least 4, at most 8; 1: none.",
    ),
]
LockWaitOption = Annotated[
    str,
    typer.Option(
        "--lock-wait",
        metavar="AGE",
        help="Wait this long (10s, 5m) for another prune of the same cache to finish, then exit 75 (busy).",
    ),
]
LogOption = Annotated[
    Optional[str],
    typer.Option("--log", metavar="FILE", help="Append the audit log (one JSON line per deleted unit) here instead."),
]


@app.command()
def scan(
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
    revisions: Annotated[bool, typer.Option("--revisions", help="One row per revision instead of per repo.")] = False,
    sort: Annotated[
        str, typer.Option("--sort", metavar="KEY[:asc|desc]", help="Order by name, size, accessed or modified.")
    ] = "name",
    item_type: Annotated[
        Optional[list[str]],
        typer.Option(
            "--type",
            metavar="TYPE",
            autocompletion=_complete_type,
            help="Only items of this type: model, dataset, space, kernel, checkpoint, hub-repo, ... (repeatable).",
        ),
    ] = None,
    name: Annotated[
        Optional[list[str]],
        typer.Option("--name", metavar="GLOB", help="Only item ids matching this glob, e.g. 'meta-llama/*' (repeatable)."),
    ] = None,
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
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
    jobs: JobsOption = 0,
) -> None:
    """Show what the model caches hold: models, revisions, refs, versions, sizes and ages.

    Every kind of cache found is shown (Hugging Face hub, torch hub, Keras, Xet, datasets,
    kagglehub, transformers < 4.22), each where its library would put it.

    Example: hfcache scan --kind torch --revisions --larger-than 1GB --sort size
    """
    fmt = _format(output_format, as_json)
    from hfcache.output.serialize import inventory_to_dict

    with _user_errors(verbose=verbose):
        selection = Selection(
            types=_check_types(item_type or [], kind),
            names=tuple(name or ()),
            larger_than=parse_size(larger_than) if larger_than is not None else None,
            smaller_than=parse_size(smaller_than) if smaller_than is not None else None,
            older_than=parse_duration(older_than) if older_than is not None else None,
            newer_than=parse_duration(newer_than) if newer_than is not None else None,
            age_by=age_by.value,
            revisions=revisions,
        )
        parse_sort(sort)  # refuse a bad key before the (possibly long) scan
        with _progress(not quiet):
            inventory = scan_caches(cache_dir or None, kinds=kind or None, jobs=_jobs(jobs), ledger=False)
        shown = select(inventory, selection, now=inventory.scanned_at, sort=sort)
    everything = not kind and not cache_dir
    if fmt is OutputFormat.json:
        render.json_document(inventory_to_dict(shown))
    else:
        render.scan_tables(
            shown,
            revisions=revisions,
            filtered=not selection.is_empty,
            show_missing=not everything,
            markdown=fmt is OutputFormat.markdown,
        )
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


class KeepPer(str, Enum):
    major = "major"
    minor = "minor"


def _emit(
    plan: Plan, fmt: OutputFormat, *, execution: Execution | None = None, show_keep: bool = True, quiet: bool = False
) -> None:
    """The plan, or with ``execution`` the record of its run, in the chosen format; warnings on stderr."""
    from hfcache.plan.planfile import plan_to_dict

    if fmt is OutputFormat.json:
        render.json_document(plan_to_dict(plan, execution))
    else:
        render.plan_tables(plan, execution=execution, show_keep=show_keep, markdown=fmt is OutputFormat.markdown)
    if not quiet:
        render.plan_warnings(plan if execution is None else execution)


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


@dataclass(frozen=True)
class _Run:
    """How ``prune`` and ``apply`` carry out a plan: confirmation, lock wait, audit log."""

    yes: bool
    fmt: OutputFormat
    quiet: bool
    lock_wait: float
    log: str | None

    def emit(self, plan: Plan, *, execution: Execution | None = None, show_keep: bool = True) -> None:
        _emit(plan, self.fmt, execution=execution, show_keep=show_keep, quiet=self.quiet)

    def __call__(self, plan: Plan, inventory: Inventory | None) -> None:
        """Ask on a terminal (unless --yes), refuse without one, then execute and report.

        Exit 1 when units failed; 130 when a signal stopped the execution (the units done
        so far are reported, the rest skipped).
        """
        from hfcache.prune import run_plan

        if not plan.delete:
            if self.yes:  # nothing to delete, but what an interrupted prune left half-done is finished
                from hfcache.prune import repair

                notes = repair(plan, lock_wait=self.lock_wait)
                plan = replace(plan, warnings=(*notes, *plan.warnings)) if notes else plan
            self.emit(plan)
            return
        roots = [*(c.root for c in plan.caches), *(u.root for u in plan.delete)]
        if inventory is not None:
            roots += [c.root for c in inventory.caches]
        _refuse_outputs_in_caches(roots, log=self.log)
        if not self.yes:
            if not sys.stdin.isatty():
                self.emit(plan)
                raise ConfirmationRequired(
                    "refusing to delete without confirmation: no terminal to ask on; add --yes (or use --dry-run)"
                )
            _emit(plan, OutputFormat.table)  # a question on a terminal: always the table
            if not typer.confirm(f"Delete these {len(plan.delete)} units?", default=False):
                render.note("Nothing deleted.")
                return
            inventory = None  # time passed while the question was open: check against a fresh scan
        # A signal while the plan executes and its results are printed is only noted
        # (hfcache.interrupt): execution stops between two units, never inside one.
        interrupt.reset()  # a signal noted before this point was raised, not deferred: stale
        with interrupt.deferred():
            with _progress(not self.quiet):
                result = run_plan(plan, inventory, lock_wait=self.lock_wait, log=self.log)
            try:
                self.emit(result.plan, execution=result, show_keep=False)
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
        if result.failed:
            raise typer.Exit(EXIT_PARTIAL)


@app.command()
def prune(
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
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
        Optional[AgeBy], typer.Option("--age-by", help="Age and LRU order by last access (atime, default) or modification.")
    ] = None,
    allow_remove_all: Annotated[
        bool, typer.Option("--allow-remove-all", help="Let --keep-less policies (quotas) remove a model's last revision.")
    ] = False,
    config: Annotated[
        Optional[str],
        typer.Option("--config", metavar="FILE", help="Policy file (YAML); default $HFCACHE_CONFIG, then the usual places."),
    ] = None,
    no_config: Annotated[bool, typer.Option("--no-config", help="Ignore policy files: only the command line counts.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show the plan, delete nothing.")] = False,
    yes: YesOption = False,
    plan_out: Annotated[
        Optional[str], typer.Option("--plan-out", metavar="FILE", help="Also save the plan as JSON, for 'hfcache apply'.")
    ] = None,
    lock_wait: LockWaitOption = "10s",
    log: LogOption = None,
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
    jobs: JobsOption = 0,
) -> None:
    """Delete what retention policies select, after showing the plan with a reason for every unit.

    A unit goes when at least one policy selects it and no protection or keep rule saves
    it; --max-size and --min-free run last, over what survives.

    Example: hfcache prune --keep 2 --max-age 90d --protect 'meta-llama/*' --dry-run
    """
    from hfcache.plan.settings import MinFree, Settings
    from hfcache.prune import build_policy, check_access_times, plan_prune, write_plan

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
        )
        policy = build_policy(overrides, protect=tuple(protect or ()), config=config, use_config=not no_config)
        run = _Run(yes=yes, fmt=fmt, quiet=quiet, lock_wait=float(parse_duration(lock_wait)), log=log)
        with _progress(not quiet):
            inventory = scan_caches(cache_dir or None, kinds=kind or None, jobs=_jobs(jobs))
        # Before the plan is written and anything deleted: no output file may land in a cache.
        _refuse_outputs_in_caches((c.root for c in inventory.caches), plan_out=plan_out, log=None if dry_run else log)
        notes = check_access_times(inventory, policy)
        plan = plan_prune(inventory, policy)
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
    output_format: FormatOption = OutputFormat.table,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Execute a saved plan: each unit only if the cache still holds it unchanged (else it is skipped).

    Example: hfcache prune --max-age 30d --plan-out plan.json --dry-run && hfcache apply plan.json --yes
    """
    from hfcache.prune import read_plan

    with _user_errors(verbose=verbose):
        run = _Run(yes=yes, fmt=_format(output_format, as_json), quiet=quiet, lock_wait=float(parse_duration(lock_wait)), log=log)
        plan = read_plan(plan_file)
        if dry_run:
            run.emit(plan)
        else:
            run(plan, None)


@app.command()
def metrics(
    cache_dir: CacheDirOption = None,
    kind: KindOption = None,
    textfile: Annotated[
        Optional[str],
        typer.Option(
            "--textfile",
            metavar="PATH",
            help="Write atomically to PATH (for node_exporter's textfile collector, *.prom) instead of stdout.",
        ),
    ] = None,
    log: Annotated[
        Optional[str], typer.Option("--log", metavar="FILE", help="The audit log to read the last prunes from.")
    ] = None,
    verbose: VerboseOption = 0,
    jobs: JobsOption = 0,
) -> None:
    """The inventory as Prometheus metrics: bytes per cache and model, partial downloads, free space, last prune.

    Example: hfcache metrics --textfile /var/lib/node_exporter/textfile_collector/hfcache.prom
    """
    from hfcache.execute.audit import read_log
    from hfcache.fs.system import disk_of
    from hfcache.output.metrics import last_prunes, render_metrics, write_textfile

    with _user_errors(verbose=verbose):
        inventory = scan_caches(cache_dir or None, kinds=kind or None, jobs=_jobs(jobs), ledger=False)
        disks = {c.root: disk_of(c.root) for c in inventory.caches if c.exists}
        text = render_metrics(inventory, disks, last_prunes(read_log(log)))
        if textfile:
            _refuse_outputs_in_caches((c.root for c in inventory.caches), textfile=textfile)
            write_textfile(text, textfile)
        else:
            render.raw(text)


# Ctrl-C, SIGTERM (systemd stop, docker stop, Kubernetes) and SIGHUP (terminal gone) all stop a
# run with exit 130: at once, or after the unit under way while a plan executes (interrupt.deferred).
_Interrupted = interrupt.Interrupted
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def main() -> None:
    """Entry point of the ``hfcache`` command and ``python -m hfcache``."""
    interrupt.reset()
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup, `cmd &` in a script: still ignored
            signal.signal(signum, interrupt.handle)
    # A scan makes a few hundred thousand small, acyclic objects that live until the process
    # ends: collect rarely (and never the modules already loaded). On a 100,000-file cache this
    # takes `hfcache scan --json` from 2.1 s to 1.7 s (benchmarks/README.md).
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        app()
    except (_Interrupted, KeyboardInterrupt):
        render.error(interrupt.reason() if interrupt.requested() else "interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except HfcacheError as e:  # raised outside a command body (should not happen, but never a traceback)
        render.error(str(e))
        sys.exit(e.exit_code)
    except Exception as e:  # only main() catches broadly: a bug must still not print a traceback by default
        if render.debug_enabled():
            raise
        render.error(f"internal error: {type(e).__name__}: {e} (set HFCACHE_DEBUG=1 for the traceback)")
        sys.exit(EXIT_INTERNAL)


def run() -> None:
    """The ``hfcache`` command: :func:`main`, then out without tearing the interpreter down.

    Freeing a big inventory object by object at exit takes tens of milliseconds (about 3%
    of `hfcache scan --json` on a 100,000-file cache) and nothing needs it: every output is
    flushed and every file hfcache writes (plans, the audit log) is closed by then.
    """
    try:
        main()
        code = 0
    except SystemExit as e:
        if e.code is not None and not isinstance(e.code, int):
            raise  # a message to print: the interpreter's own exit does that
        code = e.code or 0
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader left (`| head`): exit 1, as Rich does when a table hits it
        code = code or 1
    os._exit(code)
