"""Interruptions (SIGINT, SIGTERM, SIGHUP): raised at once, or only noted while a deletion runs.

``hfcache.cli.main`` installs one handler for the three signals. It records the signal
(:func:`request`) and, outside :func:`deferred`, raises :class:`Interrupted` (exit 130).
Inside :func:`deferred` (while a plan executes) it only records it: execution asks
:func:`requested` between units, lets the current unit finish, skips the rest with the
reason ``interrupted (SIGTERM)``, and the command prints the results so far and exits 130.

    >>> with deferred():
    ...     is_deferred()
    True
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_requested: str | None = None
_deferred = 0


class Interrupted(BaseException):
    """A signal asked hfcache to stop (raised past Typer, whose own handling would exit 1, "partial")."""


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; the number itself for a signal Python has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def request(signum: int) -> None:
    """Note that signal ``signum`` asked to stop (the first one is kept)."""
    global _requested
    if _requested is None:
        _requested = signal_name(signum)


def requested() -> str | None:
    """The name of the signal that asked to stop (``"SIGTERM"``), or None."""
    return _requested


def reason() -> str:
    """What a unit skipped because of the interruption says: ``interrupted (SIGTERM)``."""
    return f"interrupted ({_requested or 'signal'})"


def is_deferred() -> bool:
    """True inside :func:`deferred`: a signal is only noted, never raised."""
    return _deferred > 0


@contextmanager
def deferred() -> Iterator[None]:
    """While active, a signal only sets the flag; the code inside stops at its next safe point."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


def handle(signum: int, frame: object = None) -> None:
    """The signal handler: note the signal; raise :class:`Interrupted` unless deferred."""
    request(signum)
    if not is_deferred():
        raise Interrupted(requested())


def reset() -> None:
    """Forget a noted signal (tests, and a library caller running several plans in one process)."""
    global _requested
    _requested = None
