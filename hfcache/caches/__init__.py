"""Cache kinds behind one small protocol, their registry, and the scan over all selected roots.

A kind knows where its library puts its cache (read from the environment at call time),
how to recognise and scan a root into the common inventory model, and through that model
what its deletion units are (each revision's ``unit_paths``) and what must never be deleted
(``CacheInventory.protected``). Built-in kinds: the Hugging Face hub, torch hub, Keras, Xet,
datasets, kagglehub and the pre-4.22 transformers cache. Other packages add kinds through
the entry-point group ``hfcache.caches``; an entry point names a class or factory (called
with no arguments) or an instance::

    [project.entry-points."hfcache.caches"]
    ollama = "hfcache_ollama:OllamaCache"
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol, runtime_checkable

from ..errors import CacheNotADirectory, CacheNotFound, CacheUnreadable, HfcacheError, NotACache, UsageError
from ..model import CacheInventory, Inventory, ScanWarning
from .datasets import DATASETS
from .huggingface import HUB
from .kagglehub import KAGGLEHUB
from .keras import KERAS
from .torch import TORCH
from .transformers_legacy import TRANSFORMERS_LEGACY
from .xet import XET

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hfcache.caches"


@runtime_checkable
class CacheKind(Protocol):
    """What every cache kind provides. ``kind`` is the name used by ``--kind`` and in JSON."""

    kind: str
    title: str
    types: tuple[str, ...]

    def default_roots(self, env: Mapping[str, str]) -> list[str]:
        """Where the owning library puts its cache, given these environment variables (most used first)."""
        ...

    def recognizes(self, root: str) -> bool:
        """Whether an existing folder looks like this kind's cache (to pick the kind of a ``--cache-dir``)."""
        ...

    def scan(self, root: str, *, explicit: bool = True) -> CacheInventory:
        """Scan one root; ``explicit`` roots must exist and be recognisable, default ones may be absent."""
        ...


BUILTIN: tuple[CacheKind, ...] = (HUB, TORCH, KERAS, XET, DATASETS, KAGGLEHUB, TRANSFORMERS_LEGACY)
KINDS: dict[str, CacheKind] = {k.kind: k for k in BUILTIN}


@dataclass(frozen=True)
class Registry:
    """The kinds available, built-in first, and what went wrong loading plug-ins (one line each)."""

    kinds: dict[str, CacheKind] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def _load_plugin(ep: EntryPoint) -> CacheKind:
    obj = ep.load()
    # A class or a factory function is called with no arguments; an instance is used as is.
    kind = obj() if isinstance(obj, type) or (callable(obj) and not isinstance(obj, CacheKind)) else obj
    if not isinstance(kind, CacheKind):
        raise TypeError("it does not provide kind, title, types, default_roots, recognizes and scan")
    return kind


def load_registry(plugins: Iterable[EntryPoint] | None = None) -> Registry:
    """Built-in kinds plus those of the ``hfcache.caches`` entry points.

    A plug-in that fails to load, is not a cache kind, or reuses a taken name is left out,
    and the reason is kept in ``problems``: one broken plug-in never stops a scan.
    """
    kinds = dict(KINDS)
    problems: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP) if plugins is None else plugins:
        try:
            kind = _load_plugin(ep)
        except Exception as e:  # noqa: BLE001 - third-party code: any failure is reported, never fatal
            problems.append(f"cache plug-in {ep.name!r} ({ep.value}) not loaded: {type(e).__name__}: {e}")
            continue
        if kind.kind in kinds:
            problems.append(f"cache plug-in {ep.name!r} ({ep.value}) not loaded: kind {kind.kind!r} already exists")
            continue
        kinds[kind.kind] = kind
    return Registry(kinds, tuple(problems))


@lru_cache(maxsize=1)
def registry() -> Registry:
    """The registry of this process (entry points are read once)."""
    return load_registry()


def select_kinds(names: Iterable[str] | None, reg: Registry) -> list[CacheKind]:
    """The kinds named (each once, in order), or every kind when None; an unknown name is a :class:`UsageError`."""
    if names is None:
        return list(reg.kinds.values())
    chosen = list(dict.fromkeys(names))
    for name in chosen:
        if name not in reg.kinds:
            raise UsageError(f"unknown cache kind {name!r}; known: {', '.join(reg.kinds)}")
    return [reg.kinds[n] for n in chosen]


def _choose_kind(root: str, allowed: list[CacheKind]) -> CacheKind:
    """The kind of an explicit root: the first allowed kind that recognises it, else the first allowed one."""
    if len(allowed) > 1 and os.path.isdir(root):
        for kind in allowed:
            if kind.recognizes(root):
                return kind
    return allowed[0]


def _failed(kind: CacheKind, root: str, error: HfcacheError) -> CacheInventory:
    """A default root that cannot be scanned, while scanning every kind: a warning, not the end of the scan."""
    warning = ScanWarning(os.path.abspath(root), f"not scanned: {error}")
    return CacheInventory(kind=kind.kind, title=kind.title, root=os.path.abspath(root), warnings=(warning,))


def scan_caches(
    cache_dirs: Iterable[str | os.PathLike[str]] | None = None,
    *,
    kinds: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
    kind_registry: Registry | None = None,
    jobs: int = 1,
    ledger: bool = True,
) -> Inventory:
    """Scan the default roots of ``kinds`` (all when None), or the given roots instead.

    Default roots come from ``env`` (default ``os.environ``). A given root is scanned as
    the first of ``kinds`` that recognises it (the hub cache when none does, so its error
    explains what is wrong). Roots given twice (also through different spellings or
    symlinks) are scanned once. When every kind is scanned by default, one kind's unreadable
    or unrecognisable root becomes a warning on that cache; otherwise it is an error.
    ``jobs`` > 1 and ``ledger=False`` (no blob ledger: for an inventory that is only shown,
    not planned with) are passed on to kinds that take them (``parallel``: the hub's).

    >>> import tempfile
    >>> inv = scan_caches([tempfile.mkdtemp()])
    >>> [(c.kind, c.items) for c in inv.caches]
    [('huggingface', ())]
    """
    reg = registry() if kind_registry is None else kind_registry
    allowed = select_kinds(kinds, reg)
    scanned_at = time.time() if now is None else now
    environ = os.environ if env is None else env
    roots: list[tuple[CacheKind, str, bool]]
    if cache_dirs is None:
        roots = [(k, root, False) for k in allowed for root in k.default_roots(environ)]
    else:
        roots = [(_choose_kind(os.fspath(d), allowed), os.fspath(d), True) for d in cache_dirs]
    forgiving = cache_dirs is None and kinds is None
    caches: list[CacheInventory] = []
    seen: set[str] = set()
    for kind, root, explicit in roots:
        started = time.monotonic()
        try:
            options = {"jobs": jobs} if jobs > 1 else {}
            if not ledger:
                options["ledger"] = False
            if options and getattr(kind, "parallel", False):
                inventory = kind.scan(root, explicit=explicit, **options)
            else:
                inventory = kind.scan(root, explicit=explicit)
        except (NotACache, CacheUnreadable, CacheNotADirectory, CacheNotFound) as e:
            if not forgiving:
                raise
            inventory = _failed(kind, root, e)
        if not inventory.exists:
            log.info("%s: %s does not exist (nothing cached yet)", kind.kind, root)
        elif log.isEnabledFor(logging.INFO):  # the counts below walk every item: only for -v
            log.info(
                "%s: scanned %s in %.2fs: %d items, %d revisions, %d bytes, %d warnings",
                kind.kind,
                inventory.root,
                time.monotonic() - started,
                len(inventory.items),
                sum(len(i.revisions) for i in inventory.items),
                inventory.size_bytes,
                len(inventory.all_warnings),
            )
        if inventory.root in seen:
            continue
        seen.add(inventory.root)
        caches.append(inventory)
    return Inventory(caches=tuple(caches), scanned_at=scanned_at)
