"""Scanning an Ollama store: models and their tags from ``manifests/``, each blob of ``blobs/`` counted once.

Models are ``manifests/<host>/<namespace>/<model>/`` folders, named as ``ollama list`` names
them (:attr:`~hfcache.caches.ollama.layout.Name.id`: ``llama3``, ``user/model``,
``hf.co/org/repo``); their revisions are the tag files in them. Blobs are shared by every tag
of every model, so the numbers are counted the way Ollama counts them, each blob once:

- a tag's ``size_bytes`` is ``Manifest.Size``, the sizes its manifest gives for its layers and
  config: ``ollama list``'s SIZE (``server/model_list_cache.go`` ``buildModelListSummary``);
  its ``last_modified`` is the manifest's mtime, ``ollama list``'s MODIFIED;
- its ``reclaimable_bytes`` are the blobs no other manifest names, as ``ollama rm`` frees them
  (``Manifest.RemoveLayers``); a model's size and the cache's total count each blob once, by
  its size on disk (what a pull verified against the manifest's size and digest);
- the scan's :class:`~hfcache.model.BlobLedger` gives each blob as a payload every model naming
  it links to, so a plan frees a blob with the last tag, of any model, that names it.

Blobs no manifest names are orphans (junk, as ``PruneLayers`` removes them); a download in
progress (``-partial`` and its ``-partial-N`` state files, or a ``.tmp``) is one partial
download. A manifest that cannot be read as Ollama reads one (truncated mid-write, a wrong
type, a symlink hfcache will not follow) makes every blob of the cache undeletable while it
is there: Ollama skips its own prune then (``server/routes.go`` ``Serve``), and hfcache
deletes no blob and no tag, and lists no orphan. Manifests are read with ``O_NOATIME``
where the account may; no blob is ever opened.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections import Counter
from dataclasses import dataclass, field

from hfcache.caches._common import is_dir, list_dir, open_and_scan, revision_order, unknown_item
from hfcache.caches.ollama.layout import (
    BLOB_RE,
    BLOBS,
    DEFAULT_TAG,
    KIND,
    MANIFESTS,
    PARTIAL_RE,
    TEMP_RE,
    TITLE,
    TRASH,
    Manifest,
    ManifestError,
    Name,
    blob_name,
    looks_like_cache,
    name_from_parts,
    parse_manifest,
)
from hfcache.caches.versions import parse_version
from hfcache.fs.mounts import mount_points_under
from hfcache.model import BlobLedger, CacheInventory, Item, Leftover, OrphanFile, PartialFile, Revision, ScanWarning

_BLOCKS = ": while it is there, no tag or blob of this Ollama store is deleted"
# A manifest is a few hundred bytes; one of a tensor model lists thousands of layers. Past this it is refused.
MAX_MANIFEST = 64 * 1024 * 1024
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_NOATIME = getattr(os, "O_NOATIME", 0)


def read_fd(fd: int, path: str) -> tuple[bytes, os.stat_result]:
    """All of a regular file open on ``fd``, then its ``fstat`` (the access time after the reading, see :func:`read_manifest`)."""
    st = os.fstat(fd)
    if not stat_mod.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", path)
    if st.st_size > MAX_MANIFEST:
        raise OSError(errno.EFBIG, "too large for a manifest", path)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
        if sum(map(len, chunks)) > MAX_MANIFEST:
            raise OSError(errno.EFBIG, "too large for a manifest", path)
    return b"".join(chunks), os.fstat(fd)


def open_noatime(name: str, dir_fd: int | None = None) -> int:
    """Open a file read-only, never through a symlink, with ``O_NOATIME`` where the account may (its owner, root)."""
    try:
        return os.open(name, _READ_FLAGS | _NOATIME, dir_fd=dir_fd)
    except PermissionError:
        if not _NOATIME:
            raise
        return os.open(name, _READ_FLAGS, dir_fd=dir_fd)


def read_manifest(path: str) -> tuple[Manifest, os.stat_result]:
    """A manifest file read and parsed; raises OSError or :class:`ManifestError`.

    The times are taken after the reading: where ``O_NOATIME`` is refused (a manifest of another
    account), the reading may move the access time, and a later scan must not take hfcache's
    own reading for a use since the plan.
    """
    fd = open_noatime(path)
    try:
        data, st = read_fd(fd, path)
    finally:
        os.close(fd)
    return parse_manifest(data), st


class _Blob:
    __slots__ = ("path", "size", "atime", "mtime", "freeable")

    def __init__(self, path: str, st: os.stat_result) -> None:
        self.path = path
        self.size = st.st_size
        self.atime = st.st_atime
        self.mtime = st.st_mtime
        self.freeable = st.st_size if st.st_nlink == 1 else 0  # a blob linked elsewhere too frees nothing when it goes


@dataclass
class _Tag:
    name: Name
    path: str
    manifest: Manifest
    st: os.stat_result


def allocated(st: os.stat_result) -> int:
    """The bytes a file takes on disk, at most its size: a download's data file is sized up front, sparse."""
    blocks = getattr(st, "st_blocks", None)
    return st.st_size if blocks is None else min(st.st_size, blocks * 512)


@dataclass
class _Scan:
    root: str
    warnings: list[ScanWarning]
    seen: set[tuple[int, int]] = field(default_factory=set)
    tags: list[_Tag] = field(default_factory=list)
    named: Counter[str] = field(default_factory=Counter)  # blob name -> how many manifests name it
    blobs: dict[str, _Blob] = field(default_factory=dict)
    aside: dict[str, _Blob] = field(default_factory=dict)  # set aside by a prune that was killed
    unknown: list[Item] = field(default_factory=list)
    partials: list[PartialFile] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)
    unreadable: list[ScanWarning] = field(default_factory=list)  # manifests hfcache cannot read: no blob goes
    strays: dict[str, set[str]] = field(default_factory=dict)  # manifests of no model -> the blobs they name
    odd: set[str] = field(default_factory=set)  # names in blobs/ that are not regular files (symlinks, folders)
    downloads: dict[str, list[tuple[str, os.stat_result]]] = field(default_factory=dict)

    def stray(self, path: str, why: str) -> None:
        self.unknown.append(unknown_item(KIND, path, self.root, self.seen, why))

    # -- manifests/ ----------------------------------------------------------------------------

    def manifests(self, folder: str, parts: list[str]) -> None:
        """``manifests/<host>/<namespace>/<model>/<tag>``, as ``manifest.Manifests`` globs them (``*/*/*/*``)."""
        entries = list_dir(folder, self.warnings)
        if not entries and parts:
            self.leftovers.append(_leftover(folder, parts))
            return
        for entry in entries:
            here = [*parts, entry.name]
            if entry.is_symlink():
                # Ollama's glob follows it; hfcache never does, so cannot know what it names.
                self.unreadable.append(ScanWarning(entry.path, f"a symlink among the manifests (never followed){_BLOCKS}"))
                self.stray(entry.path, "a symlink among Ollama's manifests")
            elif len(here) < 4:
                if is_dir(entry):
                    self.manifests(entry.path, here)
                else:
                    self.stray(entry.path, f"not a folder of Ollama's manifests (a {('host', 'namespace', 'model')[len(parts)]})")
            elif is_dir(entry):
                self.stray(entry.path, "a folder where Ollama keeps a tag's manifest (Ollama skips it)")
            else:
                self.manifest(entry.path, here)

    def manifest(self, path: str, parts: list[str]) -> None:
        try:
            manifest, st = read_manifest(path)
        except (OSError, ManifestError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            why = f"manifest cannot be read as Ollama reads one ({why}){_BLOCKS} (Ollama skips its own prune then too)"
            self.unreadable.append(ScanWarning(path, why))
            self.stray(path, "a manifest that cannot be read")
            return
        self.named.update({n for d in manifest.named if (n := blob_name(d))})
        name = name_from_parts(parts)
        if name is None:  # Ollama lists no model for it, but what it names stays
            self.stray(path, "a manifest whose name Ollama refuses (types/model/name.go isValidPart)")
            self.strays[path] = {n for d in manifest.named if (n := blob_name(d))}
            return
        self.tags.append(_Tag(name, path, manifest, st))

    # -- blobs/ ----------------------------------------------------------------------------------

    def blob_folder(self, folder: str) -> None:
        for entry in list_dir(folder, self.warnings):
            name = entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                self.warnings.append(ScanWarning(entry.path, f"cannot stat ({e.strerror or e})"))
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                self.odd.add(name)
                self.stray(entry.path, "not a regular file among Ollama's blobs (never followed)")
            elif BLOB_RE.fullmatch(name):
                self.blobs[name] = _Blob(entry.path, st)
            elif match := PARTIAL_RE.fullmatch(name):
                key = match.group(1) + (".tmp" if match.group(2) == ".tmp" else "-partial")
                self.downloads.setdefault(key, []).append((entry.path, st))
            elif TEMP_RE.fullmatch(name):
                self.partials.append(PartialFile(entry.path, None, st.st_size, st.st_mtime, "temporary"))
            else:
                self.stray(entry.path, "not a name Ollama gives a blob")
        for members in self.downloads.values():
            self.partials.append(_download(members))

    def trash(self, folder: str) -> None:
        """Blobs a prune set aside and was killed before it finished: the next prune's repair puts back the named ones."""
        for entry in list_dir(folder, self.warnings):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if BLOB_RE.fullmatch(entry.name) and stat_mod.S_ISREG(st.st_mode):
                self.aside[entry.name] = _Blob(entry.path, st)
            else:
                self.warnings.append(ScanWarning(entry.path, "not set aside by hfcache, left alone", blocks_deletion=False))


def _leftover(folder: str, parts: list[str]) -> Leftover:
    """An emptied folder of ``manifests/`` (``PruneDirectory`` removes those): junk, removed with ``rmdir`` only."""
    name = Name(parts[0], parts[1], parts[2], DEFAULT_TAG) if len(parts) == 3 else None
    try:
        mtime = os.lstat(folder).st_mtime
    except OSError:
        mtime = 0.0
    return Leftover(folder, name.id if name is not None and name.valid else None, None, 0, mtime)


def _download(members: list[tuple[str, os.stat_result]]) -> PartialFile:
    """One download: its data file (``-partial``, or ``.tmp``) and the state files of its parts, as one unit.

    Its path is the data file (the one a running download holds open), else its first part
    file; its size what they take on disk (the data file is sparse until written); its time
    the newest of theirs, so that one part still being written keeps them all.
    """
    members.sort(key=lambda m: (not m[0].endswith(("-partial", ".tmp")), len(m[0]), m[0]))
    size = sum(allocated(st) for _, st in members)
    return PartialFile(members[0][0], None, size, max(st.st_mtime for _, st in members), "resumable")


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one Ollama store (``OLLAMA_MODELS``, ``~/.ollama/models``).

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    refusal = "holds no Ollama manifests/ or blobs/"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    state = _Scan(real, warnings)
    manifests = os.path.join(real, MANIFESTS)
    for point in mount_points_under(real):
        if point == manifests or point.startswith(manifests + os.sep):
            # Deletion never reads past one (hfcache.fs.ops.Tree), so it could not tell which blobs stay.
            state.unreadable.append(ScanWarning(point, f"a mount point among the manifests{_BLOCKS}"))
    for entry in entries:
        if entry.name == MANIFESTS and is_dir(entry):
            state.manifests(entry.path, [])
        elif entry.name == BLOBS and is_dir(entry):
            state.blob_folder(entry.path)
        elif entry.name == TRASH and is_dir(entry):
            state.trash(entry.path)
        else:
            warnings.append(ScanWarning(entry.path, "not written by Ollama, left alone", blocks_deletion=False))
    return _inventory(state)


def _revision(state: _Scan, tag: _Tag) -> tuple[Revision, dict[str, _Blob]]:
    """One tag: Ollama's size, the blobs it names (present ones), what only it names."""
    present: dict[str, _Blob] = {}
    warnings: list[ScanWarning] = []
    for digest, _ in tag.manifest.layers:
        if not digest:
            continue  # an empty digest names nothing (Manifest.RemoveLayers skips it)
        name = blob_name(digest)
        if name is None:
            warnings.append(ScanWarning(tag.path, f"names {digest[:80]!r}, which Ollama maps to no blob (manifest/paths.go)"))
            continue
        found = state.blobs.get(name) or state.aside.get(name)
        if found is None:
            what = "not a regular file (never followed)" if name in state.odd else "blob missing"
            warnings.append(ScanWarning(os.path.join(state.root, BLOBS, name), f"{what} (named by {tag.path})"))
            continue
        present[name] = found
    only = sorted(n for n in present if state.named[n] == 1)
    rev = Revision(
        revision=tag.name.tag,
        path=tag.path,
        size_bytes=tag.manifest.size,
        reclaimable_bytes=sum(present[n].freeable for n in only),
        last_accessed=max([tag.st.st_atime, *(b.atime for b in present.values())]),
        last_modified=tag.st.st_mtime,
        nb_files=1 + len(present),
        blobs=frozenset(present),
        warnings=tuple(warnings),
        version=parse_version(tag.name.tag),
        paths=(tag.path, *(os.path.join(state.root, BLOBS, n) for n in only)),
        default=tag.name.tag == DEFAULT_TAG,
    )
    return rev, present


def _inventory(state: _Scan) -> CacheInventory:
    root = state.root
    blocked = _blocking(state)
    models: dict[str, list[_Tag]] = {}
    for tag in state.tags:
        models.setdefault(os.path.dirname(tag.path), []).append(tag)
    items: list[Item] = []
    ledger: dict[str, dict[str, tuple[int, str | None]]] = {}
    payloads: dict[str, int] = {}
    for folder, tags in models.items():
        item_warnings = [ScanWarning(folder, blocked)] if blocked else []
        revs, sizes = [], {}
        for tag in tags:
            rev, present = _revision(state, tag)
            revs.append(rev)
            for name, b in present.items():
                payload = os.path.join(root, BLOBS, name)
                sizes[name] = b.size
                payloads[payload] = b.freeable  # (0 when linked elsewhere too: nothing leaves the disk)
                ledger.setdefault(folder, {})[name] = (b.size, payload)
        revs.sort(key=revision_order, reverse=True)
        items.append(
            Item(
                kind=KIND,
                id=tags[0].name.id,
                type="model",
                path=folder,
                size_bytes=sum(sizes.values()),
                last_accessed=max(r.last_accessed for r in revs),
                last_modified=max(r.last_modified for r in revs),
                revisions=tuple(revs),
                nb_blobs=len(sizes),
                warnings=tuple(item_warnings),
            )
        )
    referenced = {n for n in state.named if n in state.blobs or n in state.aside}
    # What a manifest of no model names stays while it is there: in the ledger as a holder
    # no plan removes, so that no plan counts those blobs as freed.
    for path, names in state.strays.items():
        for name in names & referenced:
            blob = state.blobs.get(name) or state.aside[name]
            size = blob.size
            payloads[os.path.join(root, BLOBS, name)] = blob.freeable
            ledger.setdefault(path, {})[name] = (size, os.path.join(root, BLOBS, name))
    orphans: list[OrphanFile] = []
    for name, b in sorted(state.blobs.items()):
        if name in referenced:
            continue
        if blocked:  # a manifest hfcache cannot read may name it
            state.stray(b.path, "a blob no readable manifest names, while a manifest cannot be read")
        else:
            orphans.append(OrphanFile(b.path, None, b.size, b.atime, b.mtime))
    for name, b in state.aside.items():
        if name not in referenced:
            state.warnings.append(ScanWarning(b.path, "set aside by an interrupted prune: the next prune removes it", False))
    unknown_bytes = sum(i.size_bytes for i in state.unknown)
    found = sorted([*items, *state.unknown], key=lambda i: (i.type, i.id, i.path))
    return CacheInventory(
        kind=KIND,
        title=TITLE,
        root=root,
        size_bytes=sum((state.blobs.get(n) or state.aside[n]).size for n in referenced) + unknown_bytes,
        items=tuple(found),
        partial_files=tuple(sorted(state.partials, key=lambda p: p.path)),
        orphan_files=tuple(orphans),
        warnings=(*state.warnings, *state.unreadable),
        shared_store=True,
        protected=(root, os.path.join(root, MANIFESTS), os.path.join(root, BLOBS), os.path.join(root, TRASH)),
        leftovers=tuple(sorted(state.leftovers, key=lambda lo: lo.path)),
        ledger=BlobLedger(ledger, payloads),
    )


def _blocking(state: _Scan) -> str | None:
    """Why every model is kept while a manifest cannot be read (no blob of the cache may go then)."""
    if not state.unreadable:
        return None
    return f"not deletable while a manifest of this Ollama store cannot be read ({state.unreadable[0].path})"
