"""Progress reports from the library (scans, plan execution) to one listener, silent by default.

The library calls :func:`report` as it goes; the CLI installs a listener that draws a bar on
stderr (``render.progress_bar``). Library users may install their own::

    with progress.listening(lambda label, done, total: print(label, done, total)):
        hfcache.scan()

The listener may be called from worker threads and must be cheap: it is called once per
repo scanned and once per unit deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int, int], None]

_listener: Listener | None = None


@contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Send reports to ``listener`` (None: nowhere) inside the block."""
    global _listener
    before, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = before


def report(label: str, done: int, total: int) -> None:
    """``done`` of ``total`` steps of the task ``label`` are finished."""
    if _listener is not None:
        _listener(label, done, total)


def silence() -> None:
    """Drop the listener for good: for a forked worker, whose parent does the reporting."""
    global _listener
    _listener = None
