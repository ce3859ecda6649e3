"""The ``hfcache`` command: parse options, call the library, render, exit with a documented code."""

from __future__ import annotations

import gc
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from hfcache import __version__, progress
from hfcache.caches.registry import KINDS, registry, select_kinds
from hfcache.errors import HfcacheError, UsageError
from hfcache.model import Disk, Inventory
from hfcache.output import render
from hfcache.parallel import auto_jobs
from hfcache.plan.query import Scope

# What only prune, apply and metrics need (policy files, deletion, psutil) is imported by
# them, so that `hfcache scan` starts faster (every command starts with a scan).

# Click's base error, from Typer's own class: Typer vendors click from 0.26 on, and before that
# used the real one; either way this is the class its usage errors derive from.
_ClickException: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def usage_error_line(e: Any) -> str:
    """A usage error as one line, as hfcache's own errors are, with where help is."""
    message = " ".join(str(e.format_message()).split())
    ctx = getattr(e, "ctx", None)
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


def reflow(text: str | None) -> str | None:
    r"""A docstring's paragraphs each as one line, for the help to wrap at the terminal's width.

    Typer keeps a docstring's line breaks inside paragraphs, so help came out ragged ("saves" /
    "it;") at any width but the source's. A paragraph whose lines are indented or are list
    items ("- ") keeps its breaks.

    >>> reflow("First line.\n\nOne paragraph\nin two lines.\n\n- a\n- b")
    'First line.\n\nOne paragraph in two lines.\n\n- a\n- b'
    """
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if _laid_out(p) else " ".join(p.split("\n")) for p in paragraphs)


def _laid_out(paragraph: str) -> bool:
    """Whether a paragraph's line breaks are its layout (indented lines, list items, click's \\b)."""
    return any(line.startswith((" ", "- ", "\b")) for line in paragraph.splitlines())


class _Group(TyperGroup):
    """Typer's group: help paragraphs reflowed (:func:`reflow`); usage errors as one line on stderr and exit 2.

    (Typer draws a box around usage errors.)
    """

    def main(  # type: ignore[override]  # the same parameters, spelt out
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        for command in self.commands.values():
            command.help = reflow(command.help)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `hfcache` alone: the help, as a usage error (2)
                e.show()  # type: ignore[attr-defined]
            else:
                render.error(usage_error_line(e))
            sys.exit(getattr(e, "exit_code", 2))
        except typer.Abort:  # end of input at a question
            render.error("aborted: nothing deleted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# A flag takes no value, so help shows none (Typer writes <bool> and <int> after flags and -v),
# and an argument's name says what it is (Typer adds <str>). Choices stay: they are the valid values.
_type_column = TyperOption.display_type_rich


def _flag_type_column(self: TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag or self.count else _type_column(self, ctx)


TyperOption.display_type_rich = _flag_type_column  # type: ignore[method-assign]
TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]

app = typer.Typer(
    name="hfcache",
    help="Inventory and housekeeping for local ML model caches (Hugging Face hub, torch hub, Keras and more).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=_Group,
)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    ids = "ids"


class AgeBy(str, Enum):
    atime = "atime"
    mtime = "mtime"


class PruneAgeBy(str, Enum):
    """``prune --age-by``: also ``use``, the usage history's last use (``hfcache.history``)."""

    atime = "atime"
    mtime = "mtime"
    use = "use"


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


@contextmanager
def _no_collection() -> Iterator[None]:
    """No garbage collection inside, nor of what was made inside: for many acyclic records kept to the end.

    ``main`` already collects rarely (every 100,000 new objects); a 100,000-file ``verify``
    still made 7 collections of 100,000 young records each (expected digests, verdicts,
    database rows), which found nothing and took 0.1 to 0.2 s of a repeat run. At the end
    every object then tracked is frozen, as ``main`` freezes the modules (:func:`gc.freeze`):
    else the first collection after would go through all of it (60 ms). A frozen object is
    still freed when no longer used; only a reference cycle among them stays until the
    process ends (for ``hfcache``, right after the command).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


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


def _scope(types: list[str] | None, names: list[str] | None, kinds: list[str] | None) -> Scope:
    """``--type`` (checked against the kinds selected) and ``--name``: which items a command looks at."""
    return Scope(types=_check_types(types or [], kinds), names=tuple(names or ()))


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
        help=f"Only this kind (repeatable): {', '.join(KINDS)}.",
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        help="table for people, json for programs, markdown for a CI job summary, ids for scripts (id or id@revision).",
    ),
]
TypeOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--type",
        metavar="TYPE",
        autocompletion=_complete_type,
        help="Only items of this type: model, dataset, space, kernel, checkpoint, hub-repo, ... (repeatable).",
    ),
]
NameOption = Annotated[
    Optional[list[str]],
    typer.Option("--name", metavar="GLOB", help="Only item ids matching this glob, e.g. 'meta-llama/*' (repeatable)."),
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
DryRunOption = Annotated[bool, typer.Option("--dry-run", "-n", help="Show the plan, delete nothing.")]
JobsOption = Annotated[
    int,
    typer.Option(
        "--jobs",
        "-j",
        min=0,
        metavar="N",
        help=(
            "Scan hub repos (and, deleting, remove them) with N worker processes; "
            "0 (default): one per CPU, at least 4, at most 8; 1: none."
        ),
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
StateOption = Annotated[
    Optional[str],
    typer.Option(
        "--state",
        metavar="FILE",
        help="The state database (usage history, verify digests); default $HFCACHE_STATE, else the user state folder; "
        "'off': none.",
    ),
]


def _remember(inventory: Inventory, state: str | None, *, quiet: bool = False, disks: dict[str, Disk] | None = None) -> None:
    """Record this run in the usage history (``hfcache.history``); its problems are warnings, never a failure.

    A database that would lie in a cache is not written (hfcache writes nothing into a
    cache): said, and the run goes on without remembering.
    """
    from hfcache.cli.prune import _refuse_outputs_in_caches
    from hfcache.history.watch import remember_run, state_path

    path = state_path(state)
    problems = []
    if path is not None:
        try:
            _refuse_outputs_in_caches((c.root for c in inventory.caches), state=path)
        except UsageError as e:
            problems.append(f"{e}: nothing is remembered this run")
            path = None
    problems.extend(remember_run(inventory, path, disks=disks))
    for problem in [] if quiet else problems:
        render.warning(problem)
