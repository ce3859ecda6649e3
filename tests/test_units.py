"""Sizes and durations given on the command line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hfcache.errors import UsageError
from hfcache.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("512B", 512),
        ("1k", 1000),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("50GB", 50 * 10**9),
        ("50GiB", 50 * 2**30),
        ("50 gb", 50 * 10**9),
        ("1.5GiB", 1610612736),
        ("0.1GB", 100_000_000),
        ("2TB", 2 * 10**12),
        ("1TiB", 2**40),
        ("3M", 3_000_000),
        (".5MB", 500_000),
    ],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "-1GB", "5XB", "1.2.3GB", "10 G B", "1e9"])
def test_bad_sizes(text):
    with pytest.raises(UsageError, match="invalid size"):
        parse_size(text)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["KB", "MB", "GB", "KiB", "MiB", "GiB"]))
def test_sizes_are_exact_multiples(n, unit):
    base = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
    assert parse_size(f"{n}{unit}") == n * base


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", 45),
        ("90m", 5400),
        ("12h", 43200),
        ("30d", 2592000),
        ("2w", 1209600),
        ("1w2d", 777600),
        ("1.5h", 5400),
        ("1d 12h", 129600),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "3y", "1d-2h"])
def test_bad_durations(text):
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(text)
