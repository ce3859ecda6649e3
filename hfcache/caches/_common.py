"""What every cache kind needs: environment lookup, root checks, measuring trees, building items.

Kinds other than the hub cache are plain trees of files and folders, with no sharing
between units. Their scanners find the *units* (what is deleted together) and hand them to
:func:`build_item`, which measures them the same way for every kind: ``lstat`` only, never
following a symlink, never opening a file, hard links counted once.
"""

from __future__ import annotations

import json
import os
import re
import stat as stat_mod
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from hfcache.caches.deletion import PATHS, Deletion
from hfcache.caches.protocol import PRUNE_LOCK, Expected, Fetched, Layout, Uri, Wanted, no_hashes, unit_layout
from hfcache.caches.versions import version_key
from hfcache.errors import CacheNotADirectory, CacheNotFound, CacheUnreadable, NotACache
from hfcache.fs.locks import is_lock_held
from hfcache.model import CacheInventory, Item, PartialFile, Revision, ScanWarning

# hfcache's own lock against two prunes of one root (kinds whose root may hold it).
# A name Python's tempfile module makes (mkstemp, mkdtemp, NamedTemporaryFile): "tmp" and 8 characters.
TEMPFILE_RE = re.compile(r"tmp[a-z0-9_]{8}")

# OS litter every scanner skips, and hfcache's own lock file.
FILES_TO_IGNORE = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", PRUNE_LOCK})


def env_path(env: Mapping[str, str], name: str) -> str | None:
    """An environment variable naming a folder; empty counts as unset (XDG's rule).

    Libraries differ here (torch would take ``TORCH_HOME=""`` as the current folder); a
    housekeeping tool must never mistake the current folder for a cache.
    """
    value = env.get(name)
    return value if value else None


def expanduser(path: str, env: Mapping[str, str]) -> str:
    """``os.path.expanduser``, reading ``HOME`` from ``env``.

    >>> expanduser("~/.keras", {"HOME": "/home/me"})
    '/home/me/.keras'
    """
    if path.startswith("~"):
        home = env.get("HOME") or os.path.expanduser("~")
        head, sep, tail = path[1:].partition(os.sep)
        if head == "":
            return home + sep + tail if tail or sep else home
        return os.path.expanduser(path)
    return path


def expandvars(path: str, env: Mapping[str, str]) -> str:
    """``os.path.expandvars``, reading ``env``."""
    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), path)


def xdg_cache_home(env: Mapping[str, str]) -> str:
    """``$XDG_CACHE_HOME``, else ``~/.cache``."""
    return expanduser(env_path(env, "XDG_CACHE_HOME") or "~/.cache", env)


def check_dir(path: str, *, explicit: bool, title: str) -> str | None:
    """Validate a root before scanning it; return its resolved path, or None for "nothing cached yet".

    A default root that does not exist yet is normal. An explicit one that does not exist,
    is not a folder or cannot be read is an error with its own exit code.
    """
    given = os.path.abspath(path)
    if not os.path.lexists(given):
        if explicit:
            raise CacheNotFound(f"{title} not found: {given}", path=given)
        return None
    try:
        mode = os.stat(given).st_mode
    except FileNotFoundError:
        raise CacheNotFound(f"{title} is a broken symlink: {given}", path=given) from None
    except OSError as e:
        raise CacheUnreadable(f"cannot read {title} {given}: {e.strerror or e}", path=given) from e
    if not stat_mod.S_ISDIR(mode):
        raise CacheNotADirectory(f"{title} is not a directory: {given}", path=given)
    real = os.path.realpath(given)
    if not os.access(real, os.R_OK | os.X_OK):
        raise CacheUnreadable(f"cannot read {title} {given}: permission denied", path=given)
    return real


def names_in(folder: str) -> list[str]:
    """The names in a folder, or none when it cannot be listed (for ``recognizes``).

    Without OS litter and hfcache's own prune lock: a cache every unit of which a prune
    removed holds only that lock, which must not make it look like a datasets cache (whose
    recogniser takes any ``*.lock``) when a restore or a scan asks what it is.
    """
    try:
        return [n for n in os.listdir(folder) if n not in FILES_TO_IGNORE]
    except OSError:
        return []


def open_and_scan(
    root: str,
    scan_entries: Callable[[str, list[os.DirEntry[str]], list[ScanWarning]], CacheInventory],
    *,
    explicit: bool,
    kind: str,
    title: str,
    recognise: Callable[[str], bool],
    refusal: str,
) -> CacheInventory:
    """Check and list a root, then ``scan_entries(resolved root, its entries, warnings so far)``.

    A default root that does not exist yet is an inventory of nothing cached. A non-empty
    folder that ``recognise`` refuses is :class:`NotACache`, with ``refusal`` saying what it lacks.
    """
    real = check_dir(root, explicit=explicit, title=f"{title} folder")
    if real is None:
        return CacheInventory(kind=kind, title=title, root=os.path.abspath(root), exists=False)
    warnings: list[ScanWarning] = []
    entries = list_dir(real, warnings)
    if entries and not recognise(real):
        raise NotACache(f"not a {title}: {root} {refusal}", path=root)
    return scan_entries(real, entries, warnings)


def inventory(
    kind: str,
    title: str,
    root: str,
    items: Iterable[Item],
    warnings: Iterable[ScanWarning],
    protected: Iterable[str],
    partials: Iterable[PartialFile] = (),
) -> CacheInventory:
    """The inventory of a kind whose items share nothing: the total is the sum of the items."""
    found = sorted(items, key=lambda i: (i.type, i.id))
    return CacheInventory(
        kind=kind,
        title=title,
        root=root,
        size_bytes=sum(i.size_bytes for i in found),
        items=tuple(found),
        partial_files=tuple(sorted(partials, key=lambda p: p.path)),
        warnings=tuple(warnings),
        protected=(root, *protected),
    )


@dataclass(frozen=True)
class FunctionKind:
    """A cache kind made of a module's functions (see :class:`hfcache.caches.protocol.CacheKind`).

    ``shapes`` are regular expressions over a path relative to the root (``/``-separated):
    every path a prune removes must match one of them. ``lock_file`` is where, relative to
    the root, hfcache's own prune lock lives. ``deletion`` is how its units leave the disk
    (:mod:`hfcache.caches.deletion`; by default each unit's paths). A kind with ``parallel`` takes ``jobs=N`` (worker
    processes), ``ledger=False`` (no :class:`~hfcache.model.BlobLedger`) and ``listing=True``
    (a :class:`~hfcache.model.FileListing`) in ``scan``.
    """

    kind: str
    title: str
    types: tuple[str, ...]
    roots: Callable[[Mapping[str, str]], list[str]]
    recognise: Callable[[str], bool]
    scan_root: Callable[..., CacheInventory]
    shapes: tuple[str, ...] = ()
    lock_file: str = PRUNE_LOCK
    parallel: bool = False
    deletion: Deletion = PATHS
    has_refs: bool = False
    uri: Callable[[str], Uri | None] | None = None  # the kind's own URI scheme, if it has one
    hashes: Callable[[CacheInventory, Item, Revision], list[Expected]] | None = None  # what its files hash to
    archive: Callable[[CacheInventory, Item, Revision], Layout] | None = None  # what an archive keeps of a unit
    download: Callable[[str, Wanted], Fetched] | None = None  # hfcache sync: fetch a revision with the library
    skips_unchanged: bool = False  # its scan takes skip= (hfcache.verify.memo: a verify leaves unchanged repos out)

    def fetch(self, root: str, wanted: Wanted) -> Fetched:
        if self.download is None:
            raise NotImplementedError(f"the {self.title} kind cannot fetch models")
        return self.download(root, wanted)

    def layout(self, cache: CacheInventory, item: Item, rev: Revision) -> Layout:
        return self.archive(cache, item, rev) if self.archive is not None else unit_layout(cache, item, rev)

    def parse_uri(self, text: str) -> Uri | None:
        return self.uri(text) if self.uri is not None else None

    def expected(self, cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
        return self.hashes(cache, item, rev) if self.hashes is not None else no_hashes(self.title, rev)

    def default_roots(self, env: Mapping[str, str]) -> list[str]:
        return self.roots(env)

    def recognizes(self, root: str) -> bool:
        return self.recognise(root)

    def scan(self, root: str, *, explicit: bool = True, **options: int) -> CacheInventory:
        return self.scan_root(root, explicit=explicit, **options)


def url_file_name(wanted: Wanted, needed: str) -> str:
    """The file name at the end of ``wanted.url``, for a kind that downloads one file by its address (``hfcache sync``).

    Raises :class:`ValueError` (``needed`` says what an entry without an address lacks) for
    no address, or one that names no file.
    """
    if not wanted.url:
        raise ValueError(needed)
    name = os.path.basename(urllib.parse.urlparse(wanted.url).path)
    if not name or name.startswith("."):
        raise ValueError(f"{wanted.url}: no file name in the address")
    return name


def list_dir(folder: str, warnings: list[ScanWarning]) -> list[os.DirEntry[str]]:
    """The entries of ``folder`` sorted by name, OS litter left out; on failure a warning and nothing."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if e.name not in FILES_TO_IGNORE), key=lambda e: e.name)
    except OSError as e:
        warnings.append(ScanWarning(folder, f"cannot read folder ({e.strerror or e})"))
        return []


def is_dir(entry: os.DirEntry[str]) -> bool:
    """A real folder (a symlink to one is not: scanners never follow links)."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


class Measure(NamedTuple):
    size: int
    atime: float
    mtime: float
    nb_files: int


def measure(path: str, seen: set[tuple[int, int]], warnings: list[ScanWarning]) -> Measure:
    """Apparent size, newest atime and mtime, and file count of a file or a whole tree.

    ``lstat`` only: symlinks count as themselves (a few bytes), never as their target.
    A file with several hard links is counted once per ``seen`` set. A folder with no
    files takes its own times.
    """
    try:
        st = os.lstat(path)
    except OSError as e:
        warnings.append(ScanWarning(path, f"cannot stat ({e.strerror or e})"))
        return Measure(0, 0.0, 0.0, 0)
    if not stat_mod.S_ISDIR(st.st_mode):
        return Measure(counted(st, seen), st.st_atime, st.st_mtime, 1)
    size, atime, mtime, count = 0, 0.0, 0.0, 0
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            warnings.append(ScanWarning(folder, f"cannot read folder ({e.strerror or e})"))
            continue
        for entry in entries:
            try:
                est = entry.stat(follow_symlinks=False)
            except OSError as e:
                warnings.append(ScanWarning(entry.path, f"cannot stat ({e.strerror or e})"))
                continue
            if stat_mod.S_ISDIR(est.st_mode):
                stack.append(entry.path)
                continue
            size += counted(est, seen)
            atime = max(atime, est.st_atime)
            mtime = max(mtime, est.st_mtime)
            count += 1
    if not count:
        atime, mtime = st.st_atime, st.st_mtime
    return Measure(size, atime, mtime, count)


def read_small_json(path: str) -> dict[str, object] | None:
    """A metadata file written next to a download (tens of bytes), read without moving its atime where the OS allows."""
    flags = os.O_RDONLY | getattr(os, "O_NOATIME", 0)
    try:
        try:
            fd = os.open(path, flags)
        except PermissionError:  # O_NOATIME needs ownership of the file
            fd = os.open(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            data = json.loads(f.read(65536))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid runs (in this PID namespace): ``kill(pid, 0)``, which sends nothing."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except OSError:  # EPERM: another user's process runs; anything else: say it runs
        return True
    return True


def read_text_noatime(path: str, limit: int = 4096) -> str | None:
    """The start of a small file, read only where its access time cannot move; else None.

    ``O_NOATIME`` (Linux; the file's owner or root): a scan that moved the atime of a file
    belonging to a unit would make the unit look just used, so where the flag is refused (or
    the platform has none) nothing is read. Never through a symlink.
    """
    noatime = getattr(os, "O_NOATIME", 0)
    if not noatime:  # pragma: no cover - not Linux
        return None
    try:
        fd = os.open(path, os.O_RDONLY | noatime | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def partial_file(
    path: str,
    item_id: str | None,
    scheme: str,
    seen: set[tuple[int, int]],
    warnings: list[ScanWarning],
    lock: str | None = None,
) -> PartialFile:
    """A leftover or in-progress download, measured; its flock tested when it has a lock file."""
    m = measure(path, seen, warnings)
    held = is_lock_held(lock) if lock else None
    return PartialFile(path, item_id, m.size, m.mtime, scheme, lock if held is not None else None, held)


def counted(st: os.stat_result, seen: set[tuple[int, int]]) -> int:
    if st.st_nlink > 1:
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return 0
        seen.add(key)
    return st.st_size


@dataclass
class Unit:
    """One deletion unit a scanner found: a revision of some item.

    ``paths[0]`` is the revision's main path; the others go with it (markers, an archive's
    extraction folder, metadata files). ``warnings`` with ``blocks_deletion`` keep
    anything from deleting through it.
    """

    revision: str
    paths: tuple[str, ...]
    version: str | None = None
    refs: tuple[str, ...] = ()
    warnings: list[ScanWarning] = field(default_factory=list)
    default: bool = False  # what the library loads when asked for no revision (Revision.default)


def build_revision(unit: Unit, seen: set[tuple[int, int]], warnings: list[ScanWarning]) -> Revision:
    size, atime, mtime, count = 0, 0.0, 0.0, 0
    for path in unit.paths:
        m = measure(path, seen, warnings)
        size += m.size
        atime, mtime, count = max(atime, m.atime), max(mtime, m.mtime), count + m.nb_files
    return Revision(
        revision=unit.revision,
        path=unit.paths[0],
        refs=unit.refs,
        size_bytes=size,
        reclaimable_bytes=size,
        last_accessed=atime,
        last_modified=mtime,
        nb_files=count,
        warnings=tuple(unit.warnings),
        version=unit.version,
        paths=unit.paths if len(unit.paths) > 1 else (),
        default=unit.default,
    )


def revision_order(rev: Revision) -> tuple[int, object, float, str]:
    """Oldest first: versioned revisions by version, then the rest by modification time."""
    if rev.version is not None:
        return (1, version_key(rev.version), rev.last_modified, rev.revision)
    return (0, 0, rev.last_modified, rev.revision)


def build_item(
    kind: str,
    item_id: str,
    item_type: str,
    path: str,
    units: Iterable[Unit],
    seen: set[tuple[int, int]],
    *,
    warnings: Iterable[ScanWarning] = (),
    owns_path: bool = False,
) -> Item:
    """Measure every unit and assemble the item; revisions come newest first.

    ``owns_path``: ``path`` is the item's own folder, and deleting the item deletes it.
    Otherwise the item's ``paths`` list every unit's files and folders, so nothing ever
    deletes ``path`` itself (a shared folder such as ``checkpoints/``).
    """
    item_warnings = list(warnings)
    revs = [build_revision(u, seen, item_warnings) for u in units]
    revs.sort(key=revision_order, reverse=True)
    members = () if owns_path else tuple(p for r in revs for p in r.unit_paths)
    return Item(
        kind=kind,
        id=item_id,
        type=item_type,
        path=path,
        size_bytes=sum(r.size_bytes for r in revs),
        last_accessed=max((r.last_accessed for r in revs), default=0.0),
        last_modified=max((r.last_modified for r in revs), default=0.0),
        revisions=tuple(revs),
        nb_blobs=sum(r.nb_files for r in revs),
        warnings=tuple(item_warnings),
        paths=members if members != (path,) else (),
    )


class ScanState:
    """What a scanner collects under one root: items, partial downloads, warnings, inodes seen."""

    def __init__(self, kind: str, root: str, warnings: list[ScanWarning]) -> None:
        self.kind = kind
        self.root = root
        self.seen: set[tuple[int, int]] = set()
        self.warnings = warnings
        self.items: list[Item] = []
        self.partials: list[PartialFile] = []

    def partial(self, path: str, item_id: str | None, scheme: str, lock: str | None = None) -> None:
        self.partials.append(partial_file(path, item_id, scheme, self.seen, self.warnings, lock))

    def unknown(self, path: str, why: str) -> None:
        self.items.append(unknown_item(self.kind, path, self.root, self.seen, why))


def unknown_item(kind: str, path: str, root: str, seen: set[tuple[int, int]], why: str) -> Item:
    """Something a scanner could not classify: shown and counted, never deletable."""
    item_id = os.path.relpath(path, root)
    warning = ScanWarning(path, f"{why}; reported, never deleted")
    return build_item(kind, item_id, "unknown", path, [Unit(os.path.basename(path), (path,), warnings=[warning])], seen)
