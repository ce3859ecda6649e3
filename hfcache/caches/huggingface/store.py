"""Blobs: a repo's ``blobs/`` folder, the links into it, and the cross-repo shared store (``<root>/blobs/``)."""

from __future__ import annotations

import os
import stat as stat_mod
from dataclasses import dataclass, field
from typing import NamedTuple

from hfcache.caches._common import FILES_TO_IGNORE
from hfcache.caches.huggingface.location import (
    DIR_FLAGS,
    PREFIX_RE,
    SHARED_STORE_MARKER,
    SHARED_STORE_MARKER_CONTENT,
    XET_HASH_RE,
    BlobTemporary,
    blob_temporary,
)
from hfcache.fs.locks import is_lock_held
from hfcache.model import Identity, PartialFile, ScanWarning


class Blob(NamedTuple):
    """What one blob key refers to. ``size`` is None when it cannot be counted (broken, outside the cache)."""

    size: int | None
    atime: float
    mtime: float
    store: str | None  # the shared-store payload it links to, if any
    path: str  # "" for a plain blobs/<etag> file: <repo>/<key>, not stored (a scan holds 100,000s)


@dataclass
class Roots:
    """The cache root, resolved, plus the spelling it was given in (absolute symlinks may use either)."""

    real: str
    given: str
    store: str
    payloads: dict[str, Blob] = field(default_factory=dict)
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


def open_folder(folder: str) -> tuple[int, list[str]]:
    """An fd of ``folder`` (never through a symlink) and its entry names, to read them relative to it.

    The caller closes the fd; when listing fails it is closed here and the OSError raised.
    """
    fd = os.open(folder, DIR_FLAGS)
    try:
        return fd, os.listdir(fd)
    except OSError:
        os.close(fd)
        raise


new_blob = tuple.__new__  # Blob(...) without the Python-level __new__ of a NamedTuple (the hot loop)


def stat_blob(st: os.stat_result, path: str, store: str | None = None) -> Blob:
    return Blob(st.st_size, st.st_atime, st.st_mtime, store, path)


def _broken(path: str) -> Blob:
    return Blob(None, 0.0, 0.0, None, path)


def list_folder(folder: str, what: str, warnings: list[ScanWarning]) -> list[os.DirEntry[str]]:
    """The entries of ``folder``; on failure a warning ("cannot read <what>") and nothing."""
    try:
        return list(os.scandir(folder))
    except OSError as e:
        warnings.append(ScanWarning(folder, f"cannot read {what} ({e.strerror or e})"))
        return []


def scan_store(roots: Roots, warnings: list[ScanWarning]) -> None:
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
    for prefix in list_folder(roots.store, "the shared store", warnings):
        if not (PREFIX_RE.fullmatch(prefix.name) and prefix.is_dir(follow_symlinks=False)):
            continue
        for entry in list_folder(prefix.path, "the shared store", warnings):
            name = entry.name
            if name.endswith(".refs"):
                roots.manifests.add(entry.path[:-5])
            elif XET_HASH_RE.fullmatch(name) and name.startswith(prefix.name) and entry.is_file(follow_symlinks=False):
                try:
                    roots.payloads[entry.path] = stat_blob(entry.stat(follow_symlinks=False), entry.path, entry.path)
                except OSError:
                    continue


def has_inner_dotdot(target: str) -> bool:
    """True for links like ``a/../../b``, where lexical normalisation may disagree with the kernel."""
    parts = target.split("/")
    i = 0
    while i < len(parts) and parts[i] == "..":
        i += 1
    return ".." in parts[i:]


def blob_of(link: str, target: str, repo: str) -> str | None:
    """The name of the repo blob a link at ``link`` reaches (``target`` as read), or None when it leads elsewhere."""
    resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
    return os.path.basename(resolved) if os.path.dirname(resolved) == os.path.join(repo, "blobs") else None


def named_blob(link: str, target: str, repo: str, up: str) -> str | None:
    """The blob of ``repo`` a snapshot link names (whether or not it is there), or None when it leads elsewhere.

    ``up`` is the hub's own link prefix at the link's depth (``../../blobs/`` in the snapshot
    folder itself, one ``../`` more per folder below): recognised by it without resolving,
    any other target resolved (:func:`blob_of`). The one rule of the scan's listing
    (``listing=True``) and of the walks of :mod:`hfcache.caches.huggingface.files`.
    """
    rest = target[len(up) :] if target.startswith(up) else ""
    return rest if rest and "/" not in rest else blob_of(link, target, repo)


def resolve_link(roots: Roots, link_dir: str, target: str) -> str:
    """Absolute, normalised path of a link's first hop (``os.readlink`` result), without touching the disk."""
    if os.path.isabs(target):
        return roots.normalize(os.path.normpath(target))
    return roots.normalize(os.path.normpath(os.path.join(link_dir, target)))


def stat_foreign(roots: Roots, path: str, target: str) -> Blob | str:
    """Stat a link's first hop ``path`` (read as ``target``) that is not where the hub puts blobs.

    Returns a message instead when it must not be followed. The lexical test is skipped for
    targets like ``a/../../b``, where only the resolved path can be trusted.
    """
    if not has_inner_dotdot(target) and not roots.contains(path):
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
    return stat_blob(st, real)


def _scan_blob_link(roots: Roots, link: str, blobs_dir: str) -> tuple[Blob, str | None]:
    """A repo ``blobs/<etag>`` that is a symlink: into the shared store (hub >= 1.32), or odd."""
    try:
        target = os.readlink(link)
    except OSError:
        return _broken(link), "unreadable symlink"
    path = resolve_link(roots, blobs_dir, target)
    if roots.store_marked and os.path.dirname(os.path.dirname(path)) == roots.store:
        payload = roots.payloads.get(path)
        if payload is not None:
            return payload._replace(path=link), None
    found = stat_foreign(roots, path, target)
    if isinstance(found, str):
        return _broken(link), found
    return found._replace(path=link), None


def _locks_of(roots: Roots, folder: str, blobs_dir: str, temp: BlobTemporary) -> tuple[str, ...]:
    """Every lock file a writer of this partial download may take; the one to show first.

    huggingface_hub (and hf-hub >= 1.0) lock ``.locks/<repo folder>/<etag>.lock``,
    swift-huggingface the blob's path mirrored under ``.locks/`` (``.locks/<repo
    folder>/blobs/<etag>.lock``), the Rust hf-hub 0.4-0.5 and llama.cpp's proposed lock
    ``blobs/<etag>.lock``. All are tested, now and again just before the partial goes (a
    free lock one program left does not hide the one another holds, nor does a lock taken
    after the scan in another place). First: a held one, else one that exists, else the one
    its writer would take (:attr:`BlobTemporary.lock`, else the hub's).
    """
    if temp.etag is None:
        return ()
    lock = temp.etag + ".lock"
    hub = os.path.join(roots.real, ".locks", folder, lock)
    beside = os.path.join(blobs_dir, temp.lock or lock)
    candidates = [hub, os.path.join(roots.real, ".locks", folder, "blobs", lock), beside]
    first = next((c for c in candidates if is_lock_held(c)), None)
    first = first or next((c for c in candidates if os.path.lexists(c)), beside if temp.lock else hub)
    return (first, *(c for c in candidates if c != first))


def _held(locks: tuple[str, ...]) -> bool | None:
    """True when a lock of them is held, False when one could be tested and none is, None when none could."""
    states = [is_lock_held(c) for c in locks]
    return True if True in states else False if False in states else None


def scan_blobs_dir(
    roots: Roots,
    repo_dir: str,
    folder: str,
    item_id: str,
    warnings: list[ScanWarning],
    identities: dict[str, Identity] | None = None,
) -> tuple[dict[str, Blob], list[PartialFile], int]:
    """A repo's blobs (by key ``blobs/<name>``), its partial downloads, and how many download locks lie beside them.

    What the name says first (:func:`~hfcache.caches.huggingface.location.blob_temporary`):
    a partial download of any writer of the hub layout is never a blob, a lock file never
    anything (never deleted). Everything else is a blob, whatever its name: whether one no
    snapshot links is an orphan is decided by its name once the links are known. With
    ``identities``, the stat identity of each blob that is a regular file goes there, by name
    (:class:`~hfcache.model.FileListing`).
    """
    blobs_dir = os.path.join(repo_dir, "blobs")
    blobs: dict[str, Blob] = {}
    partials: list[PartialFile] = []
    locks = 0
    # Names and one lstat each, relative to the open folder: no DirEntry or path string per
    # blob, and the kernel resolves one name instead of the whole path (the hot loop).
    fd, names = open_folder(blobs_dir)
    try:
        for name in names:
            if name in FILES_TO_IGNORE:
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone since it was listed
            # Cheap test first: almost every entry is a plain blob, a hex name without a dot.
            temp = blob_temporary(name) if "." in name or name.startswith("tmp_") else None
            if temp is not None and temp.what == "lock":
                locks += 1
            elif temp is not None and not stat_mod.S_ISREG(st.st_mode):  # a folder (or link) named like one: not ours
                message = "named like a partial download but not a file: left alone"
                warnings.append(ScanWarning(os.path.join(blobs_dir, name), message, blocks_deletion=False))
            elif temp is not None:
                writer_locks = _locks_of(roots, folder, blobs_dir, temp)
                lock_path = writer_locks[0] if writer_locks else None
                partials.append(
                    PartialFile(
                        path=os.path.join(blobs_dir, name),
                        item_id=item_id,
                        size_bytes=st.st_size,
                        last_modified=st.st_mtime,
                        scheme=temp.scheme,
                        lock_path=lock_path,
                        lock_held=_held(writer_locks),
                        other_locks=writer_locks[1:],
                    )
                )
            elif stat_mod.S_ISREG(st.st_mode):
                blobs["blobs/" + name] = new_blob(Blob, (st.st_size, st.st_atime, st.st_mtime, None, ""))
                if identities is not None:
                    identities[name] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
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
    return blobs, partials, locks


def read_small(path: str, limit: int = 256) -> bytes:
    """The first ``limit`` bytes of a small file (a ref), without a Python file object."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)
