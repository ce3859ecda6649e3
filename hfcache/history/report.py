"""``hfcache history`` as values: per file system and cache, sizes over time, growth, and when the disk fills.

Built from what :mod:`hfcache.history.store` reads, with the clock passed in; nothing here
reads the disk or the database. A file system's forecast fits its free space over the
window (after its last cleanup: :func:`~hfcache.history.forecast.settled`) and extends the
line to zero free bytes, with a 90% interval (:func:`~hfcache.history.forecast.forecast`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from hfcache.history.forecast import Forecast, fit, forecast, settled
from hfcache.history.store import ModelUse, Sample

Point = tuple[float, float]
DAY = 86400.0


def _span_enough(points: Sequence[Point], window: float) -> bool:
    """Whether ``points`` cover enough time for a rate per day: a seventh of the window, at most a day.

    Three samples a few seconds apart (a prune and its metrics) fit a line, but its slope
    per day is noise multiplied by thousands: no rate, no forecast, until the history spans
    some hours.
    """
    return len(points) >= 3 and max(t for t, _ in points) - min(t for t, _ in points) >= min(window / 7, DAY)


@dataclass(frozen=True)
class FileSystemTrend:
    """One file system (by device number) holding ``roots``: its size, free bytes over time, and the forecast.

    ``rate`` is the fitted change of free bytes per day (negative: filling); it and
    ``forecast`` are None when the window holds too few samples since the last cleanup, or
    too short a stretch of time (:func:`_span_enough`), to fit a line.
    """

    device: int
    roots: tuple[str, ...]
    total: int
    free: int
    at: float
    free_series: tuple[Point, ...]
    rate: float | None
    forecast: Forecast | None


@dataclass(frozen=True)
class CacheTrend:
    """One cache: its size now, over the window, how much it changed in it and the fitted rate per day."""

    kind: str
    root: str
    size: int
    series: tuple[Point, ...]
    change: int
    rate: float | None


class Grower(NamedTuple):
    """A model that grew in the window: its size now and by how much (``new``: it was not there when the window began)."""

    root: str
    item: str
    size: int
    change: int
    new: bool


@dataclass(frozen=True)
class HistoryReport:
    now: float
    window: float
    first: float | None  # the oldest sample of these caches: how far back the history goes
    filesystems: tuple[FileSystemTrend, ...]
    caches: tuple[CacheTrend, ...]
    growers: tuple[Grower, ...]
    models: tuple[ModelUse, ...]


def _filesystems(samples: Sequence[Sample], now: float, window: float) -> list[FileSystemTrend]:
    by_device: dict[int, dict[float, Sample]] = {}
    roots: dict[int, set[str]] = {}
    for s in samples:
        if s.device is None or s.fs_free is None or s.fs_total is None:
            continue
        by_device.setdefault(s.device, {})[s.at] = s  # one per run: every cache of a run has the same time
        roots.setdefault(s.device, set()).add(s.root)
    out = []
    for device, runs in sorted(by_device.items()):
        ordered = [runs[at] for at in sorted(runs)]
        last = ordered[-1]
        free = [(s.at, float(s.fs_free or 0)) for s in ordered if s.at >= now - window]
        total = float(last.fs_total or 0)
        calm = settled(free, total=total)
        if not _span_enough(calm, window):
            calm = []
        trend = fit(calm)
        out.append(
            FileSystemTrend(
                device,
                tuple(sorted(roots[device])),
                int(total),
                int(last.fs_free or 0),
                last.at,
                tuple(free),
                trend.per_day() if trend else None,
                forecast(calm, level=0.0, now=now, window=window) if calm else None,
            )
        )
    return out


def _caches(samples: Sequence[Sample], now: float, window: float) -> list[CacheTrend]:
    by_root: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        by_root.setdefault((s.kind, s.root), []).append(s)
    out = []
    for (kind, root), rows in sorted(by_root.items()):
        rows.sort(key=lambda s: s.at)
        before = [s for s in rows if s.at <= now - window]
        inside = [s for s in rows if s.at >= now - window]
        series = tuple((s.at, float(s.size)) for s in inside)
        start = (before[-1] if before else rows[0]).size
        trend = fit(series) if _span_enough(series, window) else None
        out.append(CacheTrend(kind, root, rows[-1].size, series, rows[-1].size - start, trend.per_day() if trend else None))
    return out


def _growers(sizes: Mapping[tuple[str, str], Sequence[tuple[float, int]]], now: float, window: float, top: int) -> list[Grower]:
    grew = []
    for (root, item), changes in sizes.items():
        before = [size for at, size in changes if at <= now - window]
        size = changes[-1][1]
        start = before[-1] if before else 0
        if size > start:
            grew.append(Grower(root, item, size, size - start, new=not before or start == 0))
    grew.sort(key=lambda g: (-g.change, g.root, g.item))
    return grew[:top]


def build_report(
    samples: Sequence[Sample],
    sizes: Mapping[tuple[str, str], Sequence[tuple[float, int]]],
    models: Iterable[ModelUse] = (),
    *,
    now: float,
    window: float,
    top: int = 10,
) -> HistoryReport:
    """The report over the ``window`` seconds before ``now`` (``samples`` may reach further back: growth starts from them)."""
    return HistoryReport(
        now,
        window,
        min((s.at for s in samples), default=None),
        tuple(_filesystems(samples, now, window)),
        tuple(_caches(samples, now, window)),
        tuple(_growers(sizes, now, window, top)),
        tuple(models),
    )
