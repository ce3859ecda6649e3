"""The cache kind protocol: everything the rest of hfcache knows about a cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from hfcache.caches._common import PRUNE_LOCK
from hfcache.caches.deletion import PATHS, Deletion
from hfcache.model import CacheInventory


@runtime_checkable
class CacheKind(Protocol):
    """What every cache kind provides. ``kind`` is the name used by ``--kind`` and in JSON."""

    # Read-only: a plain attribute, a frozen dataclass's field or a property all provide them.
    @property
    def kind(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def types(self) -> tuple[str, ...]: ...

    def default_roots(self, env: Mapping[str, str]) -> list[str]:
        """Where the owning library puts its cache, given these environment variables (most used first)."""
        ...

    def recognizes(self, root: str) -> bool:
        """Whether an existing folder looks like this kind's cache (to pick the kind of a ``--cache-dir``)."""
        ...

    def scan(self, root: str, *, explicit: bool = True) -> CacheInventory:
        """Scan one root; ``explicit`` roots must exist and be recognisable, default ones may be absent."""
        ...


def shapes_of(kind: object) -> tuple[str, ...]:
    """The deletion shapes a kind declares (empty: nothing of it is ever deleted)."""
    return tuple(getattr(kind, "shapes", ()) or ())


def deletion_of(kind: object) -> Deletion:
    """How a kind's units leave the disk."""
    deletion = getattr(kind, "deletion", None)
    return deletion if isinstance(deletion, Deletion) else PATHS


def lock_file_of(kind: object) -> str:
    """Where, relative to its root, a kind's caches keep hfcache's prune lock."""
    return getattr(kind, "lock_file", None) or PRUNE_LOCK
