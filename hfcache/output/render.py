"""Output to people and programs: the console, messages, logging, progress. Data to stdout, diagnostics to stderr.

Tables are :mod:`hfcache.output.views` (laid out by :mod:`hfcache.output.layout`); ``--json``
output is the stable contract of :mod:`hfcache.output.serialize`. Rich honours ``NO_COLOR``,
and is imported only when something is shown to people. Logging (``--verbose``) and the
progress bar go to stderr, the bar only when stderr is a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import humanize

from hfcache.model import CacheInventory, ScanWarning
from hfcache.units import describe_size

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from hfcache.plan.decisions import Execution, Plan

MAX_WARNINGS_SHOWN = 20


def _import_rich() -> None:
    """Import Rich on first use: JSON and other raw output never pays its ~25 ms (issue 7)."""
    global Console, Table, Text
    if "Text" not in globals():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text


def _console(stream: Any) -> Console:
    _import_rich()
    if stream.isatty():
        console = Console(file=stream, highlight=False)
    else:
        width = max(int(os.environ.get("COLUMNS", "0") or 0), 200)
        console = Console(file=stream, highlight=False, width=width, no_color=True)
    console.on_broken_pipe = stdout_closed  # type: ignore[method-assign]  # Rich's own exits 1
    return console


def stdout_closed() -> None:
    """The reader of stdout left (``hfcache scan | head``): the rest of the output goes nowhere.

    The command goes on and exits with its own code (0 for a scan, 1 for a prune with failed
    units): a closed pipe is not an error of hfcache's, and never stops a prune half-way
    through its report. Rich would exit 1 at once.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def stdout() -> Console:
    return _console(sys.stdout)


# While a progress bar is drawn, diagnostics and log lines go through its console, above the bar.
_live: Console | None = None


def stderr() -> Console:
    return _live or _console(sys.stderr)


def size(n: int) -> str:
    """Bytes for people, decimal units as the hub prints them: ``5.0 GB``."""
    return describe_size(n)


def ago(timestamp: float, now: float) -> str:
    if not timestamp:
        return "-"
    return humanize.naturaltime(timedelta(seconds=max(0.0, now - timestamp)))


def debug_enabled() -> bool:
    """``HFCACHE_DEBUG=1`` shows tracebacks of internal errors."""
    return os.environ.get("HFCACHE_DEBUG", "") not in ("", "0")


# Diagnostics are never wrapped by us (soft_wrap): one message stays one line in a log or a pipe.


def error(message: str) -> None:
    stderr().print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def note(message: str) -> None:
    stderr().print(Text(message), soft_wrap=True)


def warning(message: str) -> None:
    stderr().print(Text("warning: ", style="yellow") + Text(message), soft_wrap=True)


def warnings(cache: CacheInventory, *, limit: int = MAX_WARNINGS_SHOWN) -> None:
    """Each warning on stderr (up to ``limit``, then a count)."""
    found: list[ScanWarning] = cache.all_warnings
    if not found:
        return
    console = stderr()
    for w in found[:limit]:
        console.print(Text("warning: ", style="yellow") + Text(str(w)), soft_wrap=True)
    if len(found) > limit:
        console.print(Text(f"warning: ... and {len(found) - limit} more (all are listed by --json)", style="yellow"))


def setup_logging(verbosity: int) -> None:
    """``-v``: what each step does (INFO); ``-vv``: every file operation (DEBUG). All on stderr.

    On a terminal through Rich; otherwise one plain, timestamped line per record, for
    journald, cron mail and CI logs.
    """
    logger = logging.getLogger("hfcache")
    logger.handlers[:] = []
    logger.propagate = verbosity <= 0  # quiet: records go wherever the host program sends them
    if verbosity <= 0:
        logger.setLevel(logging.NOTSET)
        return
    from rich.logging import RichHandler

    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=stderr(), show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None] | None]:
    """A listener for :mod:`hfcache.progress` drawing a transient bar on stderr, or None off a terminal.

    One bar per label (a cache being scanned, a plan being executed); it disappears when done.
    """
    global _live
    if not (enabled and sys.stderr.isatty()) or _live is not None:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr(),
        transient=True,
        redirect_stdout=False,  # data on stdout stays exactly what was asked for
        redirect_stderr=False,
        # Redrawn from update() below, not by a thread of Rich's own: with no other thread
        # running, a scan may fork its workers (hfcache.parallel).
        auto_refresh=False,
    )
    tasks: dict[str, TaskID] = {}
    drawn = [0.0]

    def update(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)
        now = time.monotonic()
        if now - drawn[0] >= 0.1 or done >= total:
            drawn[0] = now
            bar.refresh()

    _live = bar.console
    try:
        with bar:
            yield update
    finally:
        _live = None


def json_document(data: dict[str, Any]) -> None:
    """Indented for a person at a terminal; one compact line for a program (as ``gh`` does).

    The compact form uses the json module's C encoder: on a 100,000-file cache that is
    about a tenth of the time of the indented (pure Python) one.
    """
    raw((json.dumps(data, indent=2) if sys.stdout.isatty() else json.dumps(data, separators=(",", ":"))) + "\n")


def raw(text: str) -> None:
    """Text for programs (JSON, Prometheus exposition), written as is."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_closed()


def plan_warnings(plan: Plan | Execution) -> None:
    _import_rich()
    for w in plan.warnings:
        warning(w)
