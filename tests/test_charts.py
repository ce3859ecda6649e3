"""Terminal line charts (issue 20): within the width asked for, plain text by default, sizes on the y axis, repeatable."""

from __future__ import annotations

import math
import random
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hfcache.output.charts import line_chart

DAY = 86400.0
GB = 1e9
START = 1.78e9
ANSI = re.compile(r"\x1b\[")


def history(days: int = 30, seed: int = 0) -> dict[str, list[tuple[float, float]]]:
    """Free and used space every 15 minutes, a prune on day 18, and a dashed forecast line."""
    rng = random.Random(seed)
    free = []
    for i in range(days * 96):
        t = START + i * 900
        free.append((t, 420 * GB - 3 * GB * i / 96 + rng.gauss(0, GB / 2) + (60 * GB if i > 18 * 96 else 0)))
    used = [(t, 1000 * GB - f) for t, f in free]
    end = free[-1]
    return {"free": free, "used": used, "forecast": [end, (end[0] + 40 * DAY, end[1] - 120 * GB)]}


def cell_len(text: str) -> int:
    """Terminal cells: two for a wide character (CJK), one for the others (braille and box drawing included)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def widths(text: str) -> list[int]:
    return [cell_len(line) for line in text.splitlines()]


@pytest.mark.parametrize("width", [80, 60, 120])
def test_the_chart_fits_the_width(width):
    text = line_chart(history(), width=width, title="/data", dashed={"forecast"}, marks=[(START + 50 * DAY, "full")])
    assert max(widths(text)) <= width
    assert len(text.splitlines()) == 15  # the title, the plot, the legend: the height asked for
    assert not ANSI.search(text)
    assert "⠶ free" in text and "• used" in text and "┄ forecast" in text and "│ full" in text


def test_the_y_ticks_are_sizes_people_read():
    text = line_chart({"free": [(START + d * DAY, (400 - 5 * d) * GB) for d in range(20)]}, width=80)
    labels = re.findall(r"^ *([\d.]+ [kMGT]?B)┤", text, re.MULTILINE)
    assert labels and all(label.endswith("GB") for label in labels)
    assert "400.0 GB" in labels and "300.0 GB" in labels
    assert labels == sorted(labels, key=lambda label: -float(label.split()[0]))  # top to bottom


def test_close_values_still_get_distinct_labels():
    """100.00 GB to 100.05 GB: ticks as fine as the data would all read 100.0 GB."""
    text = line_chart({"cache": [(START + h * 3600, 100 * GB + h * 1e6) for h in range(50)]}, width=80)
    labels = re.findall(r"^ *(\S+ \S+)┤", text, re.MULTILINE)
    assert len(labels) >= 2 and len(set(labels)) == len(labels)


def test_other_units_follow_the_number():
    text = line_chart({"rate": [(START + d * DAY, d * 1.5) for d in range(10)]}, width=80, unit="GB/day")
    assert re.search(r"^ *\d+(\.\d+)? GB/day┤", text, re.MULTILINE)


def test_the_same_input_draws_the_same_chart():
    first = line_chart(history(), width=80, title="/data", dashed={"forecast"})
    line_chart({"other": [(0.0, 1.0), (1.0, 5.0)]}, width=40, height=8, title="in between", color=True)
    assert line_chart(history(), width=80, title="/data", dashed={"forecast"}) == first


def test_colour_only_when_asked():
    assert ANSI.search(line_chart(history(), width=80, color=True))


def test_dates_on_the_time_axis():
    text = line_chart(history(days=30), width=80)
    axis = text.splitlines()[-2]  # the line under the plot, above the legend
    assert re.search(r"[A-Z][a-z]{2} \d\d", axis)  # "Jun 03"
    hours = line_chart({"free": [(START + i * 900, 1e9 + i) for i in range(20)]}, width=80).splitlines()[-2]
    assert re.search(r"\d\d:\d\d", hours)


def test_no_points_is_a_line_of_text():
    assert line_chart({}, width=80) == "no data"
    assert line_chart({"free": [], "used": [(0.0, math.nan)]}, width=80, title="/data") == "/data: no data"
    assert cell_len(line_chart({}, width=10, title="a very long title")) <= 10


def test_one_point_is_a_chart_with_one_dot():
    text = line_chart({"free": [(START, 42 * GB)]}, width=80)
    assert max(widths(text)) <= 80 and "GB" in text and "⠶ free" in text


def test_wide_labels_and_long_titles_are_cut_to_the_width():
    series = {"模型キャッシュ " * 8: [(START + d * DAY, d * GB) for d in range(5)], "b": [(START, GB), (START + DAY, 2 * GB)]}
    text = line_chart(series, width=60, title="タイトル " * 20, marks=[(START + 2 * DAY, "full " * 30)])
    assert max(widths(text)) <= 60


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.floats(1e9, 2e9), st.floats(-1e13, 1e13)), max_size=30),
    st.integers(30, 160),
    st.integers(6, 30),
)
def test_any_series_fits(points, width, height):
    text = line_chart({"s": points}, width=width, height=height)
    assert max(widths(text)) <= width and not ANSI.search(text)
