"""Output: the only module that talks to Rich. Data goes to stdout, diagnostics to stderr.

Tables are for people (humanized sizes, relative ages), in the terminal or as GitHub-flavoured
Markdown (``--format markdown``, for a CI job summary); ``--json`` output is the stable
contract of :mod:`hfcache.output.serialize`. Rich honours ``NO_COLOR``; when stdout is not a
terminal, tables are laid out wide instead of wrapped to 80 columns. Logging (``--verbose``)
and the progress bar go to stderr, the bar only when stderr is a terminal.
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
from typing import TYPE_CHECKING, Any, TextIO

import humanize

from hfcache.model import CacheInventory, Inventory, ScanWarning
from hfcache.plan.query import revision_rows, shown_bytes
from hfcache.units import describe_size

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table
    from rich.text import Text

    from hfcache.plan.decisions import Execution, Plan, PlanUnit, UnitResult

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


class _Terminal:
    """Human output through Rich: headings in bold, tables as laid out by Rich on a terminal.

    Off a terminal (cron, CI logs, a pipe) a table is laid out by :func:`_plain_table`: every
    cell whole on one line, in a fraction of the time Rich takes for thousands of rows.
    """

    def __init__(self) -> None:
        self.console = stdout()

    def heading(self, text: Text) -> None:
        self.console.print(text)

    def line(self, text: Text | str) -> None:
        self.console.print(text)

    def table(self, table: Table) -> None:
        if self.console.is_terminal:
            self.console.print(_fit(table, self.console.width))
        else:
            raw(_plain_table(table))

    def gap(self) -> None:
        self.console.print()


def _width(text: str) -> int:
    from rich.cells import cell_len

    return len(text) if text.isascii() else cell_len(text)


def _plain_table(table: Table) -> str:
    """A table as plain text: columns two spaces apart, numbers right-aligned, no cell cut or wrapped."""
    columns = table.columns
    texts = [[str(c.header)] + [v.plain if isinstance(v, Text) else str(v) for v in c.cells] for c in columns]
    widths = [max(map(_width, column)) for column in texts]
    right = [c.justify == "right" for c in columns]
    lines = []
    for row in zip(*texts, strict=True):
        cells = (
            " " * (w - _width(t)) + t if r else t + " " * (w - _width(t)) for t, w, r in zip(row, widths, right, strict=True)
        )
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


# Columns a narrow terminal drops first, in this order: what other columns or the totals line
# already say, or what matters least for deciding. Never cut: ids, sizes, refs.
DROP_ORDER = ("KIND", "FILES", "MODIFIED", "TYPE", "VERSION", "REVS", "RECLAIMABLE", "ACCESSED", "VERSIONS")
_MIN_WRAP = 12  # narrowest a wrapping column (refs, reasons) may become before columns go


def _plain(value: Any) -> str:
    return value.plain if isinstance(value, Text) else str(value)


def _need(col: dict[str, Any]) -> int:
    """The width a column needs: all of it, or for a wrapping one what it may wrap down to."""
    if col.get("of") is not col["cells"]:  # measured once per version of the column's cells
        col["of"], col["natural"] = col["cells"], max([_width(col["header"]), *(_width(_plain(v)) for v in col["cells"])])
    natural: int = col["natural"]
    if not col["wrap"]:
        return natural
    return min(natural, 40 if col["header"] == "WHY" else _MIN_WRAP)  # a sentence wraps, but not into crumbs


def _fit(table: Table, width: int) -> Table:
    """``table`` for a terminal ``width`` columns wide: nothing ever cut to "…".

    While the rows are too wide, in this order: whole columns go (:data:`DROP_ORDER`); the
    reasons become their rules' tags (``keep-latest, max-age``; ``-v`` or ``--json`` give the
    sentences); a revision shows its hash (or name) without version and refs; the reasons
    show the deciding rule alone; and at last the ids wrap onto a second line. Sizes, ages,
    statuses and hashes are never cut.
    """
    cols: list[dict[str, Any]] = [
        {"header": str(c.header), "justify": c.justify, "wrap": not c.no_wrap, "cells": list(c.cells)} for c in table.columns
    ]

    def fits() -> bool:
        return sum(map(_need, cols)) + 2 * (len(cols) - 1) <= width

    def column(name: str) -> dict[str, Any] | None:
        return next((c for c in cols if c["header"] == name), None)

    for name in DROP_ORDER:
        if fits():
            break
        cols = [c for c in cols if c["header"] != name]
    why, revision, ident = column("WHY"), column("REVISION"), column("ID")
    in_full = logging.getLogger("hfcache").isEnabledFor(logging.INFO)  # -v: the sentences, wrapped
    shortened = False
    if not fits() and why is not None and not in_full:  # what went wrong (a styled cell) stays in words
        why["cells"] = [v if _is_outcome(v) else _tags(_plain(v)) for v in why["cells"]]
        shortened = True
    if not fits() and revision is not None:
        revision["cells"] = [Text(_plain(v).split(" ", 1)[0], style=getattr(v, "style", "")) for v in revision["cells"]]
    if not fits() and why is not None and shortened:
        why["cells"] = [v if _is_outcome(v) else _plain(v).split(", ", 1)[0] for v in why["cells"]]
    if not fits() and ident is not None:
        ident["wrap"] = True  # the last resort: an id on two lines rather than cut
    fitted = Table(box=None, pad_edge=False, header_style="bold")
    for col in cols:
        fitted.add_column(col["header"], justify=col["justify"], no_wrap=not col["wrap"], overflow="fold")
    for row in zip(*(c["cells"] for c in cols), strict=True):
        fitted.add_row(*row)
    if shortened:
        fitted.caption = "WHY: the rules' names; -v or --json give the reasons in full"
        fitted.caption_justify = "left"
    return fitted


_OUTCOME_STYLE = "yellow"  # a run's WHY cell that says why a unit was skipped or failed


def _is_outcome(value: Any) -> bool:
    return isinstance(value, Text) and value.style == _OUTCOME_STYLE


def _tags(why: str) -> str:
    """``"max-age: not accessed for 100d (limit 30d); protect: ..."`` -> ``"max-age, protect"``."""
    return ", ".join(dict.fromkeys(part.split(":", 1)[0].strip() for part in why.split("; ") if part))


def _cell(value: RenderableType) -> str:
    text = value.plain if isinstance(value, Text) else str(value)
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|") or " "


class _Markdown:
    """The same output as GitHub-flavoured Markdown (a CI job summary, a PR comment)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n\n")
        except BrokenPipeError:
            stdout_closed()

    def heading(self, text: Text) -> None:
        self._write(f"#### {_cell(text)}")

    def line(self, text: Text | str) -> None:
        self._write(_cell(text))

    def table(self, table: Table) -> None:
        columns = table.columns
        rows = [
            "| " + " | ".join(_cell(c.header) for c in columns) + " |",
            "|" + "|".join("---:" if c.justify == "right" else "---" for c in columns) + "|",
        ]
        for cells in zip(*(list(c.cells) for c in columns), strict=True):
            rows.append("| " + " | ".join(_cell(v) for v in cells) + " |")
        self._write("\n".join(rows))

    def gap(self) -> None:
        pass


def _writer(markdown: bool) -> _Terminal | _Markdown:
    return _Markdown(sys.stdout) if markdown else _Terminal()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _refs(refs: tuple[str, ...]) -> Text:
    return Text(", ".join(refs)) if refs else Text("(detached)", style="dim")


_NUMERIC_COLUMNS = frozenset({"SIZE", "RECLAIMABLE", "REVS", "FILES", "FREES", "FREED"})
_WRAPPING_COLUMNS = frozenset({"REFS", "VERSIONS", "WHY"})


def _table(*columns: str) -> Table:
    """A borderless table; numbers right-aligned, only the refs column may wrap."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in columns:
        table.add_column(name, justify="right" if name in _NUMERIC_COLUMNS else "left", no_wrap=name not in _WRAPPING_COLUMNS)
    return table


def _ident(ident: str, odd: bool) -> Text:
    """The id, marked with ``!`` when something odd was found in it."""
    return Text(ident) + Text(" !", style="bold yellow") if odd else Text(ident)


def _versions(versions: list[str | None]) -> Text:
    shown = [v for v in versions if v is not None]
    return Text(", ".join(shown)) if shown else Text("-", style="dim")


def _item_table(cache: CacheInventory, now: float) -> Table:
    with_refs = cache.has_refs
    table = _table("ID", "TYPE", "SIZE", "ACCESSED", "MODIFIED", "REVS", "REFS" if with_refs else "VERSIONS")
    for item in cache.items:
        if with_refs:
            last = _refs(tuple(sorted({ref for rev in item.revisions for ref in rev.refs})))
        else:
            last = _versions([rev.version for rev in item.revisions])
        table.add_row(
            _ident(item.id, not item.deletable),
            item.type,
            size(item.size_bytes),
            ago(item.last_accessed, now),
            ago(item.last_modified, now),
            str(len(item.revisions)),
            last,
        )
    return table


def _revision_table(cache: CacheInventory, now: float, sort: str) -> Table:
    with_refs = cache.has_refs
    columns = ["ID", "REVISION", "VERSION", "SIZE", "RECLAIMABLE", "ACCESSED", "MODIFIED", "FILES"]
    table = _table(*columns, *(["REFS"] if with_refs else []))
    for item, rev in revision_rows(cache, sort):
        row: list[RenderableType] = [
            _ident(item.id, not item.deletable),
            Text(short_hash(rev.revision)),
            _versions([rev.version]),
            size(rev.size_bytes),
            size(rev.reclaimable_bytes),
            ago(rev.last_accessed, now),
            ago(rev.last_modified, now),
            str(rev.nb_files),
        ]
        table.add_row(*row, *([_refs(rev.refs)] if with_refs else []))
    return table


def scan_tables(
    inventory: Inventory,
    *,
    revisions: bool,
    filtered: bool,
    show_missing: bool = True,
    markdown: bool = False,
    sort: str = "name",
) -> None:
    """The human view of a scan: per cache a heading, a table and a totals line.

    The totals line counts the rows shown (with ``revisions``: the revisions, and the bytes
    they hold, each blob once), then gives the whole cache's total.

    Caches whose folder does not exist get a one-line heading, or nothing at all when not
    ``show_missing`` (a scan of every kind shows the caches found, not the ones absent).
    """
    _import_rich()
    out = _writer(markdown)
    now = inventory.scanned_at
    shown_caches = [c for c in inventory.caches if c.exists or show_missing]
    for index, cache in enumerate(shown_caches):
        if index:
            out.gap()
        out.heading(Text(f"{cache.title or cache.kind}: ", style="bold") + Text(cache.root))
        if not cache.exists:
            out.line("  nothing cached yet (the folder does not exist)")
            continue
        noun = "repo" if cache.has_refs else "item"
        if cache.items:
            out.table(_revision_table(cache, now, sort) if revisions else _item_table(cache, now))
        else:
            out.line(f"  no matching {noun}s" if filtered else f"  no {noun}s cached")
        shown = shown_bytes(cache, revisions=revisions)
        nrevs = sum(len(i.revisions) for i in cache.items)
        line = f"{_plural(len(cache.items), noun)}, {_plural(nrevs, 'revision')}"
        line += f" ({size(shown)}{' shown' if filtered else ''}); cache total {size(cache.size_bytes)}"
        if cache.shared_store:
            line += ", shared blobs counted once"
        out.line(line)
        extras = []
        if cache.partial_files:
            extras.append(
                f"{_plural(len(cache.partial_files), 'partial download')} "
                f"({size(sum(p.size_bytes for p in cache.partial_files))})"
            )
        if cache.orphan_files:
            extras.append(
                f"{_plural(len(cache.orphan_files), 'orphan blob')} ({size(sum(o.size_bytes for o in cache.orphan_files))})"
            )
        if cache.unreferenced_payloads:
            extras.append(
                f"{_plural(len(cache.unreferenced_payloads), 'unreferenced shared blob')} "
                f"({size(sum(s.size_bytes for s in cache.unreferenced_payloads))})"
            )
        if extras:
            out.line("not in any revision: " + ", ".join(extras))
        if any(not i.deletable for i in cache.items):
            out.line(
                Text(
                    f"! = something odd was found in this {noun} (see warnings); hfcache will not delete through it", style="dim"
                )
            )


_STATUS_STYLE = {"deleted": "green", "skipped": "yellow", "failed": "bold red"}  # by Status


def short_hash(revision: str) -> str:
    """A 40-hex commit as its first 12 characters, as ``hf cache ls`` and git show them; other names whole."""
    return revision[:12] if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision) else revision


def _unit_name(unit: PlanUnit) -> Text:
    if unit.what == "revision":
        label = short_hash(unit.revision or "")
        if unit.version and unit.version not in label:
            label += f" ({unit.version})"
        if unit.refs:
            label += f" [{', '.join(unit.refs)}]"
        return Text(label)
    return Text(f"{unit.what}: {os.path.basename(unit.path)}", style="dim")


def _plan_table(units: tuple[PlanUnit, ...], *, results: tuple[UnitResult, ...] | None = None, keep: bool = False) -> Table:
    """Units to delete (with ``results``: what each did), or with ``keep`` the units kept."""
    from hfcache.output.words import describe_all  # the policies' types: only when a plan is shown

    if keep:
        columns = ["KIND", "ID", "REVISION", "WHY"]
    elif results is not None:
        columns = ["KIND", "ID", "REVISION", "STATUS", "FREED", "WHY"]
    else:
        columns = ["KIND", "ID", "REVISION", "FREES", "WHY"]
    table = _table(*columns)
    for i, u in enumerate(units):
        row: list[Text | str] = [u.kind, Text(u.id or "-"), _unit_name(u)]
        why: Text | str = "; ".join(describe_all(u.reasons))
        if results is not None:
            r = results[i]
            row += [Text(str(r.status), style=_STATUS_STYLE.get(r.status, "")), size(r.freed_bytes)]
            if r.error:  # what happened matters more than why it was planned (that stays in the log and JSON)
                why = Text(r.error, style=_OUTCOME_STYLE)
        elif not keep:
            row.append(size(u.reclaim_bytes))
        row.append(why)
        table.add_row(*row)
    return table


def _cache_summaries(plan: Plan, execution: Execution | None) -> list[str]:
    """One line per cache: its units to delete (or what happened to them), bytes, by policy, and how many a rule keeps."""
    results = dict(zip((id(u) for u in plan.delete), execution.results, strict=True)) if execution is not None else {}
    lines = []
    for cache in plan.caches:
        going = [u for u in plan.delete if (u.kind, u.root) == (cache.kind, cache.root)]
        kept = sum(1 for u in plan.keep if (u.kind, u.root) == (cache.kind, cache.root))
        if not going and not kept:
            continue
        by: dict[str, int] = {}
        for u in going:
            policy = str(u.reasons[0].policy) if u.reasons else "-"
            by[policy] = by.get(policy, 0) + 1
        policies = ", ".join(f"{p} {n}" for p, n in sorted(by.items(), key=lambda kv: (-kv[1], kv[0])))
        if execution is None:
            what = f"{_plural(len(going), 'unit')} to delete, {size(sum(u.reclaim_bytes for u in going))}"
        else:
            done = [results[id(u)] for u in going]
            counts = {s: sum(1 for r in done if r.status == s) for s in ("deleted", "skipped", "failed")}
            what = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing"
            what += f", {size(sum(r.freed_bytes for r in done))} freed"
        line = f"{cache.kind} {cache.root}: {what}"
        if policies:
            line += f" ({policies})"
        lines.append(line + (f"; {kept} kept by a rule" if kept else ""))
    return lines


def plan_tables(plan: Plan, *, execution: Execution | None = None, show_keep: bool = False, markdown: bool = False) -> None:
    """The human view of a plan (or with ``execution``, of its run): what goes and why, then the totals.

    What goes comes first, then (with ``show_keep``) what stays and the rule that keeps each,
    then one line per cache and the total: the last lines before a question are its answer's
    weight. Kept units are counted; listed only with ``show_keep`` (on a 100,000-file cache
    they are thousands of lines). The plan's warnings are not part of it: :func:`plan_warnings`
    puts them on stderr.
    """
    _import_rich()
    out = _writer(markdown)
    ran = execution is not None
    for line in plan.policy:
        out.line(Text("policy ", style="dim") + Text(line))
    if plan.delete:
        out.heading(Text("Deleted:" if ran else "Would delete:", style="bold"))
        out.table(_plan_table(plan.delete, results=execution.results if execution is not None else None))
    else:
        out.line("Nothing to delete.")
    if plan.keep and show_keep:
        out.heading(Text("Kept, and the rule that keeps each:", style="bold"))
        out.table(_plan_table(plan.keep, keep=True))
    for line in _cache_summaries(plan, execution):
        out.line(line)
    units = _plural(len(plan.delete), "unit")
    if execution is not None:
        counts = {s: sum(1 for r in execution.results if r.status == s) for s in ("deleted", "skipped", "failed")}
        detail = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        out.line(f"Freed {size(execution.freed_bytes)} of {size(plan.reclaim_bytes)} planned ({units}: {detail or 'none'}).")
    elif plan.delete:
        kept = f"; {len(plan.keep)} kept by a rule" + ("" if show_keep else " (--show-kept lists them)") if plan.keep else ""
        out.line(f"Would free {size(plan.reclaim_bytes)} ({units}){kept}.")


def plan_warnings(plan: Plan | Execution) -> None:
    _import_rich()
    for w in plan.warnings:
        warning(w)
