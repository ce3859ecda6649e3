"""Recording a run into the usage history: the system read here (free space, open files), so the rest stays pure."""

from __future__ import annotations

import logging

from hfcache.fs.system import disk_of, open_files
from hfcache.history.observe import held_revisions, observe
from hfcache.history.store import record
from hfcache.model import Disk, Inventory
from hfcache.state import OFF, StateDB, state_path

__all__ = ["OFF", "disks_of", "remember_run", "state_path"]

log = logging.getLogger(__name__)


def disks_of(inventory: Inventory) -> dict[str, Disk]:
    """The file system of each existing cache root (a root that cannot be asked is left out)."""
    out = {}
    for cache in inventory.caches:
        if cache.exists:
            try:
                out[cache.root] = disk_of(cache.root)
            except OSError as e:
                log.info("free space of %s unknown: %s", cache.root, e)
    return out


def remember_run(inventory: Inventory, path: str | None, *, disks: dict[str, Disk] | None = None) -> list[str]:
    """Record what this run saw (``inventory``, the file systems, the processes using a cache) in the state at ``path``.

    Returns the state database's warnings; never raises for a database or a /proc problem:
    a run that cannot remember still does its work.
    """
    if path is None or not any(c.exists for c in inventory.caches):
        return []
    disks = disks_of(inventory) if disks is None else disks
    try:
        held = held_revisions(inventory, open_files([c.root for c in inventory.caches if c.exists]))
    except OSError as e:  # pragma: no cover - /proc vanishing under us
        log.info("open files not read: %s", e)
        held = {}
    observation = observe(inventory, disks, at=inventory.scanned_at, held=held)
    with StateDB(path) as state:
        record(state, observation)
        return state.warnings
