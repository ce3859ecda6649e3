"""Cache kinds behind one small protocol, and the scan over all selected roots.

Each kind knows where its library puts its cache (read from the environment at call
time) and how to scan a root into the common inventory model. Today there is one kind,
the Hugging Face hub cache; torch hub, Keras and others plug in here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from ..errors import UsageError
from ..model import CacheInventory, Inventory
from .huggingface import HuggingFaceHub


class CacheKind(Protocol):
    kind: str
    title: str

    def default_root(self, env: Mapping[str, str]) -> str:
        """Where the owning library would put its cache, given these environment variables."""
        ...

    def scan(self, root: str, *, explicit: bool = True) -> CacheInventory:
        """Scan one root; ``explicit`` roots must exist and be recognisable, default ones may be absent."""
        ...


KINDS: dict[str, CacheKind] = {k.kind: k for k in (HuggingFaceHub(),)}


def scan_caches(
    cache_dirs: Iterable[str | os.PathLike[str]] | None = None,
    *,
    kind: str = "huggingface",
    env: Mapping[str, str] | None = None,
    now: float | None = None,
) -> Inventory:
    """Scan the default root of ``kind`` (from ``env``, default ``os.environ``), or the given roots instead.

    Roots given twice (also through different spellings or symlinks) are scanned once.

    >>> import tempfile
    >>> inv = scan_caches([tempfile.mkdtemp()])
    >>> [c.items for c in inv.caches]
    [()]
    """
    if kind not in KINDS:
        raise UsageError(f"unknown cache kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    cache_kind = KINDS[kind]
    scanned_at = time.time() if now is None else now
    if cache_dirs is None:
        roots = [(cache_kind.default_root(os.environ if env is None else env), False)]
    else:
        roots = [(os.fspath(d), True) for d in cache_dirs]
    caches: list[CacheInventory] = []
    seen: set[str] = set()
    for root, explicit in roots:
        inventory = cache_kind.scan(root, explicit=explicit)
        if inventory.root in seen:
            continue
        seen.add(inventory.root)
        caches.append(inventory)
    return Inventory(caches=tuple(caches), scanned_at=scanned_at)
