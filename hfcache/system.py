"""What the machine says about a cache root's file system: mount options and free space (psutil).

Kept apart from the policies, which must not read the system: the planner gets these
answers as data.
"""

from __future__ import annotations

import os

import psutil

from .plan import Disk


def mount_of(path: str) -> tuple[str, frozenset[str]] | None:
    """The mount point holding ``path`` and its options (``noatime``, ``relatime``, ...), or None if unknown."""
    real = os.path.realpath(path)
    best: tuple[str, frozenset[str]] | None = None
    try:
        partitions = psutil.disk_partitions(all=True)
    except OSError:  # pragma: no cover - /proc not mounted
        return None
    for part in partitions:
        mp = part.mountpoint
        if (real == mp or real.startswith(mp.rstrip(os.sep) + os.sep)) and (best is None or len(mp) > len(best[0])):
            best = (mp, frozenset(part.opts.split(",")))
    return best


def disk_of(path: str) -> Disk:
    """The file system of ``path``: its device number, size and free bytes (for ``min_free``)."""
    usage = psutil.disk_usage(path)
    return Disk(os.stat(path).st_dev, usage.total, usage.free)
