"""Cache kinds behind one small protocol, their registry, and the scan over all selected roots.

A kind knows where its library puts its cache (read from the environment at call time),
how to recognise and scan a root into the common inventory model, and through that model
what its deletion units are (each revision's ``unit_paths``) and what must never be deleted
(``CacheInventory.protected``). Built-in kinds: the Hugging Face hub, torch hub, ModelScope,
TF Hub, vLLM's compile cache, Keras, Xet, datasets, kagglehub, Ollama, the pre-4.22 transformers
cache and llama.cpp's flat cache. Other packages add kinds through
the entry-point group ``hfcache.caches``; an entry point names a class or factory (called
with no arguments) or an instance::

    [project.entry-points."hfcache.caches"]
    lmstudio = "hfcache_lmstudio:LmStudioCache"
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from hfcache.caches.confine import confine_to_mount
from hfcache.caches.protocol import CacheKind
from hfcache.caches.registry import Registry, registry, select_kinds
from hfcache.errors import CacheNotADirectory, CacheNotFound, CacheUnreadable, HfcacheError, NotACache
from hfcache.fs.mounts import mount_points_under
from hfcache.model import CacheInventory, Inventory, ScanWarning

log = logging.getLogger(__name__)


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
    root = os.path.abspath(root)
    return CacheInventory(kind=kind.kind, title=kind.title, root=root, warnings=(warning,), has_refs=kind.has_refs)


def _options(
    kind: CacheKind, *, jobs: int, ledger: bool, listing: bool, skip: Callable[[str, str, str], bool] | None
) -> dict[str, object]:
    """What of ``scan_caches``' options ``kind``'s scan takes (none but the defaults: an empty dict)."""
    options: dict[str, object] = {}
    if kind.parallel:
        if jobs > 1:
            options["jobs"] = jobs
        if not ledger:
            options["ledger"] = False
        if listing:
            options["listing"] = True
    if skip is not None and kind.skips_unchanged:
        options["skip"] = skip
    return options


def _identity(root: str) -> tuple[object, ...]:
    """What makes two roots one folder: ``(st_dev, st_ino)`` of the resolved root (a bind mount too), else its path."""
    try:
        st = os.stat(root)
    except OSError:
        return ("path", os.path.abspath(root))
    return ("inode", st.st_dev, st.st_ino)


def scan_caches(
    cache_dirs: Iterable[str | os.PathLike[str]] | None = None,
    *,
    kinds: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
    kind_registry: Registry | None = None,
    jobs: int = 1,
    ledger: bool = True,
    listing: bool = False,
    skip: Callable[[str, str, str], bool] | None = None,
) -> Inventory:
    """Scan the default roots of ``kinds`` (all when None), or the given roots instead.

    Default roots come from ``env`` (default ``os.environ``). A given root is scanned as
    the first of ``kinds`` that recognises it (the hub cache when none does, so its error
    explains what is wrong). Roots given twice (also through different spellings, symlinks
    or bind mounts: the same ``(st_dev, st_ino)``) are scanned once, under the path given
    first. What lies beyond a mount point inside a root is not counted and never deleted
    (:func:`confine_to_mount`). When every kind is scanned by default, one kind's unreadable
    or unrecognisable root becomes a warning on that cache; otherwise it is an error.
    ``jobs`` > 1 and ``ledger=False`` (no blob ledger: for an inventory that is only shown,
    not planned with) are passed on to kinds that take them (``parallel``: the hub's), and so
    is ``listing=True`` (each revision's files as walked, :class:`~hfcache.model.FileListing`:
    for a verify). ``skip`` goes to kinds that can leave an unchanged item out (``skips_unchanged``:
    the hub's; a verify's :class:`hfcache.verify.memo.Reuse`).

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
    folders: dict[tuple[object, ...], str] = {}
    for kind, root, explicit in roots:
        identity = _identity(root)
        if identity in folders:
            log.info("%s: %s is the folder %s already scanned: scanned once", kind.kind, root, folders[identity])
            continue
        folders[identity] = root
        started = time.monotonic()
        try:
            options = _options(kind, jobs=jobs, ledger=ledger, listing=listing, skip=skip)
            if options:
                inventory = kind.scan(root, explicit=explicit, **options)
            else:
                inventory = kind.scan(root, explicit=explicit)
        except (NotACache, CacheUnreadable, CacheNotADirectory, CacheNotFound) as e:
            if not forgiving:
                raise
            inventory = _failed(kind, root, e)
        else:
            inventory = confine_to_mount(inventory, mount_points_under(inventory.root) if inventory.exists else [])
            if kind.has_refs and not inventory.has_refs:  # the kind says so for every inventory of it
                inventory = replace(inventory, has_refs=True)
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
