"""Trends and forecasts of a usage history: least-squares lines, pure, the clock passed in.

A series is a sequence of ``(time, value)`` points, times in epoch seconds, in any order
(duplicate times are fine). :func:`fit` draws the least-squares line through them,
:func:`forecast` extends the line of a recent window to the time it reaches a level (free
space reaching 0) with a confidence interval, and :func:`settled` drops the part of a
free-space series before its last cleanup, so a prune does not look like a disk emptying.
Nothing here reads the disk, the clock or the state database.

>>> DAY = 86400.0
>>> free = [(d * DAY, 500e9 - 4e9 * d) for d in range(30)]  # 4 GB less free space every day
>>> f = forecast(free, level=0, now=29 * DAY, window=14 * DAY)
>>> round(f.trend.per_day() / 1e9, 3), [round((t - 29 * DAY) / DAY, 3) for t in (f.earliest, f.at, f.latest)]
(-4.0, [96.0, 96.0, 96.0])
>>> print(forecast([(d * DAY, 50e9 + 1e9 * d) for d in range(30)], level=0, now=29 * DAY, window=14 * DAY).at)
None
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from statistics import NormalDist
from typing import NamedTuple

DAY = 86400.0
Point = tuple[float, float]


class Trend(NamedTuple):
    """The least-squares line through a series: its slope, where it ends, and how sure it is.

    The standard errors assume the points scatter about the line; when the scatter runs in
    streaks (the residuals' lag-1 autocorrelation is positive, as in a disk that fills in
    bursts) they are widened by ``(1 + r) / (1 - r)`` in variance and ``dof`` shrinks to the
    effective number of points less 2 (Santer et al. 2000). Exactly on a line: errors 0.

    >>> t = fit([(0, 10.0), (3600, 11.0), (7200, 12.0)])
    >>> round(t.per_day(), 6), t.level, t.points, t.value_at(10800)
    (24.0, 12.0, 3, 13.0)
    """

    slope: float  # value units per second
    level: float  # the line's value at ``end``
    slope_stderr: float  # standard error of ``slope``
    level_stderr: float  # standard error of ``level``
    points: int
    start: float  # the first and last time fitted
    end: float
    center: float  # the mean time: the line's value is surest there
    dof: float  # degrees of freedom for the Student t quantile: points - 2, fewer when autocorrelated

    def per_day(self) -> float:
        """The slope in value units per day."""
        return self.slope * DAY

    def value_at(self, time: float) -> float:
        """The line's value at ``time``."""
        return self.level + self.slope * (time - self.end)

    def stderr_at(self, time: float) -> float:
        """The standard error of :meth:`value_at`: least at ``center``, growing away from it."""
        var = self.level_stderr**2 + ((time - self.center) ** 2 - (self.end - self.center) ** 2) * self.slope_stderr**2
        return math.sqrt(max(0.0, var))


class Forecast(NamedTuple):
    """When a series reaches a level at its fitted rate, and the interval the rate's uncertainty allows.

    ``at`` is ``None`` when the line is flat or moving away from the level. ``earliest`` and
    ``latest`` bound a confidence interval for the time the line crosses the level (never
    before ``now``); ``latest`` is ``None`` when the slow end is unbounded (the data cannot
    rule out a flat line), and both are ``None`` when the data rule out reaching the level.
    """

    at: float | None
    earliest: float | None
    latest: float | None
    trend: Trend


def fit(points: Iterable[Point], *, since: float | None = None) -> Trend | None:
    """The least-squares line through the points at or after ``since``.

    ``None`` for fewer than 3 points (no scatter to judge the line by) or when all share one
    time; points with a value or time that is not finite are left out. Pure Python sums over
    centred times: 8,640 points (90 days every 15 minutes) take a few milliseconds.

    >>> fit([(0, 1.0), (60, 2.0)]) is None, fit([(5, 1.0), (5, 2.0), (5, 3.0)]) is None
    (True, True)
    """
    pts = sorted(p for p in points if math.isfinite(p[0]) and math.isfinite(p[1]) and (since is None or p[0] >= since))
    n = len(pts)
    if n < 3 or pts[0][0] == pts[-1][0]:
        return None
    center = math.fsum(t for t, _ in pts) / n
    mean = math.fsum(v for _, v in pts) / n
    sxx = math.fsum((t - center) ** 2 for t, _ in pts)
    slope = math.fsum((t - center) * (v - mean) for t, v in pts) / sxx
    res = [v - mean - slope * (t - center) for t, v in pts]
    rss = math.fsum(r * r for r in res)
    # Lag-1 autocorrelation of the residuals, in time order: 0 for independent scatter.
    r1 = math.fsum(a * b for a, b in zip(res[:-1], res[1:], strict=True)) / rss if rss > 0 else 0.0
    r1 = min(max(r1, 0.0), 0.99)
    widen = (1 + r1) / (1 - r1)
    var = rss / (n - 2) * widen
    slope_var = var / sxx
    end = pts[-1][0]
    return Trend(
        slope=slope,
        level=mean + slope * (end - center),
        slope_stderr=math.sqrt(slope_var),
        level_stderr=math.sqrt(var / n + (end - center) ** 2 * slope_var),
        points=n,
        start=pts[0][0],
        end=end,
        center=center,
        dof=max(1.0, n / widen - 2),
    )


OUTLIER = 10.0  # a rise this many times the median step between samples is a cleanup
FLOOR = 0.001  # ... when it is also more than this share of the file system (0.1%)


def settled(points: Iterable[Point], *, total: float, jump: float = 0.01) -> list[Point]:
    """A free-space series from its last cleanup on: the points after the last rise of more than ``jump * total``.

    A prune (or any cleanup) makes free space jump up between two samples; a line fitted
    across the jump makes a filling disk look like one that empties. Only rises count: a
    sudden fall is a download, which is the filling to forecast. The default, 1% of the
    file system between two samples, catches a prune of a few GB on a disk of hundreds,
    which 15 minutes of ordinary use rarely frees; a rise that is not a cleanup costs only
    history (a shorter fit, a wider interval), while a cleanup missed hides a filling disk.
    A smaller rise counts too when it stands out of the series' own steps: more than
    :data:`OUTLIER` times the median step between samples (and :data:`FLOOR` of the file
    system): a 90 GB prune on a 10 TB disk filling 20 GB a day is one. Returned in time order.

    >>> settled([(0, 10.0), (1, 9.0), (2, 30.0), (3, 29.0), (4, 28.5)], total=100)
    [(2, 30.0), (3, 29.0), (4, 28.5)]
    """
    pts = sorted(points)
    steps = sorted(abs(pts[i][1] - pts[i - 1][1]) for i in range(1, len(pts)))
    limit = jump * total
    if len(steps) >= 8:  # a rise that stands out of the series' own steps is a cleanup too, however small a share
        typical = steps[len(steps) // 2]
        limit = min(limit, max(OUTLIER * typical, FLOOR * total))
    cut = 0
    for i in range(1, len(pts)):
        if pts[i][1] - pts[i - 1][1] > limit:
            cut = i
    return pts[cut:]


def forecast(points: Sequence[Point], *, level: float, now: float, window: float, confidence: float = 0.9) -> Forecast | None:
    """When the series reaches ``level``, at the rate of its line over the ``window`` seconds up to ``now``.

    The line's side of ``level`` is the latest point's; the line heads for the level when
    its slope points there, and ``at`` is where it crosses (``now`` if it already has: a
    line can cross before a full disk's free space reaches 0). The interval is Fieller's
    for the crossing of a fitted line, from the uncertainty of both its slope and its level
    (a Student t quantile: exact for 1 and 2 degrees of freedom, the Cornish-Fisher expansion
    of Abramowitz and Stegun 26.7.5 above, within 1% for confidences up to 0.99).
    ``None`` when the window holds no line (see :func:`fit`).
    """
    if not 0 < confidence < 1 or window <= 0:
        raise ValueError(f"confidence must be between 0 and 1 and window positive, not {confidence}, {window}")
    recent = [p for p in points if now - window <= p[0] <= now]
    trend = fit(recent)
    if trend is None:
        return None
    side = max(recent)[1] - level
    if side == 0:
        return Forecast(now, now, now, trend)
    heading = trend.slope * side < 0
    # Fieller: the times u (from the centre) where (m + b u - level)^2 <= q^2 (var_m + u^2 var_b).
    q = _t_quantile((1 + confidence) / 2, trend.dof)
    b, gap = trend.slope, trend.value_at(trend.center) - level
    a = b * b - (q * trend.slope_stderr) ** 2
    if a > 0 and not heading:
        return Forecast(None, None, None, trend)  # surely moving away
    hull = _hull(a, 2 * b * gap, gap * gap - (q * trend.stderr_at(trend.center)) ** 2, now - trend.center)
    at = max(now, trend.center - gap / b) if heading else None
    earliest, latest = (at, at) if hull is None else (trend.center + hull[0], None if hull[1] is None else trend.center + hull[1])
    if at is not None and earliest is not None:
        earliest = min(earliest, at)
        latest = None if latest is None else max(latest, at)
    return Forecast(at, earliest, latest, trend)


def _hull(a: float, b: float, c: float, lo: float) -> tuple[float, float | None] | None:
    """The first and last u >= lo where a u^2 + b u + c <= 0; the last ``None`` when unbounded, ``None`` when there is none."""

    def f(u: float) -> float:
        return (a * u + b) * u + c

    roots = sorted(r for r in _roots(a, b, c) if r > lo)
    inside = f(lo) <= 0
    if not inside and not roots:
        return None
    tail = a < 0 or (a == 0 and (b < 0 or (b == 0 and c <= 0)))  # f <= 0 far beyond the last root
    return (lo if inside else roots[0]), (None if tail else roots[-1] if roots else lo)


def _roots(a: float, b: float, c: float) -> list[float]:
    if a == 0:
        return [-c / b] if b else []
    disc = b * b - 4 * a * c
    if disc < 0:
        return []
    k = -(b + math.copysign(math.sqrt(disc), b)) / 2  # no cancellation between b and the root
    return [k / a, c / k] if k else [0.0]


def _t_quantile(p: float, dof: float) -> float:
    """The Student t quantile for probability ``p`` > 0.5, degrees of freedom rounded down (wider: the safe side).

    >>> round(_t_quantile(0.95, 1), 3), round(_t_quantile(0.95, 2), 3), round(_t_quantile(0.95, 10), 3)
    (6.314, 2.92, 1.812)
    """
    n = max(1, int(dof))
    if n == 1:
        return math.tan(math.pi * (p - 0.5))
    if n == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + math.fsum(g / n**i for i, g in enumerate(terms, start=1))
