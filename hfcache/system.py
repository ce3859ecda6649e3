"""What the machine says (psutil): mount options, free space, files processes hold open.

Kept apart from the policies, which must not read the system: the planner gets these
answers as data, and so do the live-use checks of :mod:`hfcache.checks`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

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


class OpenFiles(NamedTuple):
    """Files that running processes hold open or memory-mapped, by ``(st_dev, st_ino)``.

    ``users`` names one process per file (``pid 123 (python)``). ``denied`` counts the
    processes whose files could not be listed (another user's, without root): what they
    hold is unknown.
    """

    users: dict[tuple[int, int], str]
    denied: int


def open_files(under: Iterable[str]) -> OpenFiles:
    """Every file below one of the folders ``under`` that a process has open or mapped (psutil).

    Paths are matched as the kernel reports them (resolved), so ``under`` should be
    resolved too; each match is stat'ed once, and compared by inode, so a file reached
    through any link is recognised.
    """
    prefixes = tuple(p.rstrip(os.sep) + os.sep for p in under)
    users: dict[tuple[int, int], str] = {}
    denied = 0
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            paths = [f.path for f in proc.open_files()]
            paths += [m.path for m in proc.memory_maps(grouped=True)]
        except psutil.AccessDenied:
            denied += 1
            continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # gone, or a zombie, which holds no files
        except OSError:  # pragma: no cover - /proc changing under us
            continue
        for path in paths:
            if not path.startswith(prefixes):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            users.setdefault((st.st_dev, st.st_ino), f"pid {proc.pid} ({proc.info.get('name') or '?'})")
    return OpenFiles(users, denied)
