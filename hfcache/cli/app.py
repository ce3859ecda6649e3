"""The ``hfcache`` command: parse options, call the library, render, exit with a documented code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from hfcache import __version__, progress
from hfcache.caches.registry import registry, select_kinds
from hfcache.errors import HfcacheError, UsageError
from hfcache.output import render
from hfcache.parallel import auto_jobs

# What only prune, apply and metrics need (policy files, deletion, psutil) is imported by
# them, so that `hfcache scan` starts faster (every command starts with a scan).
if TYPE_CHECKING:
    pass

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
