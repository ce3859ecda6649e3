"""ModelScope: models, datasets, studios, MCP servers and skills of the ModelScope hub, in both layouts.

Layout reference: ``CACHE-LAYOUTS.md`` section 7.2, checked against modelscope 1.40.2 with
modelscope-hub 0.5.1 (``modelscope_hub/_download.py`` ``DownloadManager``, ``config.py``,
``_cache_manager.py``) and modelscope 1.37.0, the last release writing the old layout
(``modelscope/hub/{file_download.py,snapshot_download.py,utils/caching.py}``)::

    <root>/<type>s/<owner>--<name>/snapshots/<revision>/<files>   new layout (modelscope >= 1.38)
        <file>.incomplete, <file>.parallel_tmp, <file>_<start>_<end>  a download in progress or killed
    <root>/.lock/file_<sha256>.lock                               modelscope-hub's per-file flock
    <root>/.download_state/                                       report-mode downloads' state
    <old>/models|datasets/<owner>/<name with . -> ___>/           old layout: .mdl, .msc, .mv + files
    <old>/models|datasets/._____temp/<owner>/<name>/              old downloads in progress (resumed)
    <old>/.lock/<owner>___<name>                                  the old SDK's per-repo flock
    <old>/<owner>/<name>/                                         older still (before models/)

``<root>`` is ``$MODELSCOPE_CACHE`` or ``~/.cache/modelscope``; ``<old>`` is the root itself
when ``MODELSCOPE_CACHE`` is set, else its ``hub/`` folder (the old SDK's
``~/.cache/modelscope/hub``). modelscope-hub still writes into an old folder it finds
non-empty (``_find_legacy_repo_dir``), so both layouts are live.

A new-layout repo is an item, its snapshots the revisions (named by the revision asked for,
``master`` by default). An old folder is an item with one revision (named from ``.mv``, read
without moving its access time, else ``master`` as modelscope's own scan says). A partial
download inside a snapshot or an old folder belongs to its unit (deleting the unit removes
it) and is also listed as a partial download, with its lock: junk once older than the grace
period and unlocked. Anything else (MsDataset's caches, files copied in by hand, folders
without ModelScope's metadata) is reported and never deleted, and what the library needs
(``.lock/``, ``.download_state/``, ``ast_indexer``, ``modelscope_modules/``, ...) is protected.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hfcache.caches._common import (
    FunctionKind,
    ScanState,
    Unit,
    build_item,
    env_path,
    expanduser,
    inventory,
    is_dir,
    list_dir,
    names_in,
    open_and_scan,
    read_text_noatime,
)
from hfcache.caches.deletion import TRASH, TrashDeletion, trash_left
from hfcache.caches.versions import parse_version
from hfcache.fs.locks import is_lock_held
from hfcache.model import CacheInventory, ScanWarning

if TYPE_CHECKING:
    from hfcache.fs.ops import Tree

KIND = "modelscope"
TITLE = "ModelScope cache"
SECTIONS = {"models": "model", "datasets": "dataset", "studios": "studio", "mcps": "mcp", "skills": "skill"}
OLD_SECTIONS = ("models", "datasets")  # all the old SDK wrote
OLD = "hub"  # the old SDK's cache inside the default root
LOCKS = ".lock"
TEMP = "._____temp"  # TEMPORARY_FOLDER_NAME
SNAPSHOTS = "snapshots"
MARKERS = (".mdl", ".msc")  # ModelFileSystemCache: .mdl when first used, .msc with every file
VERSION_FILE = ".mv"
# What the modelscope package keeps in its cache folder besides downloads: never items, never deleted.
LIBRARY = (".download_state", "ast_indexer", "modelscope_modules", ".modelscope_plugins")
RESERVED = (*SECTIONS, OLD, LOCKS, TEMP, TRASH, *LIBRARY)
LOCK_KEY = "modelscope-hub-download-lock-v2"
MIB = 1024 * 1024
_PART_RE = re.compile(r"(?P<target>.+)_(?P<start>\d+)_(?P<end>\d+)")
_OLD_LOCK_RE = re.compile(r"(?:file|repo)_[0-9a-f]{64}\.lock|[^/]+___[^/]+")


def default_roots(env: Mapping[str, str]) -> list[str]:
    """``$MODELSCOPE_CACHE``, else ``$MS_CACHE_HOME`` (through the modelscope package), else ``~/.cache/modelscope``.

    ``MS_CACHE_HOME`` moves only what goes through the ``modelscope`` package (its
    ``hub/__init__.py`` bridges it); ``modelscope_hub`` used alone keeps ``~/.cache/modelscope``,
    added when it exists. Neither reads ``XDG_CACHE_HOME``. ``~`` is expanded; an empty
    variable counts as unset.

    >>> default_roots({"HOME": "/home/me"}), default_roots({"HOME": "/h", "MODELSCOPE_CACHE": "~/ms"})
    (['/home/me/.cache/modelscope'], ['/h/ms'])
    """
    plain = os.path.abspath(expanduser("~/.cache/modelscope", env))
    explicit = env_path(env, "MODELSCOPE_CACHE")
    if explicit:
        return [os.path.abspath(expanduser(explicit, env))]
    legacy = env_path(env, "MS_CACHE_HOME")
    if not legacy:
        return [plain]
    roots = [os.path.abspath(expanduser(legacy, env))]
    if plain not in roots and os.path.isdir(plain):
        roots.append(plain)
    return roots


def file_lock(root: str, repo_type: str, repo_id: str, file_path: str) -> str:
    """``DownloadManager._lock_path``: the flock modelscope-hub holds while downloading one file."""
    key = "\0".join((LOCK_KEY, "file", repo_type, repo_id, file_path))
    return os.path.join(root, LOCKS, f"file_{hashlib.sha256(key.encode('utf-8')).hexdigest()}.lock")


def old_lock(old: str, repo_id: str) -> str:
    """modelscope 1.37 ``snapshot_download``: ``<cache>/.lock/<repo id with / -> ___>``, held for a whole snapshot."""
    return os.path.join(old, LOCKS, repo_id.replace("/", "___"))


def _partial_target(name: str, names: set[str], size: int) -> tuple[str, str] | None:
    """``(target, scheme)`` when ``name`` is a partial download modelscope-hub (or the old SDK) writes, else None.

    ``<file>.incomplete`` (resumed), ``<file>.parallel_tmp`` (parts being merged) and
    ``<file>_<start>_<end>`` (one part of a parallel download: parts start at multiples of
    the part size, a whole number of MiB; a part holds at most ``end - start + 1`` bytes;
    while parts exist the file is not there yet). Anything else is a file of the repo.
    """
    for suffix, scheme in ((".incomplete", "resumable"), (".parallel_tmp", "temporary")):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], scheme
    match = _PART_RE.fullmatch(name)
    if match is None:
        return None
    start, end, target = int(match.group("start")), int(match.group("end")), match.group("target")
    if start % MIB or end < start or size > end - start + 1 or target in names:
        return None
    return target, "temporary"


class _Scan(ScanState):
    def __init__(self, root: str, warnings: list[ScanWarning]) -> None:
        super().__init__(KIND, root, warnings)
        self.protected: list[str] = []

    # -- the two layouts -----------------------------------------------------------------------

    def folder(self, folder: str, entries: list[os.DirEntry[str]], *, old: str, new: bool) -> None:
        """A cache root (``new``) or the old SDK's cache (``old`` is where its ``.lock/`` is)."""
        for entry in entries:
            name = entry.name
            if name in SECTIONS and is_dir(entry) and (new or name in OLD_SECTIONS):
                self.protected.append(entry.path)
                self.section(entry.path, SECTIONS[name], old=old, new=new)
            elif name == OLD and new and is_dir(entry):
                self.protected.append(entry.path)
                self.folder(entry.path, list_dir(entry.path, self.warnings), old=entry.path, new=False)
            elif name == TRASH and new:
                self.warnings.append(trash_left(entry.path))
            elif name in (LOCKS, *LIBRARY):
                self.protected.append(entry.path)
            elif not (is_dir(entry) and self.owner(entry, "model", old, quiet=True)):
                why = "not written by ModelScope's hub client: left alone"
                self.warnings.append(ScanWarning(entry.path, why, blocks_deletion=False))

    def section(self, folder: str, item_type: str, *, old: str, new: bool) -> None:
        """``<type>s/``: new-layout repos (``<owner>--<name>/snapshots/``), old owners, old downloads."""
        old_layout = item_type in ("model", "dataset")  # (the old SDK wrote models and datasets only)
        for entry in list_dir(folder, self.warnings):
            if entry.name == TEMP and old_layout and is_dir(entry):
                self.protected.append(entry.path)
                self.temp(entry.path, old)
            elif new and "--" in entry.name[1:-1] and is_dir(entry) and os.path.isdir(os.path.join(entry.path, SNAPSHOTS)):
                self.repo(entry, item_type)
            elif not (old_layout and is_dir(entry) and self.owner(entry, item_type, old, quiet=False)):
                self.unknown(entry.path, "not a ModelScope repo folder")

    def repo(self, entry: os.DirEntry[str], item_type: str) -> None:
        """A new-layout repo: each ``snapshots/<revision>/`` a revision."""
        owner, _, name = entry.name.partition("--")  # (repo_id.replace("/", "--"): the owner has no "--")
        repo_id = f"{owner}/{name}"
        units: list[Unit] = []
        warnings: list[ScanWarning] = []
        for inside in list_dir(entry.path, self.warnings):
            if inside.name != SNAPSHOTS:
                warnings.append(ScanWarning(inside.path, "not written by modelscope-hub: the repo is not deleted"))
        for snap in list_dir(os.path.join(entry.path, SNAPSHOTS), self.warnings):
            if not is_dir(snap):
                warnings.append(ScanWarning(snap.path, "not a snapshot folder: the repo is not deleted"))
                continue
            self.partials_in(snap.path, item_type, repo_id)
            units.append(Unit(snap.name, (snap.path,), version=parse_version(snap.name), default=snap.name == "master"))
        item = build_item(KIND, repo_id, item_type, entry.path, units, self.seen, warnings=warnings, owns_path=True)
        self.items.append(item)

    def owner(self, entry: os.DirEntry[str], item_type: str, old: str, *, quiet: bool) -> bool:
        """An old-layout owner folder: each child with ModelScope's metadata is an item. False when none has it."""
        children = list_dir(entry.path, self.warnings)
        models = [c for c in children if is_dir(c) and any(os.path.isfile(os.path.join(c.path, m)) for m in MARKERS)]
        if not models:
            if not quiet:
                self.unknown(entry.path, "no ModelScope metadata (.mdl, .msc) in any folder here")
            return False
        for child in children:
            if child in models:
                self.old_item(child, f"{entry.name}/{child.name.replace('___', '.')}", item_type, old)
            else:
                self.unknown(child.path, "no ModelScope metadata (.mdl, .msc): not the old SDK's")
        return True

    def old_item(self, entry: os.DirEntry[str], repo_id: str, item_type: str, old: str) -> None:
        """An old-layout folder: one revision, the whole folder (files, ``.mdl``, ``.msc``, ``.mv``)."""
        text = read_text_noatime(os.path.join(entry.path, VERSION_FILE), 1024) or ""
        revision = text.split("Revision:", 1)[1].split(",", 1)[0].strip() if "Revision:" in text else ""
        revision = revision or "master"  # (modelscope's own scan_cache_dir: "master" when .mv says nothing)
        self.partials_in(entry.path, item_type, repo_id)
        unit = Unit(revision, (entry.path,), version=parse_version(revision))
        self.items.append(build_item(KIND, repo_id, item_type, entry.path, [unit], self.seen, owns_path=True))

    def temp(self, folder: str, old: str) -> None:
        """``._____temp/<owner>/<name>/``: what the old SDK is downloading (or left), resumed by the next run."""
        for owner in list_dir(folder, self.warnings):
            for name in list_dir(owner.path, self.warnings) if is_dir(owner) else ():
                if is_dir(name) and names_in(name.path):  # (an empty one is what every finished download leaves)
                    repo_id = f"{owner.name}/{name.name}"
                    self.partial(name.path, repo_id, "resumable", old_lock(old, repo_id))

    # -- partial downloads inside a unit --------------------------------------------------------

    def partials_in(self, folder: str, item_type: str, repo_id: str) -> None:
        """The partial downloads of modelscope-hub in a snapshot (or an old folder it reuses), with their locks."""
        stack = [folder]
        while stack:
            here = stack.pop()
            entries = list_dir(here, self.warnings)
            names = {e.name for e in entries}
            for entry in entries:
                if is_dir(entry):
                    stack.append(entry.path)
                    continue
                found = _partial_target(entry.name, names, _size(entry) if _PART_RE.fullmatch(entry.name) else 0)
                if found is not None:
                    file_path = os.path.relpath(os.path.join(here, found[0]), folder).replace(os.sep, "/")
                    self.partial(entry.path, repo_id, found[1], file_lock(self.root, item_type, repo_id, file_path))


def _size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 1 << 62  # (gone or unreadable: too big for a part, so it stays a file of its unit)


def _section_looks(path: str) -> bool:
    for name in names_in(path):
        child = os.path.join(path, name)
        if name == TEMP or os.path.isdir(os.path.join(child, SNAPSHOTS)):
            return True
        if any(os.path.isfile(os.path.join(child, sub, m)) for sub in names_in(child) for m in MARKERS):
            return True
    return False


def looks_like_cache(root: str) -> bool:
    """A new-layout repo, an old folder with ``.mdl``/``.msc``, ModelScope's locks, or its library files."""
    names = names_in(root)
    if any(n in LIBRARY for n in names):
        return True
    if LOCKS in names and any(_OLD_LOCK_RE.fullmatch(n) for n in names_in(os.path.join(root, LOCKS))):
        return True
    if OLD in names and os.path.isdir(os.path.join(root, OLD)) and looks_like_cache(os.path.join(root, OLD)):
        return True
    return any(n in SECTIONS and _section_looks(os.path.join(root, n)) for n in names)


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one ModelScope cache folder (both layouts). Never reads a pickle, never moves an access time.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    refusal = "holds no ModelScope repos, metadata or locks"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    state = _Scan(real, warnings)
    state.folder(real, entries, old=real, new=True)
    protected = [*state.protected, os.path.join(real, LOCKS), os.path.join(real, TRASH)]
    return inventory(KIND, TITLE, real, state.items, warnings, protected, state.partials)


class ModelScopeDeletion(TrashDeletion):
    """:class:`TrashDeletion`, never while the old SDK's lock of the repo is held (it covers a whole snapshot download)."""

    def item_busy(
        self, tree: Tree, cache: CacheInventory, path: str, item_id: str | None, grace: float, now: float
    ) -> str | None:
        busy = super().item_busy(tree, cache, path, item_id, grace, now)
        if busy or item_id is None:
            return busy
        for old in (cache.root, os.path.join(cache.root, OLD)):
            lock = old_lock(old, item_id)
            if is_lock_held(lock):
                return f"a download of it is running (lock held: {lock})"
        return None


_TYPES = "|".join(SECTIONS)
_OLD_TYPES = "|".join(OLD_SECTIONS)
_NOT_RESERVED = "(?!(?:" + "|".join(re.escape(n) for n in RESERVED) + ")/)"

MODELSCOPE = FunctionKind(
    KIND,
    TITLE,
    (*SECTIONS.values(), "unknown"),
    default_roots,
    looks_like_cache,
    scan,
    shapes=(
        rf"(?:{_TYPES})/[^/]+--[^/]+",  # a new-layout repo, with its last revision
        rf"(?:{_TYPES})/[^/]+--[^/]+/{SNAPSHOTS}/[^/]+",  # a revision
        rf"(?:{_TYPES})/[^/]+--[^/]+/{SNAPSHOTS}/[^/]+/.+",  # a partial download in it
        rf"(?:{OLD}/)?(?:{_OLD_TYPES})/(?!{re.escape(TEMP)}/)[^/]+/[^/]+(?:/.+)?",  # an old folder, a partial in it
        rf"(?:{OLD}/)?(?:{_OLD_TYPES})/{re.escape(TEMP)}/[^/]+/[^/]+",  # an old download left half-way
        rf"(?:{OLD}/)?{_NOT_RESERVED}[^/]+/[^/]+(?:/.+)?",  # an old folder from before models/, a partial in it
    ),
    deletion=ModelScopeDeletion(),
)
