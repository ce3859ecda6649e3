"""The cache kind protocol: everything the rest of hfcache knows about a cache.

Planning and execution know a cache only through its :class:`CacheKind` and the inventory its
``scan`` returns; no module outside :mod:`hfcache.caches` names a kind. What a kind decides
travels in that inventory: which revision its library loads by default
(:attr:`~hfcache.model.Revision.default`), whether revisions have refs
(:attr:`~hfcache.model.CacheInventory.has_refs`), what must never be deleted
(``protected``), and what each unit is (``unit_paths``). How its units leave the disk, how to
tell a download running into an item, and how a killed prune is recovered are its
``deletion`` (:class:`~hfcache.caches.deletion.Deletion`).

A plug-in may provide only the members marked required; :func:`complete` gives it the
defaults of the others, once, when the registry loads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from hfcache.caches.deletion import PATHS, Deletion
from hfcache.model import CacheInventory, Identity, Item, Revision

# hfcache's prune lock, relative to a cache root, for kinds that do not say where they keep it.
PRUNE_LOCK = ".hfcache-prune.lock"
_DEFAULTED = ("shapes", "lock_file", "deletion", "parallel", "has_refs", "skips_unchanged")


class Uri(NamedTuple):
    """What a kind's URI names: an item id, maybe a revision (or ref), maybe an item type, maybe a file in it."""

    id: str
    revision: str | None = None
    type: str | None = None
    file: str | None = None


class Expected(NamedTuple):
    """What one file of a revision should hash to, as its kind knows it (``hfcache verify``).

    ``name`` is the file as its library names it (its path in the repo, a file name);
    ``path`` the entry a user sees (a hub snapshot link), ``data`` the file holding its bytes
    (the blob), None when there is none (a link to no blob: ``missing``). ``algorithm`` is
    ``sha256``, ``git-sha1`` (git's blob hash) or ``sha256-prefix`` (``digest`` is the start
    of a sha256), with the expected ``digest``; both None when the file cannot be checked,
    and ``why`` says why. ``seen`` is the ``(dev, ino, size, mtime_ns, ctime_ns)`` of
    ``data`` when the scan stat'ed it (:class:`~hfcache.model.FileListing`): the verify then
    does not stat it again to decide whether to read it; None, and it does.
    """

    name: str
    path: str
    data: str | None
    algorithm: str | None = None
    digest: str | None = None
    why: str | None = None
    seen: Identity | None = None


ALGORITHMS = ("sha256", "git-sha1", "sha256-prefix")


class Stored(NamedTuple):
    """One file of a unit as an archive keeps it: where restoring writes it (``place``, relative to the root, ``/``)
    and where its bytes are now (``source``), its library's ``name`` for it, and what its cache names it by, if
    anything: an algorithm of :data:`ALGORITHMS` and the digest (a corrupt file is then never archived; a full
    sha256 lets an archive that has the object skip reading it)."""

    place: str
    source: str
    name: str
    check: tuple[str, str] | None = None


class Layout(NamedTuple):
    """What restoring a unit writes under a root of its kind: files, relative symlinks (``place`` -> ``target``),
    and small texts written only where nothing is (``place`` -> ``text``: a hub ref). ``problem`` says why the unit
    cannot be archived whole (a link to a blob that is gone): then nothing of it is."""

    files: tuple[Stored, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    texts: tuple[tuple[str, str], ...] = ()
    problem: str | None = None
    dirs: tuple[str, ...] = ()  # folders restored even when empty (an extracted archive's)
    merge: bool = False  # a revision is immutable (a commit): its manifests from several machines add up


class Wanted(NamedTuple):
    """A revision a node must hold (``hfcache sync``): a model id, the revision (a ref or commit) and, optionally, which
    of its files (``include``/``exclude`` globs, as ``snapshot_download`` takes them)."""

    id: str
    revision: str | None = None
    type: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    url: str | None = None  # for kinds that download a file by its address (torch hub checkpoints)


class Fetched(NamedTuple):
    """What fetching a wanted revision did: the revision it is (a commit), its path in the cache, files and bytes the
    download added (0: everything was there)."""

    revision: str
    path: str
    files: int
    bytes: int


def unit_layout(cache: CacheInventory, item: Item, rev: Revision) -> Layout:
    """The default :meth:`CacheKind.layout`: every file (and symlink) under the unit's paths, as it lies."""
    files: list[Stored] = []
    links: list[tuple[str, str]] = []
    dirs: list[str] = []
    root = cache.root.rstrip(os.sep) + os.sep

    def place(path: str) -> str:
        return path[len(root) :].replace(os.sep, "/")

    for unit in rev.unit_paths:
        if not unit.startswith(root):
            return Layout(problem=f"{unit} is not under the cache root")
        stack = [unit]
        while stack:
            path = stack.pop()
            try:
                st = os.lstat(path)
            except OSError as e:
                return Layout(problem=f"{path}: {e.strerror or e}")
            if os.path.islink(path):
                links.append((place(path), os.readlink(path)))
                try:  # reading a link moves its own access time, which a deletion's check would take for a use
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
                except OSError:
                    pass
            elif os.path.isdir(path):
                dirs.append(place(path))
                stack.extend(sorted((os.path.join(path, n) for n in os.listdir(path)), reverse=True))
            elif st.st_size >= 0 and os.path.isfile(path):
                files.append(Stored(place(path), path, os.path.basename(path)))
            else:
                return Layout(problem=f"{path}: not a file, a folder or a link")
    return Layout(tuple(files), tuple(links), dirs=tuple(dirs))


def no_hashes(title: str, rev: Revision) -> list[Expected]:
    """A kind that keeps no hash of its files: each unit path of ``rev``, unverifiable, and why."""
    return [Expected(os.path.basename(p), p, p, why=f"the {title} keeps no hash of its files") for p in rev.unit_paths]


REQUIRED = ("kind", "title", "types", "default_roots", "recognizes", "scan")


@runtime_checkable
class CacheKind(Protocol):
    """What every cache kind provides. ``kind`` is the name used by ``--kind`` and in JSON.

    Required: ``kind``, ``title``, ``types`` (the item types its scan reports),
    ``default_roots``, ``recognizes`` and ``scan``. The rest have defaults (:func:`complete`):

    - ``shapes``: regular expressions over every path a prune may remove, relative to the
      root (``/``-separated). Empty (the default): the kind is scanned, never pruned.
    - ``lock_file``: where, relative to the root, hfcache's own prune lock lives.
    - ``deletion``: how units leave the disk (default: each unit's paths, strictly).
    - ``parallel``: ``scan`` also takes ``jobs=N`` (worker processes), ``ledger=False``
      (no :class:`~hfcache.model.BlobLedger`) and ``listing=True`` (a
      :class:`~hfcache.model.FileListing`, which its ``expected`` may use: ``hfcache verify``).
    - ``has_refs``: revisions are named by refs (branches, tags), as the hub's are; every
      inventory of the kind says so (:attr:`~hfcache.model.CacheInventory.has_refs`).
    - ``skips_unchanged``: ``scan`` also takes ``skip=`` (a callable of kind, root and item
      folder): an item folder it says True of is left out of the inventory (a repeat
      ``hfcache verify`` counts an unchanged repo from its memo, :mod:`hfcache.verify.memo`).

    The revision a library loads when asked for none is the scanner's to mark
    (:attr:`~hfcache.model.Revision.default`): a keep rule always keeps it.
    """

    # Read-only: a plain attribute, a frozen dataclass's field or a property all provide them.
    @property
    def kind(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def types(self) -> tuple[str, ...]: ...

    @property
    def shapes(self) -> tuple[str, ...]: ...

    @property
    def lock_file(self) -> str: ...

    @property
    def deletion(self) -> Deletion: ...

    @property
    def parallel(self) -> bool: ...

    @property
    def has_refs(self) -> bool: ...

    @property
    def skips_unchanged(self) -> bool: ...

    def default_roots(self, env: Mapping[str, str]) -> list[str]:
        """Where the owning library puts its cache, given these environment variables (most used first)."""
        ...

    def recognizes(self, root: str) -> bool:
        """Whether an existing folder looks like this kind's cache (to pick the kind of a ``--cache-dir``)."""
        ...

    def scan(self, root: str, *, explicit: bool = True, **options: Any) -> CacheInventory:
        """Scan one root; ``explicit`` roots must exist and be recognisable, default ones may be absent."""
        ...

    def parse_uri(self, text: str) -> Uri | None:
        """What a URI of this kind's own scheme names (``hf://datasets/org/name@v1``), or None (default)."""
        ...

    def expected(self, cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
        """What each file of ``rev`` should hash to (default: nothing known, :func:`no_hashes`)."""
        ...

    def layout(self, cache: CacheInventory, item: Item, rev: Revision) -> Layout:
        """What an archive keeps of ``rev``, and restoring it writes (default: the unit's files as they lie)."""
        ...

    def fetch(self, root: str, wanted: Wanted) -> Fetched:
        """Download ``wanted`` into the cache at ``root`` with the owning library (``hfcache sync``).

        Raises :class:`NotImplementedError` for a kind that cannot fetch (the default); any other
        exception is the download's failure, reported for that entry.
        """
        ...


@dataclass(frozen=True)
class _Completed:
    """A plug-in's kind with the defaults of what it leaves out (or gives as None)."""

    inner: Any
    shapes: tuple[str, ...]
    lock_file: str
    deletion: Deletion
    parallel: bool
    has_refs: bool
    skips_unchanged: bool = False

    @property
    def kind(self) -> str:
        return str(self.inner.kind)

    @property
    def title(self) -> str:
        return str(self.inner.title)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self.inner.types)

    def default_roots(self, env: Mapping[str, str]) -> list[str]:
        return list(self.inner.default_roots(env))

    def recognizes(self, root: str) -> bool:
        return bool(self.inner.recognizes(root))

    def scan(self, root: str, *, explicit: bool = True, **options: Any) -> CacheInventory:
        result: CacheInventory = self.inner.scan(root, explicit=explicit, **options)
        return result

    def parse_uri(self, text: str) -> Uri | None:
        parse = getattr(self.inner, "parse_uri", None)
        return parse(text) if callable(parse) else None

    def expected(self, cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
        given = getattr(self.inner, "expected", None)
        return list(given(cache, item, rev)) if callable(given) else no_hashes(self.title, rev)

    def fetch(self, root: str, wanted: Wanted) -> Fetched:
        given = getattr(self.inner, "fetch", None)
        if not callable(given):
            raise NotImplementedError(f"the {self.title} kind cannot fetch models")
        result: Fetched = given(root, wanted)
        return result

    def layout(self, cache: CacheInventory, item: Item, rev: Revision) -> Layout:
        given = getattr(self.inner, "layout", None)
        found = given(cache, item, rev) if callable(given) else unit_layout(cache, item, rev)
        return found if isinstance(found, Layout) else Layout(problem="its kind's layout is not a Layout")


def complete(obj: object) -> CacheKind:
    """``obj`` as a full :class:`CacheKind`: as it is when it is one, else with the defaults it lacks.

    Raises :class:`TypeError` when a required member is missing.
    """
    missing = [name for name in REQUIRED if not hasattr(obj, name)]
    if missing:
        raise TypeError(f"it does not provide {', '.join(missing)}")
    deletion = getattr(obj, "deletion", None)
    full = _Completed(
        obj,
        shapes=tuple(getattr(obj, "shapes", ()) or ()),
        lock_file=getattr(obj, "lock_file", None) or PRUNE_LOCK,
        deletion=deletion if isinstance(deletion, Deletion) else PATHS,
        parallel=bool(getattr(obj, "parallel", False)),
        has_refs=bool(getattr(obj, "has_refs", False)),
        skips_unchanged=bool(getattr(obj, "skips_unchanged", False)),
    )
    # As it is only when every member is there and already what the default would make of it
    # (a tuple of shapes, a lock file name, a Deletion): a plug-in's None or list gets the default.
    same = all(getattr(obj, k, None) is getattr(full, k) or getattr(obj, k, None) == getattr(full, k) for k in _DEFAULTED)
    return obj if isinstance(obj, CacheKind) and same else full
