"""Line charts for the terminal, drawn by plotext: sizes or free space over time, as text of a given width.

:func:`line_chart` is pure as far as its caller sees: series in, text out, nothing printed.
plotext keeps one global figure, so each call clears it first (and charts are not drawn
from two threads at once); it is imported inside the function, since most commands never
draw a chart. The y ticks are chosen and written here (sizes as people read them, through
:func:`hfcache.units.describe_size`), and so are the x ticks (local dates and times), the
title and the legend: plotext's own drop a title wider than the chart, and its legend box
sits on the lines. Without colour each series has its own marker, so the legend can tell
them apart in a pipe or a log.

>>> DAY = 86400.0
>>> text = line_chart({"free": [(1.7e9 + d * DAY, (400 - 5 * d) * 1e9) for d in range(20)]}, width=60, title="/data")
>>> lines = text.splitlines()
>>> lines[0].strip(), "400.0 GB" in text, lines[-1], max(len(line) for line in lines) <= 60
('/data', True, '⠶ free', True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.cells import cell_len, set_cell_size

from hfcache.units import describe_size

HOUR, DAY = 3600, 86400
# Steps of the time axis in seconds, then in months: the smallest that leaves room for its labels.
_SECONDS = (60, 300, 900, 1800, HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY)
_MONTHS = (1, 2, 3, 6, 12, 24, 60, 120)
# One marker per series (plotext's names or single characters), and the sample the legend shows for it.
MARKERS = (("braille", "⠶"), ("•", "•"), ("+", "+"), ("x", "x"), ("o", "o"), ("*", "*"), ("#", "#"))


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    width: int,
    height: int = 15,
    title: str = "",
    unit: str = "bytes",
    color: bool = False,
    marks: Sequence[tuple[float, str]] = (),
    dashed: Collection[str] = (),
) -> str:
    """Each named series of ``(epoch seconds, value)`` points as a line, the text no wider than ``width`` cells.

    ``height`` counts every line returned: the title, the plot and the legend below it.
    ``unit="bytes"`` writes the y ticks as sizes ("120.0 GB"); another unit follows the
    number. ``marks`` are vertical lines at given times (a forecast: "full"), named in the
    legend when their label is not empty; the time axis stretches to show them. Series
    named in ``dashed`` are drawn dashed (a forecast's line). Non-finite points are left
    out; a single point gives a chart with one dot, no points at all the line ``no data``.
    ANSI colours only with ``color=True``. The same input always gives the same text.
    """
    import plotext as plt  # type: ignore[import-untyped]  # about 0.1 s: only when a chart is drawn

    clean = {name: sorted(p for p in pts if math.isfinite(p[0]) and math.isfinite(p[1])) for name, pts in series.items()}
    points = [p for pts in clean.values() for p in pts]
    if not points:
        return set_cell_size(f"{title}: no data" if title else "no data", width).rstrip()
    times = [t for t, _ in points] + [t for t, _ in marks if math.isfinite(t)]
    x_lo, x_hi = _spread(min(times), max(times), HOUR)
    values = [v for _, v in points]
    y_lo, y_hi = _spread(min(values), max(values), max(1.0, abs(values[0]) / 10))
    words: Callable[[float], str] = describe_size if unit == "bytes" else (lambda v: f"{v:g} {unit}".strip())
    markers = _markers(clean, dashed)
    legend = [f"{markers[name][1]} {name}" for name in clean] + [f"│ {label}" for _, label in marks if label]
    legend_lines = _wrap(legend, width)
    head = [set_cell_size(title.center(width), width).rstrip()] if title else []
    rows = max(6, height - len(head) - len(legend_lines))
    y_ticks, y_labels = _value_ticks(y_lo, y_hi, (rows - 4) // 2, words)  # a label at most every other row
    columns = max(1, width - max(cell_len(label) for label in y_labels) - 2)

    fig = plt.figure
    fig.clear()
    plt.terminal.limit(False, False)  # the size asked for, whatever terminal runs this
    fig.plot_size(width, rows)
    for name, pts in clean.items():
        if pts:
            fig.draw(_signal(fig, pts, markers[name][0], columns // 2 if name in dashed else 0))
    for t, _ in marks:
        if math.isfinite(t):
            fig.line(t, orientation="vertical")
    fig.ruler("y").ticks(y_ticks, y_labels).lim(y_ticks[0], y_ticks[-1])
    x_ticks, x_labels = _time_ticks(x_lo, x_hi, columns)
    fig.ruler("x").ticks(x_ticks, x_labels).lim(x_lo, x_hi)
    body = fig.build().string(colorless=not color).splitlines()
    fig.clear()
    if not color:
        body = [set_cell_size(line, width).rstrip() for line in body]
    return "\n".join(head + body + legend_lines)


def _markers(names: Collection[str], dashed: Collection[str]) -> dict[str, tuple[str, str]]:
    """Each series' plotext marker and legend sample: dashed lines fine (braille), the others each their own marker."""
    solid = [name for name in names if name not in dashed]
    return {name: MARKERS[solid.index(name) % len(MARKERS)] if name in solid else ("braille", "┄") for name in names}


def _signal(fig: Any, pts: list[tuple[float, float]], marker: str, dashes: int) -> Any:
    """A plotext signal through the points, joined by lines; ``dashes``: resampled in that many steps, every other left out."""
    if dashes and len(pts) > 1:
        t0, t1 = pts[0][0], pts[-1][0]
        pts = [(t, _interpolate(pts, t)) for t in (t0 + (t1 - t0) * i / dashes for i in range(dashes + 1))]
    signal = fig.signal([t for t, _ in pts], [v for _, v in pts], marker=marker).lines()
    if dashes:
        for i in range(2, len(pts), 2):
            signal.line(i, False)
    return signal


def _interpolate(pts: list[tuple[float, float]], t: float) -> float:
    """The value at ``t`` on the polyline through the (sorted) points."""
    for (t0, v0), (t1, v1) in zip(pts[:-1], pts[1:], strict=True):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return pts[-1][1]


def _spread(lo: float, hi: float, pad: float) -> tuple[float, float]:
    """A range that is not empty: one point's range widened by ``pad`` either side."""
    return (lo, hi) if hi > lo else (lo - pad, hi + pad)


def _value_ticks(lo: float, hi: float, count: int, words: Callable[[float], str]) -> tuple[list[float], list[str]]:
    """Round ticks from at or below ``lo`` to at or above ``hi``, at most ``count`` steps apart, their labels all different.

    >>> _value_ticks(3.2e9, 9.7e9, 4, describe_size)
    ([2000000000.0, 4000000000.0, 6000000000.0, 8000000000.0, 10000000000.0], ['2.0 GB', '4.0 GB', '6.0 GB', '8.0 GB', '10.0 GB'])
    """
    count = max(1, count)
    step = 10.0 ** math.floor(math.log10((hi - lo) / count))
    while True:  # 1, 2, 2.5, 5 times a power of 10: the smallest with few enough ticks, all their labels different
        for m in (1, 2, 2.5, 5):
            first, last = math.floor(lo / (m * step)), math.ceil(hi / (m * step))
            ticks = [i * m * step for i in range(first, last + 1)]
            labels = [words(t) for t in ticks]
            if last - first <= count and len(set(labels)) == len(labels):
                return ticks, labels
        step *= 10


def _time_ticks(lo: float, hi: float, columns: int) -> tuple[list[float], list[str]]:
    """Ticks at round local times between ``lo`` and ``hi``, as many as fit in ``columns`` with their labels."""
    for step in _SECONDS:
        form = "%H:%M" if step < DAY else "%b %d"
        if (hi - lo) / step * (len(time.strftime(form, time.localtime(lo))) + 3) <= columns:
            offset = time.localtime(lo).tm_gmtoff  # round in local time: midnights, not UTC's
            ticks = [
                float(i * step - offset) for i in range(math.ceil((lo + offset) / step), math.floor((hi + offset) / step) + 1)
            ]
            return ticks, [time.strftime(form, time.localtime(t)) for t in ticks]
    start = datetime.fromtimestamp(lo)
    for months in _MONTHS:
        if (hi - lo) / (months * 30 * DAY) * (len("2026-01") + 3) <= columns or months == _MONTHS[-1]:
            index = math.ceil((start.year * 12 + start.month - 1) / months) * months  # whole months since year 0
            ticks = []
            while (tick := datetime(index // 12, index % 12 + 1, 1).timestamp()) <= hi:
                ticks += [tick] if tick >= lo else []
                index += months
            return ticks, [time.strftime("%Y-%m", time.localtime(t)) for t in ticks]
    raise AssertionError("unreachable")  # pragma: no cover


def _wrap(entries: list[str], width: int) -> list[str]:
    """Legend entries two spaces apart, on as few lines of ``width`` cells as they take; each cut to fit."""
    lines: list[str] = []
    for entry in (set_cell_size(e, width).rstrip() for e in entries):
        if lines and cell_len(lines[-1]) + 2 + cell_len(entry) <= width:
            lines[-1] += "  " + entry
        else:
            lines.append(entry)
    return lines
