"""The Hugging Face hub cache (``huggingface_hub``; used by transformers, diffusers, datasets, ...).

Layout reference: ``CACHE-LAYOUTS.md`` sections 1 and 2. In short::

    <root>/models--org--name/refs/<ref>              one 40-hex commit per file, nested (refs/pr/1)
    <root>/models--org--name/snapshots/<commit>/...  symlinks ../../blobs/<etag> (or regular files)
    <root>/models--org--name/blobs/<etag>            the data (or a symlink into the shared store)
    <root>/blobs/<xx>/<xet hash>                     hub >= 1.32 cross-repo shared store (marked)
    <root>/.locks/<repo folder>/<etag>.lock          per-blob download locks (flock)

The scanner is our own rather than ``huggingface_hub.scan_cache_dir``: it lists each folder
once with ``os.scandir``, stats each blob once, reads links with ``os.readlink`` (the first
hop only, never ``resolve()``), never opens a blob (that would move its atime) and never
writes. Its numbers equal ``scan_cache_dir``'s on every cache that function accepts; where
``scan_cache_dir`` drops a whole repo as corrupted, we keep the repo, count what can be
counted, and attach warnings that stop anything from deleting through it.
"""

from __future__ import annotations

import os
import re
import stat as stat_mod
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import NamedTuple

from .. import parallel
from ..errors import CacheUnreadable, NotACache
from ..locks import is_lock_held
from ..model import BlobLedger, CacheInventory, Item, Leftover, OrphanFile, PartialFile, Revision, ScanWarning, SharedPayload
from ..versions import parse_version, version_key
from ._common import (
    FILES_TO_IGNORE,
    TEMPFILE_RE,
    FunctionKind,
    check_dir,
    env_path,
    expanduser,
    expandvars,
    measure,
    names_in,
    xdg_cache_home,
)
from .hub_delete import BLOB_MARK, HUB_DELETION, REF_TMP_RE, TRASH, parse_ref_entry, parse_trash_name

KIND = "huggingface"
TITLE = "Hugging Face hub cache"

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
# Entries of the cache root that belong there and are never items: locks, the cache-directory
# tag, and the migration markers of transformers 4.22-4.48 and diffusers 0.14+ (never delete those).
ROOT_ENTRIES_TO_SKIP = frozenset({".locks", "CACHEDIR.TAG", "version.txt", "version_diffusers_cache.txt"})
REPO_SUBDIRS = frozenset({"refs", "snapshots", "blobs", ".no_exist", "trees"})
SHARED_STORE_DIR = "blobs"
SHARED_STORE_MARKER = ".huggingface-shared-blobs"
SHARED_STORE_MARKER_CONTENT = b"1\n"

_REPO_DIR_RE = re.compile(r"(models|datasets|spaces|kernels)--(.+)", re.DOTALL)
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_INCOMPLETE_RE = re.compile(r"(?P<etag>.+?)(?P<token>\.[0-9a-f]{8})?\.incomplete", re.DOTALL)
_TEMP_BLOB_RE = re.compile(r"tmp_[0-9a-f-]{32,36}|\..+\.[0-9a-f]{8}\.(?:new|old|shared)", re.DOTALL)
_XET_HASH_RE = re.compile(r"[0-9a-f]{64}")
_PREFIX_RE = re.compile(r"[0-9a-f]{2}")
# A folder opened to list it and read its entries relative to it (never through a symlink).
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class _Blob(NamedTuple):
    """What one blob key refers to. ``size`` is None when it cannot be counted (broken, outside the cache)."""

    size: int | None
    atime: float
    mtime: float
    store: str | None  # the shared-store payload it links to, if any
    path: str  # "" for a plain blobs/<etag> file: <repo>/<key>, not stored (a scan holds 100,000s)


@dataclass
class _Roots:
    """The cache root, resolved, plus the spelling it was given in (absolute symlinks may use either)."""

    real: str
    given: str
    store: str
    payloads: dict[str, _Blob] = field(default_factory=dict)
    manifests: set[str] = field(default_factory=set)
    store_marked: bool = False
    # hfcache's trash (a prune's work in progress), by repo folder name: (entry, its name after the repo's)
    trash: dict[str, list[tuple[os.DirEntry[str], str]]] = field(default_factory=dict)

    def normalize(self, path: str) -> str:
        """Map a path spelled under the given root onto the resolved root."""
        if self.given != self.real and (path == self.given or path.startswith(self.given + os.sep)):
            return self.real + path[len(self.given) :]
        return path

    def contains(self, path: str) -> bool:
        return path.startswith(self.real + os.sep)


@dataclass
class _RepoScan:
    item: Item  # its revisions' reclaimable_bytes count plain blobs only; see store_exclusive
    blobs: dict[str, _Blob]
    partials: list[PartialFile]
    leftovers: list[Leftover]
    # Revision index -> keys only that revision uses that link into the shared store: what
    # deleting them frees depends on other repos, so the whole-cache step finishes their count.
    store_exclusive: list[tuple[int, list[str]]] = field(default_factory=list)
    # Filled by _settle, which also shrinks ``blobs`` to the ledger's (size, payload) pairs.
    counted: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    store_links: list[tuple[str, str]] = field(default_factory=list)  # (key, payload) of blobs linking into the store
    own_bytes: int = 0  # referenced blobs in the repo's blobs/ (not shared-store links)
    foreign: dict[str, int] = field(default_factory=dict)  # referenced files elsewhere in the cache
    orphans: list[OrphanFile] = field(default_factory=list)


def _settle(scan_: _RepoScan, ledger: bool = True) -> _RepoScan:
    """Reduce a repo's blobs to what the rest of the scan needs, as soon as the repo is scanned.

    The totals, the orphans (with their times) and, with ``ledger``, the ledger's
    ``(size, payload)`` pairs; the full per-blob records go, so a 100,000-file scan never
    holds them all at once.
    """
    blobs = scan_.blobs
    item = scan_.item
    if ledger:
        scan_.counted = {k: (b.size or 0, b.store) for k, b in blobs.items()}
    scan_.store_links = [(k, b.store) for k, b in blobs.items() if b.store is not None]
    referenced: set[str] = set().union(*(r.blobs for r in item.revisions))
    for key in referenced:  # every referenced key is a counted blob (the snapshot walk sees to it)
        blob = blobs[key]
        if blob.size is None or blob.store is not None:
            continue
        if key.startswith("blobs/") or not os.path.isabs(key):  # the first test settles almost every key
            scan_.own_bytes += blob.size
        else:
            scan_.foreign[key] = blob.size
    for key in blobs.keys() - referenced:
        if key.startswith("blobs/"):
            blob = blobs[key]
            path = blob.path or os.path.join(item.path, key)
            scan_.orphans.append(OrphanFile(path, item.id, blob.size or 0, blob.atime, blob.mtime, blob.store))
    scan_.blobs = {}
    return scan_


# ---------------------------------------------------------------------------------------------
# Where the cache is


def _expand(path: str, env: Mapping[str, str]) -> str:
    """``os.path.expandvars(os.path.expanduser(path))``, as the hub does, but reading ``env``."""
    return expandvars(expanduser(path, env), env)


def default_hf_home(env: Mapping[str, str]) -> str:
    """``$HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``."""
    hf_home = env_path(env, "HF_HOME")
    if hf_home is None:
        hf_home = os.path.join(xdg_cache_home(env), "huggingface")
    return os.path.abspath(_expand(hf_home, env))


def default_root(env: Mapping[str, str]) -> str:
    """Where huggingface_hub puts its cache, with the library's precedence.

    ``HF_HUB_CACHE`` > ``HUGGINGFACE_HUB_CACHE`` > ``$HF_HOME/hub`` >
    ``$XDG_CACHE_HOME/huggingface/hub`` > ``~/.cache/huggingface/hub``. Read from ``env`` at
    call time, never at import.

    >>> default_root({"HOME": "/home/me"})
    '/home/me/.cache/huggingface/hub'
    >>> default_root({"HOME": "/home/me", "HF_HOME": "/data/hf", "HUGGINGFACE_HUB_CACHE": "/legacy"})
    '/legacy'
    """
    explicit = env_path(env, "HF_HUB_CACHE") or env_path(env, "HUGGINGFACE_HUB_CACHE")
    if explicit is not None:
        return os.path.abspath(_expand(explicit, env))
    return os.path.join(default_hf_home(env), "hub")


def _looks_like_cache(names: list[str], root: str) -> bool:
    """Recognise a hub cache by what is in it: repo folders, ``.locks/``, ``CACHEDIR.TAG`` or the shared store."""
    for name in names:
        if _REPO_DIR_RE.fullmatch(name) or name in {".locks", "CACHEDIR.TAG"}:
            return True
        if name == SHARED_STORE_DIR and os.path.isfile(os.path.join(root, name, SHARED_STORE_MARKER)):
            return True
    return False


def check_root(path: str, *, explicit: bool) -> str | None:
    """Validate a root before scanning it; return its resolved path, or None for "nothing cached yet".

    A default root that does not exist yet is normal (nothing was ever downloaded). An explicit
    root that does not exist, is not a folder, cannot be read, or holds something that is not a
    hub cache (a home directory, ``$HF_HOME`` instead of ``$HF_HOME/hub``) is an error.
    """
    real = check_dir(path, explicit=explicit, title="cache directory")
    if real is None:
        return None
    given = os.path.abspath(path)
    try:
        names = os.listdir(real)
    except OSError as e:
        raise CacheUnreadable(f"cannot read cache directory {given}: {e.strerror or e}", path=given) from e
    names = [n for n in names if n not in FILES_TO_IGNORE]
    if names and not _looks_like_cache(names, real):
        hint = ""
        if os.path.isdir(os.path.join(real, "hub")):
            hint = f" (did you mean {os.path.join(given, 'hub')}?)"
        raise NotACache(
            f"not a Hugging Face hub cache: {given} holds no repo folders, .locks/ or CACHEDIR.TAG{hint}",
            path=given,
        )
    return real


# ---------------------------------------------------------------------------------------------
# Scanning


def _open_folder(folder: str) -> tuple[int, list[str]]:
    """An fd of ``folder`` (never through a symlink) and its entry names, to read them relative to it.

    The caller closes the fd; when listing fails it is closed here and the OSError raised.
    """
    fd = os.open(folder, _DIR_FLAGS)
    try:
        return fd, os.listdir(fd)
    except OSError:
        os.close(fd)
        raise


_new_blob = tuple.__new__  # _Blob(...) without the Python-level __new__ of a NamedTuple (the hot loop)


def _stat_blob(st: os.stat_result, path: str, store: str | None = None) -> _Blob:
    return _Blob(st.st_size, st.st_atime, st.st_mtime, store, path)


def _broken(path: str) -> _Blob:
    return _Blob(None, 0.0, 0.0, None, path)


def _list(folder: str, what: str, warnings: list[ScanWarning]) -> list[os.DirEntry[str]]:
    """The entries of ``folder``; on failure a warning ("cannot read <what>") and nothing."""
    try:
        return list(os.scandir(folder))
    except OSError as e:
        warnings.append(ScanWarning(folder, f"cannot read {what} ({e.strerror or e})"))
        return []


def _scan_store(roots: _Roots, warnings: list[ScanWarning]) -> None:
    """Stat every payload of a marked shared store once; remember which have a ``.refs`` manifest."""
    marker = os.path.join(roots.store, SHARED_STORE_MARKER)
    try:
        if not stat_mod.S_ISREG(os.lstat(marker).st_mode):
            raise FileNotFoundError(marker)
        # The marker is a 2-byte metadata file, not model data: reading it moves nothing that matters.
        with open(marker, "rb") as f:
            roots.store_marked = f.read(16) == SHARED_STORE_MARKER_CONTENT
    except OSError:
        roots.store_marked = False
    if not roots.store_marked:
        warnings.append(
            ScanWarning(roots.store, "blobs/ folder without a valid shared-store marker; not a store, left alone", False)
        )
        return
    for prefix in _list(roots.store, "the shared store", warnings):
        if not (_PREFIX_RE.fullmatch(prefix.name) and prefix.is_dir(follow_symlinks=False)):
            continue
        for entry in _list(prefix.path, "the shared store", warnings):
            name = entry.name
            if name.endswith(".refs"):
                roots.manifests.add(entry.path[:-5])
            elif _XET_HASH_RE.fullmatch(name) and name.startswith(prefix.name) and entry.is_file(follow_symlinks=False):
                try:
                    roots.payloads[entry.path] = _stat_blob(entry.stat(follow_symlinks=False), entry.path, entry.path)
                except OSError:
                    continue


def _has_inner_dotdot(target: str) -> bool:
    """True for links like ``a/../../b``, where lexical normalisation may disagree with the kernel."""
    parts = target.split("/")
    i = 0
    while i < len(parts) and parts[i] == "..":
        i += 1
    return ".." in parts[i:]


def _resolve_link(roots: _Roots, link_dir: str, target: str) -> str:
    """Absolute, normalised path of a link's first hop (``os.readlink`` result), without touching the disk."""
    if os.path.isabs(target):
        return roots.normalize(os.path.normpath(target))
    return roots.normalize(os.path.normpath(os.path.join(link_dir, target)))


def _stat_foreign(roots: _Roots, path: str, target: str) -> _Blob | str:
    """Stat a link's first hop ``path`` (read as ``target``) that is not where the hub puts blobs.

    Returns a message instead when it must not be followed. The lexical test is skipped for
    targets like ``a/../../b``, where only the resolved path can be trusted.
    """
    if not _has_inner_dotdot(target) and not roots.contains(path):
        return "symlink leaves the cache, not followed"
    real = os.path.realpath(path)
    if not roots.contains(real):
        return "symlink leaves the cache, not followed"
    try:
        st = os.stat(real)
    except OSError:
        return "broken symlink"
    if not stat_mod.S_ISREG(st.st_mode):
        return "symlink to something that is not a file"
    return _stat_blob(st, real)


def _scan_blob_link(roots: _Roots, link: str, blobs_dir: str) -> tuple[_Blob, str | None]:
    """A repo ``blobs/<etag>`` that is a symlink: into the shared store (hub >= 1.32), or odd."""
    try:
        target = os.readlink(link)
    except OSError:
        return _broken(link), "unreadable symlink"
    path = _resolve_link(roots, blobs_dir, target)
    if roots.store_marked and os.path.dirname(os.path.dirname(path)) == roots.store:
        payload = roots.payloads.get(path)
        if payload is not None:
            return payload._replace(path=link), None
    found = _stat_foreign(roots, path, target)
    if isinstance(found, str):
        return _broken(link), found
    return found._replace(path=link), None


def _scan_blobs_dir(
    roots: _Roots, repo_dir: str, folder: str, item_id: str, warnings: list[ScanWarning]
) -> tuple[dict[str, _Blob], list[PartialFile]]:
    blobs_dir = os.path.join(repo_dir, "blobs")
    blobs: dict[str, _Blob] = {}
    partials: list[PartialFile] = []
    # Names and one lstat each, relative to the open folder: no DirEntry or path string per
    # blob, and the kernel resolves one name instead of the whole path (the hot loop).
    fd, names = _open_folder(blobs_dir)
    try:
        for name in names:
            if name in FILES_TO_IGNORE:
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone since it was listed
            # Cheap tests first: almost every entry is a plain blob.
            incomplete = _INCOMPLETE_RE.fullmatch(name) if name.endswith(".incomplete") else None
            if incomplete or (name[0] in "t." and _TEMP_BLOB_RE.fullmatch(name)):
                lock_path = None
                scheme = "temporary"
                if incomplete:
                    scheme = "per-process" if incomplete.group("token") else "resumable"
                    lock_path = os.path.join(roots.real, ".locks", folder, incomplete.group("etag") + ".lock")
                partials.append(
                    PartialFile(
                        path=os.path.join(blobs_dir, name),
                        item_id=item_id,
                        size_bytes=st.st_size,
                        last_modified=st.st_mtime,
                        scheme=scheme,
                        lock_path=lock_path,
                        lock_held=is_lock_held(lock_path) if lock_path else None,
                    )
                )
            elif stat_mod.S_ISREG(st.st_mode):
                blobs["blobs/" + name] = _new_blob(_Blob, (st.st_size, st.st_atime, st.st_mtime, None, ""))
            elif stat_mod.S_ISLNK(st.st_mode):
                link = os.path.join(blobs_dir, name)
                blob, problem = _scan_blob_link(roots, link, blobs_dir)
                if problem and problem != "broken symlink":
                    warnings.append(ScanWarning(link, f"blob {problem}"))
                blobs["blobs/" + name] = blob
            else:
                warnings.append(ScanWarning(os.path.join(blobs_dir, name), "unexpected entry in blobs/ (not a file)"))
    finally:
        os.close(fd)
    return blobs, partials


def _read_small(path: str, limit: int = 256) -> bytes:
    """The first ``limit`` bytes of a small file (a ref), without a Python file object."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _scan_refs(refs_dir: str, warnings: list[ScanWarning]) -> dict[str, list[str]]:
    """Map commit -> ref names, walking nested refs (``refs/pr/1``) and skipping atomic-write leftovers."""
    refs: dict[str, list[str]] = defaultdict(list)
    stack = [(refs_dir, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in _list(folder, "refs", warnings):
            name = entry.name
            if name in FILES_TO_IGNORE:
                continue
            if entry.is_symlink():
                warnings.append(ScanWarning(entry.path, "ref is a symlink, not followed"))
            elif entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, f"{prefix}{name}/"))
            elif REF_TMP_RE.search(name):
                continue  # `refs/main.1a2b3c4d.tmp`: an interrupted atomic write, not a ref
            else:
                try:
                    # A ref is a 40-byte pointer file, not model data.
                    content = _read_small(entry.path).decode("ascii", "replace").strip()
                except OSError as e:
                    warnings.append(ScanWarning(entry.path, f"cannot read ref ({e.strerror or e})"))
                    continue
                if _COMMIT_RE.fullmatch(content):
                    refs[content].append(prefix + name)
                else:
                    warnings.append(ScanWarning(entry.path, "ref does not hold a commit hash"))
    return refs


def _link_table(blobs: dict[str, _Blob], depth: int, tables: dict[int, dict[str, str]]) -> dict[str, str]:
    """The hub's own link target for each counted blob, ``"../" * depth + "blobs/<etag>"``, mapped to its key.

    Made once per repo and folder depth (snapshots/<commit> is 2; 0 maps each key to itself),
    so the hot loop of a scan recognises a link with one dict lookup, and the sets of keys it
    builds hold the dict's own string objects, not an equal copy per link.
    """
    table = tables.get(depth)
    if table is None:
        up = "../" * depth
        table = tables[depth] = {up + k: k for k, b in blobs.items() if b.size is not None and k.startswith("blobs/")}
    return table


def _not_a_link(
    folder: str,
    name: str,
    fd: int,
    error: OSError,
    depth: int,
    cut: int,
    blobs: dict[str, _Blob],
    keys: set[str],
    stack: list[tuple[str, int]],
    warnings: list[ScanWarning],
) -> int:
    """A snapshot entry ``readlink`` refused (``error``): how many files it counts for (0 or 1).

    A folder is walked (pushed on ``stack``); a regular file is its own blob (the no-symlink
    mode of Windows or ``HF_HUB_DISABLE_SYMLINKS``); a link that cannot be read, or anything
    else, is a warning, which keeps the revision from being deleted.
    """
    path = os.path.join(folder, name)
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError as e:
        warnings.append(ScanWarning(path, f"cannot read snapshot entry ({e.strerror or e})"))
        return 0
    if stat_mod.S_ISDIR(st.st_mode):
        stack.append((path, depth + 1))
        return 0
    if stat_mod.S_ISREG(st.st_mode):
        key = path[cut:]
        blobs[key] = _stat_blob(st, path)
        keys.add(key)
        return 1
    if stat_mod.S_ISLNK(st.st_mode):
        warnings.append(ScanWarning(path, f"unreadable symlink ({error.strerror or error})"))
        return 1
    warnings.append(ScanWarning(path, "unexpected entry in snapshot (not a file or folder)"))
    return 0


def _scan_snapshot(
    roots: _Roots,
    repo_dir: str,
    snapshot_dir: str,
    blobs: dict[str, _Blob],
    tables: dict[int, dict[str, str]],
    warnings: list[ScanWarning],
) -> tuple[set[str], int]:
    """Walk one snapshot: the set of blob keys it reaches, and its number of files."""
    keys: set[str] = set()
    nb_files = 0
    blobs_prefix = repo_dir + os.sep + "blobs" + os.sep
    cut = len(repo_dir) + 1
    # Folders and how deep they are below the repo folder (snapshots/<commit> is 2).
    stack = [(snapshot_dir, 2)]
    while stack:
        folder, depth = stack.pop()
        hub_links = _link_table(blobs, depth, tables)
        # Names, and links read relative to the open folder: no DirEntry or path string per
        # file, and the kernel resolves one name instead of the whole path (the hot loop).
        try:
            fd, names = _open_folder(folder)
        except OSError as e:
            warnings.append(ScanWarning(folder, f"cannot read snapshot folder ({e.strerror or e})"))
            continue
        try:
            for name in names:
                try:
                    target = os.readlink(name, dir_fd=fd)
                except OSError as e:  # not a link (a folder, a file), or an unreadable one
                    nb_files += _not_a_link(folder, name, fd, e, depth, cut, blobs, keys, stack, warnings)
                    continue
                nb_files += 1
                key = hub_links.get(target)
                if key is not None:  # almost every link: exactly what the hub writes, to a counted blob
                    keys.add(key)
                    continue
                link = os.path.join(folder, name)
                path = _resolve_link(roots, folder, target)
                rest = path[len(blobs_prefix) :]
                if path.startswith(blobs_prefix) and os.sep not in rest and not _has_inner_dotdot(target):
                    key = _link_table(blobs, 0, tables).get("blobs/" + rest)
                    if key is None:
                        warnings.append(ScanWarning(link, "broken symlink (blob missing)"))
                    else:
                        keys.add(key)
                    continue
                found = _stat_foreign(roots, path, target)
                if isinstance(found, str):
                    warnings.append(ScanWarning(link, found))
                else:
                    warnings.append(ScanWarning(link, "symlink points outside its repo's blobs/"))
                    blobs.setdefault(found.path, found)
                    keys.add(found.path)
        finally:
            os.close(fd)
    return keys, nb_files


def _dir_times(path: str) -> tuple[float, float]:
    try:
        st = os.stat(path)
    except OSError:
        return 0.0, 0.0
    return st.st_atime, st.st_mtime


def _totals(blobs: dict[str, _Blob], keys: Collection[str], fallback_dir: str) -> tuple[int, float, float]:
    """Bytes of ``keys``' blobs and their newest atime and mtime (the folder's own times when none counts)."""
    if keys:
        # Columns of the blobs' records: sum() and max() then run in C (the hot path of a big scan).
        sizes, atimes, mtimes, _, _ = zip(*map(blobs.__getitem__, keys), strict=True)
        if None not in sizes:
            return sum(sizes), max(atimes), max(mtimes)
    sized = [blobs[k] for k in keys if blobs[k].size is not None]
    if not sized:
        return 0, *_dir_times(fallback_dir)
    return sum(b.size or 0 for b in sized), max(b.atime for b in sized), max(b.mtime for b in sized)


# One repo folder's walk, in the order the hub reads it; 30 > 15 until the hub kind becomes a
# package of its own (issue 16, point 1: location, walk, shared store, reclaim, deletion).
def _scan_repo(roots: _Roots, entry: os.DirEntry[str], repo_type: str, item_id: str) -> _RepoScan:  # noqa: C901
    repo_dir = entry.path
    warnings: list[ScanWarning] = []
    blobs: dict[str, _Blob] = {}
    partials: list[PartialFile] = []
    revisions: list[tuple[str, str, set[str], int, list[ScanWarning]]] = []
    refs: dict[str, list[str]] = {}
    traces: dict[str, list[str]] = {}
    subdirs: dict[str, os.DirEntry[str]] = {}

    def finish() -> _RepoScan:
        scan_ = _build_repo(roots, repo_dir, repo_type, item_id, warnings, blobs, partials, revisions, refs)
        if not (revisions or refs or blobs or partials or any(w.blocks_deletion for w in warnings)):
            # An emptied shell (an interrupted removal of the whole repo): it goes as one leftover.
            m = measure(repo_dir, set(), [])
            folders = [repo_dir, *(e.path for e in subdirs.values() if e.is_dir(follow_symlinks=False))]
            newest = max(_dir_times(d)[1] for d in folders)
            scan_.leftovers.append(Leftover(repo_dir, item_id, None, m.size, max(newest, m.mtime)))
        else:
            scan_.leftovers.extend(_leftovers(item_id, traces, {r[0] for r in revisions}, refs))
        return scan_

    if entry.is_symlink():
        warnings.append(ScanWarning(repo_dir, f"repo folder is a symlink (to {os.readlink(repo_dir)}), not followed"))
        return finish()
    try:
        subdirs = {e.name: e for e in os.scandir(repo_dir)}
    except NotADirectoryError:
        warnings.append(ScanWarning(repo_dir, "repo entry is not a folder"))
        return finish()
    except OSError as e:
        warnings.append(ScanWarning(repo_dir, f"cannot read repo folder ({e.strerror or e})"))
        return finish()

    for name, sub in sorted(subdirs.items()):
        if name in FILES_TO_IGNORE:
            continue
        if name not in REPO_SUBDIRS:
            warnings.append(ScanWarning(sub.path, "unexpected entry in repo folder"))
        elif sub.is_symlink():
            warnings.append(ScanWarning(sub.path, f"{name}/ is a symlink, not followed"))
        elif not sub.is_dir(follow_symlinks=False):
            warnings.append(ScanWarning(sub.path, f"{name} is not a folder"))

    def usable(name: str) -> bool:
        sub = subdirs.get(name)
        return sub is not None and not sub.is_symlink() and sub.is_dir(follow_symlinks=False)

    if usable("blobs"):
        try:
            blobs, partials = _scan_blobs_dir(roots, repo_dir, entry.name, item_id, warnings)
        except OSError as e:
            warnings.append(ScanWarning(os.path.join(repo_dir, "blobs"), f"cannot read blobs ({e.strerror or e})"))
    if usable("refs"):
        refs = _scan_refs(os.path.join(repo_dir, "refs"), warnings)
    set_aside: dict[str, _Blob] = {}
    if entry.name in roots.trash:
        for commit, names in _scan_trash(repo_dir, roots.trash[entry.name], blobs, set_aside, warnings).items():
            have = refs.setdefault(commit, [])
            have.extend(n for n in names if n not in have)
    for folder, suffix in ((".no_exist", ""), ("trees", ".json")):
        if usable(folder):
            for e in _list(os.path.join(repo_dir, folder), folder, warnings):
                commit = e.name[: len(e.name) - len(suffix)] if e.name.endswith(suffix) else ""
                if _COMMIT_RE.fullmatch(commit):
                    traces.setdefault(commit, []).append(e.path)
    if "snapshots" not in subdirs:
        # Normal after diffusers' cache migration or an interrupted delete: all blobs are orphans.
        warnings.append(ScanWarning(os.path.join(repo_dir, "snapshots"), "no snapshots/ folder", blocks_deletion=False))
    elif usable("snapshots"):
        snapshots_dir = os.path.join(repo_dir, "snapshots")
        tables: dict[int, dict[str, str]] = {}
        for snap in sorted(_list(snapshots_dir, "snapshots", warnings), key=lambda e: e.name):
            if snap.name in FILES_TO_IGNORE:
                continue
            if snap.is_symlink():
                warnings.append(ScanWarning(snap.path, "snapshot is a symlink, not followed"))
                continue
            if not snap.is_dir(follow_symlinks=False):
                warnings.append(ScanWarning(snap.path, "unexpected file in snapshots/"))
                continue
            rev_warnings: list[ScanWarning] = []
            if not _COMMIT_RE.fullmatch(snap.name):
                rev_warnings.append(ScanWarning(snap.path, "snapshot folder is not named after a commit hash"))
            keys, nb_files = _scan_snapshot(roots, repo_dir, snap.path, blobs, tables, rev_warnings)
            revisions.append((snap.name, snap.path, keys, nb_files, rev_warnings))
    if set_aside:  # a blob set aside that nothing links is gone (the repair deletes it), not an orphan
        reached = set().union(*(r[2] for r in revisions))
        for key in set_aside.keys() - reached:
            del blobs[key]
    return finish()


def _read_trash(roots: _Roots, warnings: list[ScanWarning]) -> None:
    """List hfcache's trash (``.locks/hfcache-trash/``) once, into ``roots.trash`` by repo folder."""
    trash_dir = os.path.join(roots.real, TRASH)
    try:
        if not stat_mod.S_ISDIR(os.lstat(trash_dir).st_mode):
            warnings.append(ScanWarning(trash_dir, "hfcache's trash is not a folder"))
            return
    except OSError:
        return  # the usual case: no prune ever set anything aside here
    for entry in _list(trash_dir, TRASH, warnings):
        parsed = parse_trash_name(entry.name)
        if parsed is None:
            warnings.append(ScanWarning(entry.path, "unexpected entry in hfcache's trash", blocks_deletion=False))
            continue
        roots.trash.setdefault(parsed[0], []).append((entry, parsed[1]))


def _scan_trash(
    repo_dir: str,
    entries: list[tuple[os.DirEntry[str], str]],
    blobs: dict[str, _Blob],
    set_aside: dict[str, _Blob],
    warnings: list[ScanWarning],
) -> dict[str, list[str]]:
    """Read a repo's entries in hfcache's trash (a prune's work in progress) as the repair will leave them.

    Refs set aside for a snapshot that is still there are its refs (commit -> names); a
    blob set aside counts as the blob it was (``set_aside`` lists those); a snapshot set
    aside is already gone. See :mod:`hfcache.caches.hub_delete` for the layout.
    """
    refs: dict[str, list[str]] = {}
    for entry, name in entries:
        regular = entry.is_file(follow_symlinks=False)
        if name.startswith(BLOB_MARK) and regular:
            key = "blobs/" + name[len(BLOB_MARK) :]
            if key not in blobs:
                st = entry.stat(follow_symlinks=False)
                blobs[key] = set_aside[key] = _new_blob(_Blob, (st.st_size, st.st_atime, st.st_mtime, None, ""))
            continue
        ref = parse_ref_entry(name) if regular else None
        commit = ref[0] if ref else name if _COMMIT_RE.fullmatch(name) and entry.is_dir(follow_symlinks=False) else None
        if commit is None:
            warnings.append(ScanWarning(entry.path, "unexpected entry in hfcache's trash"))
            continue
        if os.path.lexists(os.path.join(repo_dir, "snapshots", commit)):
            if ref and _read_small(entry.path).decode("ascii", "replace").strip() == commit:
                refs.setdefault(commit, []).append(ref[1])
            message = "an interrupted prune set this revision's refs aside: the next prune puts them back"
        else:
            message = "an interrupted prune was removing this revision: the next prune finishes it"
        warnings.append(ScanWarning(entry.path, message, blocks_deletion=False))
    return refs


def _build_repo(
    roots: _Roots,
    repo_dir: str,
    repo_type: str,
    item_id: str,
    warnings: list[ScanWarning],
    blobs: dict[str, _Blob],
    partials: list[PartialFile],
    revisions: list[tuple[str, str, set[str], int, list[ScanWarning]]],
    refs: dict[str, list[str]],
) -> _RepoScan:
    known = {name for name, *_ in revisions}
    for commit, names in sorted(refs.items()):
        if commit in known:
            continue
        refs_dir = os.path.join(repo_dir, "refs")
        if os.path.isdir(os.path.join(repo_dir, ".no_exist", commit)):
            # The hub writes the ref when a probe for a missing file (transformers does many) is the
            # first request at a new commit: a normal state, not damage. The ref just has no snapshot yet.
            message = f"ref(s) {', '.join(sorted(names))} point to commit {commit}, known only from .no_exist/"
            warnings.append(ScanWarning(refs_dir, message, blocks_deletion=False))
        else:
            message = f"ref(s) {', '.join(sorted(names))} point to missing commit {commit}"
            warnings.append(ScanWarning(refs_dir, message))
    built: list[Revision] = []
    all_keys: set[str] = set()
    store_exclusive: list[tuple[int, list[str]]] = []
    links_to_store = any(b.store is not None for b in blobs.values())
    # How many revisions use each blob: deleting a revision frees the blobs only it uses.
    use = Counter(chain.from_iterable(keys for _, _, keys, _, _ in revisions)) if len(revisions) > 1 else None
    for index, (name, path, keys, nb_files, rev_warnings) in enumerate(revisions):
        all_keys |= keys
        size, atime, mtime = _totals(blobs, keys, path)
        exclusive = keys if use is None else [k for k in keys if use[k] == 1]
        if links_to_store:
            in_store = [k for k in exclusive if blobs[k].store is not None]
            if in_store:
                store_exclusive.append((index, in_store))
            freed = sum(blobs[k].size or 0 for k in exclusive if blobs[k].store is None)
        else:
            freed = size if exclusive is keys else _totals(blobs, exclusive, path)[0]
        rev_refs = tuple(sorted(refs.get(name, ())))
        built.append(
            Revision(
                revision=name,
                path=path,
                refs=rev_refs,
                version=tag_version(rev_refs),
                size_bytes=size,
                reclaimable_bytes=freed,
                last_accessed=atime,
                last_modified=mtime,
                nb_files=nb_files,
                blobs=frozenset(keys),
                warnings=tuple(rev_warnings),
            )
        )
    size, atime, mtime = _totals(blobs, all_keys, repo_dir)
    item = Item(
        kind=KIND,
        id=item_id,
        type=repo_type,
        path=repo_dir,
        size_bytes=size,
        last_accessed=atime,
        last_modified=mtime,
        revisions=tuple(built),
        nb_blobs=len(all_keys),
        warnings=tuple(warnings),
    )
    return _RepoScan(item, blobs, partials, [], store_exclusive)


def _leftovers(item_id: str, traces: dict[str, list[str]], snapshots: set[str], refs: dict[str, list[str]]) -> list[Leftover]:
    """``.no_exist/<commit>`` and ``trees/<commit>.json`` of commits no snapshot holds and no ref names."""
    out = []
    for commit, paths in sorted(traces.items()):
        if commit in snapshots or commit in refs:
            continue
        for path in paths:
            m = measure(path, set(), [])
            out.append(Leftover(path, item_id, commit, m.size, m.mtime))
    return out


def tag_version(refs: tuple[str, ...]) -> str | None:
    """The highest version among a revision's refs (tags such as ``v1.2.0``), else None.

    >>> tag_version(("main", "v1.2.0", "v1.10")), tag_version(("main",))
    ('1.10', None)
    """
    versions = [v for v in (parse_version(r.rsplit("/", 1)[-1]) for r in refs) if v is not None]
    return max(versions, key=version_key) if versions else None


def _add_store_reclaim(scans: list[_RepoScan], payloads: dict[str, _Blob]) -> list[Item]:
    """Finish each revision's ``reclaimable_bytes`` with the shared-store payloads deleting it alone frees.

    A payload goes when every repo blob in the whole cache that links to it goes too: the
    blobs only this revision uses, or, when the revision is its repo's last one (the hub then
    deletes the whole repo folder), any blob of that repo, orphans included. The plain blobs
    only the revision uses are already counted, per repo, by :func:`_build_repo`.
    """
    # Which repo blobs (referenced or orphan, in any repo) link to each shared payload.
    payload_refs: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for index, scan_ in enumerate(scans):
        for key, store in scan_.store_links:
            payload_refs[store].append((index, key))
    items = []
    for index, scan_ in enumerate(scans):
        if not scan_.store_exclusive:
            items.append(scan_.item)
            continue
        only_revision = len(scan_.item.revisions) == 1
        revisions = list(scan_.item.revisions)
        store_of = dict(scan_.store_links)
        for rev_index, keys in scan_.store_exclusive:
            exclusive = set(keys)
            freed_payloads = {
                store
                for store in (store_of[k] for k in keys)
                if all(i == index and (k in exclusive or only_revision) for i, k in payload_refs[store])
            }
            rev = revisions[rev_index]
            extra = sum(payloads[p].size or 0 for p in freed_payloads)
            revisions[rev_index] = replace(rev, reclaimable_bytes=rev.reclaimable_bytes + extra)
        items.append(replace(scan_.item, revisions=tuple(revisions)))
    return items


def scan(root: str, *, explicit: bool = True, jobs: int = 1, ledger: bool = True) -> CacheInventory:
    """Scan one hub cache root into a :class:`CacheInventory`. Never writes, never opens a blob.

    Raises the errors of :func:`check_root`. Everything odd inside the cache becomes a
    :class:`ScanWarning` and the scan goes on. ``jobs`` > 1 scans up to that many repos at a
    time (:func:`hfcache.parallel.ordered_map`: forked worker processes on Linux, else threads);
    the result is the same for any ``jobs``. ``ledger=False`` leaves out the
    :class:`BlobLedger` (each blob's size and payload), which only planning needs: a scan that
    is only shown saves its memory and, with workers, the time to send it back.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    real = check_root(root, explicit=explicit)
    if real is None:
        return CacheInventory(kind=KIND, title=TITLE, root=os.path.abspath(root), exists=False)
    roots = _Roots(real=real, given=os.path.abspath(root), store=os.path.join(real, SHARED_STORE_DIR))
    cache_warnings: list[ScanWarning] = []
    try:
        entries = sorted(os.scandir(real), key=lambda e: e.name)
    except OSError as e:  # pragma: no cover - check_root listed it a moment ago
        raise CacheUnreadable(f"cannot read cache directory {real}: {e.strerror or e}", path=real) from e

    # The shared store first: repo blobs that link into it take their sizes and times from it.
    store = next((e for e in entries if e.name == SHARED_STORE_DIR and e.is_dir(follow_symlinks=False)), None)
    if store is not None:
        _scan_store(roots, cache_warnings)

    locks = next((e for e in entries if e.name == ".locks"), None)
    if locks is not None and locks.is_dir(follow_symlinks=False):
        _read_trash(roots, cache_warnings)

    partials: list[PartialFile] = []
    repos: list[tuple[os.DirEntry[str], str, str]] = []
    for entry in entries:
        name = entry.name
        if name in FILES_TO_IGNORE or name in ROOT_ENTRIES_TO_SKIP or entry is store:
            continue
        match = _REPO_DIR_RE.fullmatch(name)
        if match:
            repos.append((entry, REPO_TYPES[match.group(1)], match.group(2).replace("--", "/")))
        elif TEMPFILE_RE.fullmatch(name) and entry.is_dir(follow_symlinks=False):
            # huggingface_hub's symlink-support probe (SoftTemporaryDirectory); normally removed at once.
            partials.append(PartialFile(entry.path, None, 0, _dir_times(entry.path)[1], "temporary"))
        else:
            cache_warnings.append(ScanWarning(entry.path, "not a repo folder, left alone", blocks_deletion=False))

    def scan_repo(repo: tuple[os.DirEntry[str], str, str]) -> _RepoScan:
        return _settle(_scan_repo(roots, *repo), ledger)

    for folder in sorted(roots.trash.keys() - {entry.name for entry, _, _ in repos}):
        for trash_entry, _ in roots.trash[folder]:
            message = "an interrupted prune was removing this from a repo that is gone: the next prune finishes it"
            cache_warnings.append(ScanWarning(trash_entry.path, message, blocks_deletion=False))
    scans = parallel.ordered_map(scan_repo, repos, jobs, label=f"scanning {root}")
    items = _add_store_reclaim(scans, roots.payloads)

    total = sum(p.size or 0 for p in roots.payloads.values())
    foreign: dict[str, int] = {}
    orphans: list[OrphanFile] = []
    for scan_ in scans:
        total += scan_.own_bytes
        foreign.update(scan_.foreign)
        orphans.extend(scan_.orphans)
        partials.extend(scan_.partials)
    total += sum(foreign.values())
    blob_ledger = (
        BlobLedger(
            blobs={item.path: scan_.counted for scan_, item in zip(scans, items, strict=True)},
            payloads={p: b.size or 0 for p, b in roots.payloads.items()},
        )
        if ledger
        else None
    )

    linked = {store for scan_ in scans for _, store in scan_.store_links}
    unreferenced = tuple(
        SharedPayload(p.path, p.size or 0, p.atime, p.mtime, has_manifest=p.path in roots.manifests)
        for path, p in sorted(roots.payloads.items())
        if path not in linked
    )
    return CacheInventory(
        kind=KIND,
        title=TITLE,
        root=real,
        protected=(real, os.path.join(real, ".locks"), roots.store),
        size_bytes=total,
        items=tuple(sorted(items, key=lambda i: i.path)),
        partial_files=tuple(sorted(partials, key=lambda p: p.path)),
        orphan_files=tuple(sorted(orphans, key=lambda o: o.path)),
        unreferenced_payloads=unreferenced,
        warnings=tuple(cache_warnings),
        shared_store=roots.store_marked,
        leftovers=tuple(lo for scan_ in scans for lo in scan_.leftovers),
        ledger=blob_ledger,
    )


_REPO_SHAPE = rf"(?:{'|'.join(REPO_TYPES)})--[^/]+"
_COMMIT_SHAPE = "[0-9a-f]{40}"

HUB = FunctionKind(
    KIND,
    TITLE,
    tuple(REPO_TYPES.values()),
    lambda env: [default_root(env)],
    lambda root: _looks_like_cache(names_in(root), root),
    scan,
    parallel=True,
    shapes=(
        _REPO_SHAPE,  # a whole repo folder, with its last revision
        rf"{_REPO_SHAPE}/snapshots/{_COMMIT_SHAPE}",
        rf"{_REPO_SHAPE}/refs/.+",  # a ref (refs/pr/1 too) naming a revision that goes
        rf"{_REPO_SHAPE}/blobs/[^/]+",  # a blob no remaining revision uses, a partial, an orphan
        rf"{_REPO_SHAPE}/\.no_exist/{_COMMIT_SHAPE}",
        rf"{_REPO_SHAPE}/trees/{_COMMIT_SHAPE}\.json",
        TEMPFILE_RE.pattern,  # the hub's symlink probe folder (tempfile.mkdtemp)
        rf"{SHARED_STORE_DIR}/[0-9a-f]{{2}}/[0-9a-f]{{64}}",  # a shared payload (swept by the hub's own code)
    ),
    # The hub's scan_cache_dir warns about any unknown entry in the root, but skips .locks/;
    # its own locks live one level down, in .locks/<repo folder>/, so this name cannot collide.
    lock_file=".locks/hfcache-prune.lock",
    deletion=HUB_DELETION,
)
