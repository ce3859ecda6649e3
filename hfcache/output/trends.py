"""What people see of ``hfcache history``: per file system a chart and the forecast, per cache its growth, growers, uses.

Imported only when shown (Rich's tables, and plotext's charts when the ``charts`` extra is
installed; without it the same figures come without a chart).
"""

from __future__ import annotations

import os
import time

from rich.text import Text

from hfcache.history.report import FileSystemTrend, HistoryReport
from hfcache.output.layout import table_of, writer
from hfcache.output.render import size
from hfcache.units import describe_age

DAY = 86400.0


def _date(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(t))


def _rate(per_day: float | None) -> str:
    if per_day is None:
        return "-"
    sign = "+" if per_day > 0 else "-" if per_day < 0 else ""
    return f"{sign}{size(int(abs(per_day)))}/day"


def _signed(n: int) -> str:
    return ("+" if n > 0 else "-" if n < 0 else "") + size(abs(n))


def full_in(fs: FileSystemTrend, now: float) -> str:
    """The forecast in words: ``full in about 12 days (between 9 and 17)``, ``not filling at this rate``."""
    f = fs.forecast
    if f is None:
        return "too little history since the last cleanup to tell when it fills"
    if f.at is None:
        return "not filling at the current rate"
    if f.at <= now:
        return "full now at the fitted rate"
    days = (f.at - now) / DAY
    low = f"{(f.earliest - now) / DAY:.0f}" if f.earliest is not None else "?"
    high = f"{(f.latest - now) / DAY:.0f}" if f.latest is not None else "never"
    return f"full in about {days:.0f} days, around {_date(f.at)} (90%: between {low} and {high} days)"


def _chart(
    fs: FileSystemTrend, caches: dict[str, list[tuple[float, float]]], width: int, window: float, now: float
) -> str | None:
    """Free space (and the caches on it) over the window, the forecast dashed within a window ahead; None without plotext."""
    import sys

    from hfcache.output.charts import line_chart

    try:
        "⣿┤─┄".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return None  # a terminal that cannot show braille and box drawing: the figures without the chart
    series: dict[str, list[tuple[float, float]]] = {"free": list(fs.free_series), **caches}
    marks, dashed = [], []
    f = fs.forecast
    if f is not None and f.at is not None and now < f.at <= now + window:
        series["forecast"] = [(now, f.trend.value_at(now)), (f.at, 0.0)]
        dashed.append("forecast")
        marks.append((f.at, "full at this rate"))
    try:
        return line_chart(
            series, width=width, height=16, title=f"free space and caches ({size(fs.total)})", marks=marks, dashed=dashed
        )
    except ImportError:  # plotext (the charts extra) is not installed
        return None


def history_tables(report: HistoryReport, *, markdown: bool = False, chart: bool = True) -> None:
    """The human view of ``hfcache history``."""
    out = writer(markdown)
    now = report.now
    window = describe_age(report.window)
    if report.first is None:
        out.line("No history yet: every hfcache scan, metrics or prune records one (see FILES in man hfcache).")
        return
    out.line(Text(f"History since {_date(report.first)}; trends over the last {window}.", style="dim"))
    missing_chart = False
    by_root = {c.root: c for c in report.caches}
    for fs in report.filesystems:
        out.heading(Text(f"File system of {', '.join(fs.roots)}", style="bold"))
        used = fs.total - fs.free
        share = f" ({fs.free / fs.total:.0%})" if fs.total else ""
        out.line(f"{size(fs.free)} free of {size(fs.total)}{share}, {size(used)} used; free space {_rate(fs.rate)}")
        out.line(full_in(fs, now))
        if chart:
            caches = {os.path.basename(r) or r: list(by_root[r].series) for r in fs.roots if r in by_root}
            width = out.console.width if hasattr(out, "console") and out.console.is_terminal else 80
            drawn = _chart(fs, caches if len(caches) <= 3 else {}, min(width, 120), report.window, now)
            if drawn is None:
                missing_chart = True
            elif markdown:
                out.line("```text\n" + drawn + "\n```")
            else:
                from hfcache.output.render import raw

                raw(drawn + "\n")
    table = table_of("KIND", "CACHE", "SIZE", "CHANGE", "PER DAY")
    for c in report.caches:
        table.add_row(c.kind, c.root, size(c.size), _signed(c.change), _rate(c.rate))
    out.heading(Text(f"Caches (change over the last {window})", style="bold"))
    out.table(table)
    if report.growers:
        table = table_of("ID", "CACHE", "SIZE", "GREW")
        for g in report.growers:
            table.add_row(g.item, g.root, size(g.size), _signed(g.change) + (" (new)" if g.new else ""))
        out.heading(Text(f"Top growers over the last {window}", style="bold"))
        out.table(table)
    if report.models:
        table = table_of("ID", "CACHE", "DAYS USED", "LAST USED", "BY")
        for m in report.models:
            by = m.program if m.source == "process" else "(access time)"
            table.add_row(m.item, m.root, str(len(m.days)), describe_age(max(0.0, now - m.last)) + " ago", by or "?")
        out.heading(Text(f"Uses over the last {window}", style="bold"))
        out.table(table)
    if missing_chart:
        out.line(Text("(no chart: install hfcache[charts], which brings plotext, on a UTF-8 terminal)", style="dim"))
