"""One repo folder: its refs, snapshots and blobs walked once into an :class:`~hfcache.model.Item`."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from itertools import chain

from hfcache.caches._common import FILES_TO_IGNORE, measure
from hfcache.caches.huggingface.location import BLOB_NAME_RE, COMMIT_RE, KIND, REPO_SUBDIRS, is_ref_temporary
from hfcache.caches.huggingface.snapshot import scan_snapshot
from hfcache.caches.huggingface.store import Blob, Roots, list_folder, read_small, scan_blobs_dir
from hfcache.caches.huggingface.trash import scan_trash
from hfcache.caches.versions import parse_version, version_key
from hfcache.model import Identity, Item, Leftover, Listed, OrphanFile, PartialFile, Revision, ScanWarning


@dataclass
class RepoScan:
    item: Item  # its revisions' reclaimable_bytes count plain blobs only; see store_exclusive
    blobs: dict[str, Blob]
    partials: list[PartialFile]
    leftovers: list[Leftover]
    # Revision index -> keys only that revision uses that link into the shared store: what
    # deleting them frees depends on other repos, so the whole-cache step finishes their count.
    store_exclusive: list[tuple[int, list[str]]] = field(default_factory=list)
    # Filled by settle, which also shrinks ``blobs`` to the ledger's (size, payload) pairs.
    counted: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    store_links: list[tuple[str, str]] = field(default_factory=list)  # (key, payload) of blobs linking into the store
    own_bytes: int = 0  # referenced blobs in the repo's blobs/ (not shared-store links)
    foreign: dict[str, int] = field(default_factory=dict)  # referenced files elsewhere in the cache
    orphans: list[OrphanFile] = field(default_factory=list)
    unknown: frozenset[str] = frozenset()  # keys of files in blobs/ that are neither blobs nor known temporaries
    # With listing=True (hfcache verify): each revision's files, by its path, and the blobs' identities (FileListing)
    files: dict[str, tuple[Listed, ...]] | None = None
    identities: dict[str, Identity] | None = None


Lonely = list[tuple[str, str, str, PartialFile]]  # (ref name, commit, path, the file as a temporary)


def _scan_refs(
    refs_dir: str, item_id: str, warnings: list[ScanWarning]
) -> tuple[dict[str, list[str]], list[PartialFile], Lonely]:
    """Map commit -> ref names, walking nested refs (``refs/pr/1``); atomic-write leftovers apart.

    A ref is written to ``refs/<name>.<8 hex>.tmp`` (huggingface_hub) or ``refs/<name>.tmp``
    (llama.cpp), then renamed: such a file a kill left is no ref but a temporary file
    (:class:`PartialFile`, scheme ``temporary``), junk once old; llama.cpp's only when the ref
    it was renamed to is there (:func:`~hfcache.caches.huggingface.location.is_ref_temporary`).
    A lone ``<name>.tmp`` holding a commit comes back apart (``lonely``): a ref when that
    commit's snapshot is there (it keeps its revision), else a temporary.
    """
    refs: dict[str, list[str]] = defaultdict(list)
    temporaries: list[PartialFile] = []
    lonely: Lonely = []
    stack = [(refs_dir, "")]
    while stack:
        folder, prefix = stack.pop()
        entries = list_folder(folder, "refs", warnings)
        names = {e.name for e in entries}
        for entry in entries:
            name = entry.name
            if name in FILES_TO_IGNORE:
                continue
            if entry.is_symlink():
                warnings.append(ScanWarning(entry.path, "ref is a symlink, not followed"))
            elif entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, f"{prefix}{name}/"))
            elif is_ref_temporary(name, names):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone: renamed into place since it was listed
                temporaries.append(PartialFile(entry.path, item_id, st.st_size, st.st_mtime, "temporary"))
            else:
                try:
                    # A ref is a 40-byte pointer file, not model data.
                    content = read_small(entry.path).decode("ascii", "replace").strip()
                except OSError as e:
                    warnings.append(ScanWarning(entry.path, f"cannot read ref ({e.strerror or e})"))
                    continue
                if name.endswith(".tmp") and COMMIT_RE.fullmatch(content):
                    st = entry.stat(follow_symlinks=False)
                    as_temporary = PartialFile(entry.path, item_id, st.st_size, st.st_mtime, "temporary")
                    lonely.append((prefix + name, content, entry.path, as_temporary))
                elif COMMIT_RE.fullmatch(content):
                    refs[content].append(prefix + name)
                else:
                    warnings.append(ScanWarning(entry.path, "ref does not hold a commit hash"))
    return refs, temporaries, lonely


def _unknown_blobs(repo_dir: str, blobs: dict[str, Blob], reached: set[str], warnings: list[ScanWarning]) -> frozenset[str]:
    """Keys of files in ``blobs/`` that no snapshot links and whose name is no blob name the hub writes.

    Other programs write the hub layout with their own temporary names (those known are
    partial downloads or locks already). A name none of them is known to write is not taken
    for an orphan blob: it is reported, and never deleted.
    """
    unknown = [k for k in blobs.keys() - reached if k.startswith("blobs/") and not BLOB_NAME_RE.fullmatch(k[6:])]
    for key in sorted(unknown):
        message = "unknown file in blobs/ (not a blob name the hub writes, nor a temporary name of a known writer): left alone"
        warnings.append(ScanWarning(os.path.join(repo_dir, key), message, blocks_deletion=False))
    return frozenset(unknown)


def dir_times(path: str) -> tuple[float, float]:
    try:
        st = os.stat(path)
    except OSError:
        return 0.0, 0.0
    return st.st_atime, st.st_mtime


def _totals(blobs: dict[str, Blob], keys: Collection[str], fallback_dir: str) -> tuple[int, float, float]:
    """Bytes of ``keys``' blobs and their newest atime and mtime (the folder's own times when none counts)."""
    if keys:
        # Columns of the blobs' records: sum() and max() then run in C (the hot path of a big scan).
        sizes, atimes, mtimes, _, _ = zip(*map(blobs.__getitem__, keys), strict=True)
        if None not in sizes:
            return sum(sizes), max(atimes), max(mtimes)
    sized = [blobs[k] for k in keys if blobs[k].size is not None]
    if not sized:
        return 0, *dir_times(fallback_dir)
    return sum(b.size or 0 for b in sized), max(b.atime for b in sized), max(b.mtime for b in sized)


# One repo folder's walk, in the order the hub reads it; 30 > 15 until the hub kind becomes a
# package of its own (issue 16, point 1: location, walk, shared store, reclaim, deletion).
def scan_repo(  # noqa: C901
    roots: Roots, entry: os.DirEntry[str], repo_type: str, item_id: str, listing: bool = False
) -> RepoScan:
    """Walk one repo folder; with ``listing``, also what a verify needs of its files (:class:`~hfcache.model.FileListing`)."""
    repo_dir = entry.path
    warnings: list[ScanWarning] = []
    blobs: dict[str, Blob] = {}
    partials: list[PartialFile] = []
    revisions: list[tuple[str, str, set[str], int, list[ScanWarning]]] = []
    refs: dict[str, list[str]] = {}
    traces: dict[str, list[str]] = {}
    subdirs: dict[str, os.DirEntry[str]] = {}
    lonely: Lonely = []

    locks = 0  # download locks of other writers in blobs/ (never deleted): the folder is no emptied shell
    unknown: frozenset[str] = frozenset()
    files: dict[str, tuple[Listed, ...]] | None = {} if listing else None
    identities: dict[str, Identity] | None = {} if listing else None

    def finish() -> RepoScan:
        scan_ = _build_repo(roots, repo_dir, repo_type, item_id, warnings, blobs, partials, revisions, refs)
        scan_.unknown = unknown
        scan_.files, scan_.identities = files, identities
        if not (revisions or refs or blobs or partials or locks or any(w.blocks_deletion for w in warnings)):
            # An emptied shell (an interrupted removal of the whole repo): it goes as one leftover.
            m = measure(repo_dir, set(), [])
            folders = [repo_dir, *(e.path for e in subdirs.values() if e.is_dir(follow_symlinks=False))]
            newest = max(dir_times(d)[1] for d in folders)
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
            blobs, partials, locks = scan_blobs_dir(roots, repo_dir, entry.name, item_id, warnings, identities)
        except OSError as e:
            warnings.append(ScanWarning(os.path.join(repo_dir, "blobs"), f"cannot read blobs ({e.strerror or e})"))
    if usable("refs"):
        refs, temporaries, lonely = _scan_refs(os.path.join(repo_dir, "refs"), item_id, warnings)
        partials.extend(temporaries)
    set_aside: dict[str, Blob] = {}
    if entry.name in roots.trash:
        for commit, names in scan_trash(repo_dir, roots.trash[entry.name], blobs, set_aside, warnings).items():
            have = refs.setdefault(commit, [])
            have.extend(n for n in names if n not in have)
    for folder, suffix in ((".no_exist", ""), ("trees", ".json")):
        if usable(folder):
            for trace in list_folder(os.path.join(repo_dir, folder), folder, warnings):
                commit = trace.name[: len(trace.name) - len(suffix)] if trace.name.endswith(suffix) else ""
                if COMMIT_RE.fullmatch(commit):
                    traces.setdefault(commit, []).append(trace.path)
    if "snapshots" not in subdirs:
        # Normal after diffusers' cache migration or an interrupted delete: all blobs are orphans.
        warnings.append(ScanWarning(os.path.join(repo_dir, "snapshots"), "no snapshots/ folder", blocks_deletion=False))
    elif usable("snapshots"):
        snapshots_dir = os.path.join(repo_dir, "snapshots")
        tables: dict[int, dict[str, str]] = {}
        for snap in sorted(list_folder(snapshots_dir, "snapshots", warnings), key=lambda e: e.name):
            if snap.name in FILES_TO_IGNORE:
                continue
            if snap.is_symlink():
                warnings.append(ScanWarning(snap.path, "snapshot is a symlink, not followed"))
                continue
            if not snap.is_dir(follow_symlinks=False):
                warnings.append(ScanWarning(snap.path, "unexpected file in snapshots/"))
                continue
            rev_warnings: list[ScanWarning] = []
            if not COMMIT_RE.fullmatch(snap.name):
                rev_warnings.append(ScanWarning(snap.path, "snapshot folder is not named after a commit hash"))
            listed: list[Listed] | None = [] if files is not None else None
            keys, nb_files = scan_snapshot(roots, repo_dir, snap.path, blobs, tables, rev_warnings, listed)
            revisions.append((snap.name, snap.path, keys, nb_files, rev_warnings))
            if files is not None and listed is not None:
                files[snap.path] = tuple(listed)
    present = {r[0] for r in revisions}
    for ref, commit, _, as_temporary in lonely:  # llama.cpp's lone refs/<name>.tmp
        if commit in present:
            refs.setdefault(commit, []).append(ref)  # the only record of a ref to a revision that is there
        else:
            partials.append(as_temporary)
    reached: set[str] = set().union(*(r[2] for r in revisions))
    if set_aside:  # a blob set aside that nothing links is gone (the repair deletes it), not an orphan
        for key in set_aside.keys() - reached:
            del blobs[key]
    unknown = _unknown_blobs(repo_dir, blobs, reached, warnings)
    return finish()


def _build_repo(
    roots: Roots,
    repo_dir: str,
    repo_type: str,
    item_id: str,
    warnings: list[ScanWarning],
    blobs: dict[str, Blob],
    partials: list[PartialFile],
    revisions: list[tuple[str, str, set[str], int, list[ScanWarning]]],
    refs: dict[str, list[str]],
) -> RepoScan:
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
                default="main" in rev_refs,  # what from_pretrained() loads without a revision
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
    return RepoScan(item, blobs, partials, [], store_exclusive)


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
