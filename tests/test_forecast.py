"""Trends and forecasts (issue 20) on synthetic series whose slope, noise and crossing time are known."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hfcache.history.forecast import _t_quantile, fit, forecast, settled

DAY = 86400.0
START = 1.7e9  # epoch seconds: a real date, so precision with large times is tested too
GB = 1e9
SLOPE = -4 * GB / DAY  # free space falls 4 GB a day ...
FREE = 300 * GB  # ... from 300 GB at START: full after 75 days
FULL = START + FREE / -SLOPE


def series(seed: int, *, n: int = 200, days: float = 14, noise: float = 5 * GB, phi: float = 0.0) -> list[tuple[float, float]]:
    """Free space along the true line, sampled n times over ``days``, with Gaussian AR(1) noise (phi 0: independent)."""
    rng = random.Random(seed)
    out, e = [], 0.0
    for i in range(n):
        t = START + days * DAY * i / (n - 1)
        e = phi * e + rng.gauss(0, noise) * math.sqrt(1 - phi * phi)  # the same spread whatever phi
        out.append((t, FREE + SLOPE * (t - START) + e))
    return out


def covered(seed: int, **kw: float) -> bool:
    pts = series(seed, **kw)  # type: ignore[arg-type]
    f = forecast(pts, level=0, now=pts[-1][0], window=30 * DAY)
    assert f is not None and f.at is not None and f.earliest is not None
    assert f.earliest <= f.at and (f.latest is None or f.at <= f.latest)
    return f.earliest <= FULL and (f.latest is None or FULL <= f.latest)


def test_the_fitted_slope_is_within_the_noise_of_the_true_one():
    n, days, noise = 200, 14, 5 * GB
    times = [days * DAY * i / (n - 1) for i in range(n)]
    mean = sum(times) / n
    stderr = noise / math.sqrt(sum((t - mean) ** 2 for t in times))  # the slope's true standard error
    for seed in range(50):
        trend = fit(series(seed, n=n, days=days, noise=noise))
        assert trend is not None and trend.points == n
        assert abs(trend.slope - SLOPE) < 4 * stderr  # 4 standard errors: fails about once in 16,000 fits
        assert 0.7 * stderr < trend.slope_stderr < 1.4 * stderr  # the estimate of the uncertainty is itself right


@pytest.mark.parametrize("n, noise", [(200, 5 * GB), (20, 20 * GB), (5, 10 * GB), (2000, 30 * GB)])
def test_the_90_percent_interval_holds_the_true_crossing_about_90_percent_of_the_time(n, noise):
    hits = sum(covered(seed, n=n, noise=noise) for seed in range(200))
    assert 170 <= hits <= 194  # 85%..97% of 200: an interval far too narrow or far too wide both fail


def test_streaky_noise_widens_the_interval_enough():
    """Residuals that run in streaks (a disk filling in bursts) would make a plain fit 3 times too sure: 28% coverage."""
    hits = sum(covered(seed, n=1000, noise=30 * GB, phi=0.9) for seed in range(200))
    assert hits >= 160


def test_a_noise_free_line_gives_its_exact_crossing():
    pts = series(0, noise=0)
    f = forecast(pts, level=0, now=pts[-1][0], window=30 * DAY)
    assert f is not None and f.at == pytest.approx(FULL, abs=60)
    assert f.earliest == pytest.approx(FULL, abs=60) and f.latest == pytest.approx(FULL, abs=60)
    assert f.trend.per_day() == pytest.approx(-4 * GB)


def test_a_flat_series_never_fills():
    flat = [(START + i * 900.0, 100 * GB) for i in range(100)]
    assert forecast(flat, level=0, now=flat[-1][0], window=2 * DAY) == (None, None, None, fit(flat))


def test_a_noisy_flat_series_cannot_rule_out_never():
    """Each fit finds some slope; at 90% it seldom rules out a flat line, and it never forecasts a fill soon."""
    open_ended = 0
    for seed in range(200):
        rng = random.Random(seed)
        pts = [(START + i * 900.0, 100 * GB + rng.gauss(0, GB)) for i in range(100)]
        now = pts[-1][0]
        f = forecast(pts, level=0, now=now, window=2 * DAY)
        assert f is not None and (f.earliest is None or f.earliest > now + 60 * DAY)
        open_ended += f.earliest is not None and f.latest is None
    assert open_ended >= 170  # the other 10%: a slope that looks significant, up or (5%) down


def test_rising_free_space_never_fills():
    pts = [(START + i * 900.0, 100 * GB + i * 1e8) for i in range(100)]
    assert forecast(pts, level=0, now=pts[-1][0], window=2 * DAY) == (None, None, None, fit(pts))


def test_used_space_rising_to_the_file_systems_size():
    pts = [(START + d * DAY, 700 * GB + d * 10 * GB) for d in range(10)]
    f = forecast(pts, level=1000 * GB, now=START + 9 * DAY, window=30 * DAY)
    assert f is not None and f.at == pytest.approx(START + 30 * DAY)


def test_a_line_already_past_the_level_is_full_now():
    """Free space fell to 0 and stayed there: the line ends below 0, the disk is full now, not never."""
    pts = [(START + i * 3600.0, max(0.0, 50 * GB - i * GB)) for i in range(72)]
    now = pts[-1][0]
    f = forecast(pts, level=0, now=now, window=3 * DAY)
    assert f is not None and f.at == now and f.earliest == now and f.latest is not None and f.latest >= now


def test_a_cleanup_in_the_window_hides_the_filling_until_settled():
    before = [(START + i * 3600.0, 200 * GB - i * GB) for i in range(48)]  # 1 GB an hour ...
    after = [(START + i * 3600.0, 250 * GB - (i - 48) * GB) for i in range(48, 72)]  # ... a prune frees 100 GB
    pts = after + before  # in no particular order
    now = START + 71 * 3600.0
    blind = forecast(pts, level=0, now=now, window=3 * DAY)
    assert blind is not None and blind.at is None  # across the cleanup the line rises
    assert settled(pts, total=1000 * GB) == sorted(after)
    f = forecast(settled(pts, total=1000 * GB), level=0, now=now, window=3 * DAY)
    assert f is not None and f.at == pytest.approx(now + 227 * 3600.0)


def test_a_cleanup_smaller_than_the_jump_or_a_fall_is_no_cleanup():
    pts = [(0.0, 50.0), (1.0, 50.5), (2.0, 20.0), (3.0, 19.0)]
    assert settled(pts, total=100) == pts  # a rise of 0.5% and a sudden fall (a download) both stay
    assert settled(pts, total=100, jump=0.004) == pts[1:]
    assert settled([], total=100) == []


def test_only_the_window_counts():
    """A cache that grew for a month, then shrank for a week: the last week's trend is the shrinking."""
    grew = [(START + d * DAY, 100 * GB + d * GB) for d in range(30)]
    shrank = [(START + d * DAY, 130 * GB - (d - 30) * 5 * GB) for d in range(30, 38)]
    now = START + 37 * DAY
    f = forecast(grew + shrank, level=0, now=now, window=7.5 * DAY)
    assert f is not None and f.trend.per_day() == pytest.approx(-5 * GB) and f.trend.points == 8
    assert f.at == pytest.approx(now + 19 * DAY)
    assert forecast(grew + shrank, level=0, now=now - 10 * DAY, window=7 * DAY).trend.per_day() == pytest.approx(GB)


def test_too_few_points_give_no_trend():
    assert fit([]) is None
    assert fit([(0.0, 1.0), (1.0, 2.0)]) is None
    assert fit([(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]) is None  # no time span
    assert fit([(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)], since=1.0) is None
    assert fit([(0.0, 1.0), (1.0, math.nan), (2.0, 3.0), (3.0, math.inf)]) is None  # only 2 finite
    assert forecast([(0.0, 1.0), (1.0, 2.0)], level=0, now=1.0, window=10) is None
    assert forecast(series(0), level=0, now=START - 1, window=DAY) is None  # the window holds nothing


def test_order_and_duplicate_times_do_not_matter():
    pts = series(3, n=50) + series(4, n=50)  # every time twice
    shuffled = pts[:]
    random.Random(0).shuffle(shuffled)
    assert fit(shuffled) == fit(sorted(pts))
    assert forecast(shuffled, level=0, now=pts[-1][0], window=30 * DAY) == forecast(
        sorted(pts), level=0, now=pts[-1][0], window=30 * DAY
    )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        forecast(series(0), level=0, now=START, window=DAY, confidence=1.0)
    with pytest.raises(ValueError):
        forecast(series(0), level=0, now=START, window=0)


@pytest.mark.parametrize(
    "p, dof, expected",  # from a t table
    [(0.95, 1, 6.314), (0.95, 2, 2.920), (0.95, 3, 2.353), (0.95, 10, 1.812), (0.95, 30, 1.697), (0.975, 4, 2.776)]
    + [(0.995, 3, 5.841), (0.995, 10, 3.169), (0.95, 2.9, 2.920), (0.95, 10**6, 1.645)],
)
def test_the_t_quantile_matches_the_table(p, dof, expected):
    assert _t_quantile(p, dof) == pytest.approx(expected, rel=0.01)


POINTS = st.lists(st.tuples(st.integers(0, 10**7).map(float), st.floats(0, 1e13)), max_size=40)


@given(POINTS, st.integers(0, 10**7).map(float), st.floats(0.5, 0.999))
def test_a_forecast_is_ordered_and_never_in_the_past(points, now, confidence):
    f = forecast(points, level=0, now=now, window=10**7, confidence=confidence)
    if f is None:
        return
    times = [t for t in (f.earliest, f.at, f.latest) if t is not None]
    assert all(t >= now for t in times) and times == sorted(times)
    if f.at is not None:
        assert f.earliest is not None


@given(st.floats(-1e6, 1e6), st.floats(-1e12, 1e12), st.lists(st.integers(0, 10**6), min_size=3, max_size=30, unique=True))
def test_points_on_a_line_give_the_line(slope, intercept, times):
    trend = fit([(START + t, intercept + slope * t) for t in times])
    assert trend is not None
    assert trend.slope == pytest.approx(slope, rel=1e-6, abs=1e-6 * (1 + abs(intercept)) / 10**6)
    assert trend.value_at(START) == pytest.approx(intercept, rel=1e-6, abs=1e-6 * (1 + abs(slope) * 10**6))
