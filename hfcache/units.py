"""Sizes, durations and times: parsed from the command line, written for people and for JSON.

Sizes are byte-exact: decimal units are powers of 1000 (``GB``), binary units powers of
1024 (``GiB``), computed with :class:`decimal.Decimal` so ``0.1GB`` is exactly
100,000,000 bytes.

>>> parse_size("50GB"), parse_size("1.5GiB"), parse_size("512")
(50000000000, 1610612736, 512)
>>> parse_duration("30d"), parse_duration("1w2d"), parse_duration("90m")
(2592000, 777600, 5400)
"""

from __future__ import annotations

import re
import time
from decimal import Decimal, InvalidOperation

from hfcache.errors import UsageError

_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _i, _prefix in enumerate("kmgtpe", start=1):
    _SIZE_UNITS[_prefix] = 1000**_i
    _SIZE_UNITS[_prefix + "b"] = 1000**_i
    _SIZE_UNITS[_prefix + "ib"] = 1024**_i

_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_DURATION_RE = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+")


def parse_size(text: str) -> int:
    """Turn ``"50GB"``, ``"1.5 GiB"``, ``"10M"`` or ``"512"`` into a number of bytes.

    Raises :class:`UsageError` for anything else (negative numbers, unknown units).
    """
    match = _SIZE_RE.fullmatch(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise UsageError(f"invalid size {text!r}: expected a number with an optional unit such as 500MB, 50GB or 1.5GiB")
    try:
        value = Decimal(match.group(1)) * _SIZE_UNITS[unit]
    except InvalidOperation as e:  # pragma: no cover - the regex only lets valid decimals through
        raise UsageError(f"invalid size {text!r}") from e
    return int(value.to_integral_value())


# Longer than anything meant (and than a float's time arithmetic stays exact for): refused.
MAX_DURATION = 10_000 * 52 * 7 * 86_400


def parse_duration(text: str) -> float:
    """Turn ``"30d"``, ``"12h"``, ``"1w2d"`` or ``"45s"`` into seconds.

    Units: s (seconds), m (minutes), h (hours), d (days), w (weeks). A bare number is
    refused: ``30`` could mean days or seconds, and guessing wrong deletes models.
    """
    if not _DURATION_RE.fullmatch(text):
        raise UsageError(f"invalid duration {text!r}: expected a number with a unit s, m, h, d or w, such as 30d or 12h")
    total = sum(Decimal(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(text))
    if total > MAX_DURATION:
        raise UsageError(f"invalid duration {quoted(text)}: longer than {MAX_DURATION // _DURATION_UNITS['w'] // 52:,} years")
    return int(total) if total == int(total) else float(total)


def quoted(text: str) -> str:
    """``repr(text)``, cut short: a message stays one readable line.

    >>> quoted("30d"), quoted("1" * 50)
    ("'30d'", "'1111111111111111111111111111111111111...'")
    """
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


def describe_age(seconds: float) -> str:
    """A short age for reasons: ``45d``, ``3h``, ``12m``, ``5s``.

    >>> describe_age(45 * 86400 + 5), describe_age(3 * 3600), describe_age(59)
    ('45d', '3h', '59s')
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def describe_size(n: float) -> str:
    """Bytes for people, in the decimal units the hub and the tables use: never a raw count.

    >>> describe_size(186458383665), describe_size(1000), describe_size(999)
    ('186.5 GB', '1.0 kB', '999 Bytes')
    """
    import humanize  # only when a sentence needs it

    return str(humanize.naturalsize(int(n)))


def iso(timestamp: float) -> str:
    """Epoch seconds as ISO 8601 UTC with a ``Z``.

    >>> iso(0)
    '1970-01-01T00:00:00Z'
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
