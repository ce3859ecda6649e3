"""Tables laid out for where they go: a terminal of any width (nothing cut), a log or pipe (one line a row), Markdown.

Imported only when a table is shown (through :mod:`hfcache.output.views`): JSON and other raw
output never pay for Rich.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from rich.cells import cell_len
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from hfcache.output import render
from hfcache.output.render import raw, stdout_closed


class _Terminal:
    """Human output through Rich: headings in bold, tables as laid out by Rich on a terminal.

    Off a terminal (cron, CI logs, a pipe) a table is laid out by :func:`_plain_table`: every
    cell whole on one line, in a fraction of the time Rich takes for thousands of rows.
    """

    def __init__(self) -> None:
        self.console = render.stdout()

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


OUTCOME_STYLE = "yellow"  # a run's WHY cell that says why a unit was skipped or failed


def _is_outcome(value: Any) -> bool:
    return isinstance(value, Text) and value.style == OUTCOME_STYLE


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


def writer(markdown: bool) -> _Terminal | _Markdown:
    return _Markdown(sys.stdout) if markdown else _Terminal()


_NUMERIC_COLUMNS = frozenset({"SIZE", "RECLAIMABLE", "REVS", "FILES", "FREES", "FREED"})


_WRAPPING_COLUMNS = frozenset({"REFS", "VERSIONS", "WHY"})


def table_of(*columns: str) -> Table:
    """A borderless table; numbers right-aligned, only the refs column may wrap."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in columns:
        table.add_column(name, justify="right" if name in _NUMERIC_COLUMNS else "left", no_wrap=name not in _WRAPPING_COLUMNS)
    return table
