"""The ``hfcache`` command: parse options, call the library, render, exit with a documented code."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Optional

import typer

from . import __version__, render
from .caches import scan_caches
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, HfcacheError
from .query import Selection, parse_sort, select
from .serialize import inventory_to_dict
from .units import parse_duration, parse_size

app = typer.Typer(
    name="hfcache",
    help="Inventory and housekeeping for local ML model caches (Hugging Face hub first).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


class RepoType(str, Enum):
    model = "model"
    dataset = "dataset"
    space = "space"
    kernel = "kernel"


class AgeBy(str, Enum):
    atime = "atime"
    mtime = "mtime"


@contextmanager
def _user_errors() -> Iterator[None]:
    """Domain errors become one line on stderr and their exit code, never a traceback."""
    try:
        yield
    except HfcacheError as e:
        render.error(str(e))
        raise typer.Exit(e.exit_code) from None


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


@app.command()
def scan(
    cache_dir: Annotated[
        Optional[list[str]],
        typer.Option("--cache-dir", metavar="PATH", help="Scan this hub cache root instead of the default one (repeatable)."),
    ] = None,
    revisions: Annotated[bool, typer.Option("--revisions", help="One row per revision instead of per repo.")] = False,
    sort: Annotated[
        str, typer.Option("--sort", metavar="KEY[:asc|desc]", help="Order by name, size, accessed or modified.")
    ] = "name",
    repo_type: Annotated[Optional[list[RepoType]], typer.Option("--type", help="Only repos of this type (repeatable).")] = None,
    name: Annotated[
        Optional[list[str]],
        typer.Option("--name", metavar="GLOB", help="Only repo ids matching this glob, e.g. 'meta-llama/*' (repeatable)."),
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
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table for people, json for programs.")] = (
        OutputFormat.table
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No warnings or notes on stderr.")] = False,
) -> None:
    """Show what the Hugging Face hub cache holds: repos, revisions, refs, sizes and ages.

    Example: hfcache scan --revisions --larger-than 1GB --sort size
    """
    with _user_errors():
        selection = Selection(
            types=frozenset(t.value for t in repo_type or ()),
            names=tuple(name or ()),
            larger_than=parse_size(larger_than) if larger_than is not None else None,
            smaller_than=parse_size(smaller_than) if smaller_than is not None else None,
            older_than=parse_duration(older_than) if older_than is not None else None,
            newer_than=parse_duration(newer_than) if newer_than is not None else None,
            age_by=age_by.value,
            revisions=revisions,
        )
        parse_sort(sort)  # refuse a bad key before the (possibly long) scan
        inventory = scan_caches(cache_dir or None)
        shown = select(inventory, selection, now=inventory.scanned_at, sort=sort)
    if as_json or output_format is OutputFormat.json:
        render.json_document(inventory_to_dict(shown))
    else:
        render.scan_tables(shown, revisions=revisions, filtered=not selection.is_empty)
    if not quiet:
        for cache in inventory.caches:
            if not cache.exists:
                render.note(f"No Hugging Face hub cache at {cache.root} yet: nothing cached.")
            render.warnings(cache)


class _Interrupted(BaseException):
    """Ctrl-C, raised past Typer: its own handling would exit 1, which means "partial" here."""


def _on_sigint(signum: int, frame: object) -> None:
    raise _Interrupted


def main() -> None:
    """Entry point of the ``hfcache`` command and ``python -m hfcache``."""
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        app()
    except (_Interrupted, KeyboardInterrupt):
        render.error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except HfcacheError as e:  # raised outside a command body (should not happen, but never a traceback)
        render.error(str(e))
        sys.exit(e.exit_code)
    except Exception as e:  # only main() catches broadly: a bug must still not print a traceback by default
        if render.debug_enabled():
            raise
        render.error(f"internal error: {type(e).__name__}: {e} (set HFCACHE_DEBUG=1 for the traceback)")
        sys.exit(EXIT_INTERNAL)
