"""The Hugging Face hub cache (``huggingface_hub``; used by transformers, diffusers, datasets, ...).

Layout reference: ``CACHE-LAYOUTS.md`` sections 1 and 2. In short::

    <root>/models--org--name/refs/<ref>              one 40-hex commit per file, nested (refs/pr/1)
    <root>/models--org--name/snapshots/<commit>/...  symlinks ../../blobs/<etag> (or regular files)
    <root>/models--org--name/blobs/<etag>            the data (or a symlink into the shared store)
    <root>/blobs/<xx>/<xet hash>                     hub >= 1.32 cross-repo shared store (marked)
    <root>/.locks/<repo folder>/<etag>.lock          per-blob download locks (flock)

Other programs write the same layout (CACHE-LAYOUTS.md 2.12), each with its own temporary
names in ``blobs/``: llama.cpp ``<oid>.downloadInProgress`` (no lock) and ``refs/<name>.tmp``,
the Rust hf-hub crate ``<etag>.part`` and ``<etag>.lock``; llama.cpp's ``$LLAMA_CACHE`` is one
more root of this kind. Those names are partial downloads and locks, never orphan blobs; a
name no known writer uses is reported and left alone.

The scanner is our own rather than ``huggingface_hub.scan_cache_dir``: it lists each folder
once with ``os.scandir``, stats each blob once, reads links with ``os.readlink`` (the first
hop only, never ``resolve()``), never opens a blob (that would move its atime) and never
writes. Its numbers equal ``scan_cache_dir``'s on every cache that function accepts; where
``scan_cache_dir`` drops a whole repo as corrupted, we keep the repo, count what can be
counted, and attach warnings that stop anything from deleting through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hfcache import parallel
from hfcache.caches._common import FILES_TO_IGNORE, TEMPFILE_RE
from hfcache.caches.huggingface.location import (
    KIND,
    REPO_DIR_RE,
    REPO_TYPES,
    ROOT_ENTRIES_TO_SKIP,
    SHARED_STORE_DIR,
    TITLE,
    check_root,
)
from hfcache.caches.huggingface.reclaim import add_store_reclaim, settle
from hfcache.caches.huggingface.store import Roots, scan_store
from hfcache.caches.huggingface.trash import read_trash
from hfcache.caches.huggingface.walk import RepoScan, dir_times, scan_repo
from hfcache.errors import CacheUnreadable
from hfcache.model import (
    BlobLedger,
    CacheInventory,
    FileListing,
    Item,
    Listed,
    OrphanFile,
    PartialFile,
    ScanWarning,
    SharedPayload,
)

# ---------------------------------------------------------------------------------------------
# Where the cache is


# ---------------------------------------------------------------------------------------------
# Scanning


def scan(
    root: str,
    *,
    explicit: bool = True,
    jobs: int = 1,
    ledger: bool = True,
    listing: bool = False,
    skip: Callable[[str, str, str], bool] | None = None,
) -> CacheInventory:
    """Scan one hub cache root into a :class:`CacheInventory`. Never writes, never opens a blob.

    Raises the errors of :func:`check_root`. Everything odd inside the cache becomes a
    :class:`ScanWarning` and the scan goes on. ``jobs`` > 1 scans up to that many repos at a
    time (:func:`hfcache.parallel.ordered_map`: forked worker processes on Linux, else threads);
    the result is the same for any ``jobs``. ``ledger=False`` leaves out the
    :class:`BlobLedger` (each blob's size and payload), which only planning needs: a scan that
    is only shown saves its memory and, with workers, the time to send it back. ``listing``
    adds the :class:`FileListing` a verify uses instead of walking every snapshot again.
    ``skip(kind, root, repo folder)`` True leaves that repo out of the inventory, as if it were
    not there (a verify counts it from its memo, :mod:`hfcache.verify.memo`); a repo with an
    interrupted prune's trash is never left out.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    real = check_root(root, explicit=explicit)
    if real is None:
        return CacheInventory(kind=KIND, title=TITLE, root=os.path.abspath(root), exists=False, has_refs=True)
    roots = Roots(real=real, given=os.path.abspath(root), store=os.path.join(real, SHARED_STORE_DIR))
    cache_warnings: list[ScanWarning] = []
    try:
        entries = sorted(os.scandir(real), key=lambda e: e.name)
    except OSError as e:  # pragma: no cover - check_root listed it a moment ago
        raise CacheUnreadable(f"cannot read cache directory {real}: {e.strerror or e}", path=real) from e

    # The shared store first: repo blobs that link into it take their sizes and times from it.
    store = next((e for e in entries if e.name == SHARED_STORE_DIR and e.is_dir(follow_symlinks=False)), None)
    if store is not None:
        scan_store(roots, cache_warnings)

    locks = next((e for e in entries if e.name == ".locks"), None)
    if locks is not None and locks.is_dir(follow_symlinks=False):
        read_trash(roots, cache_warnings)

    partials: list[PartialFile] = []
    repos: list[tuple[os.DirEntry[str], str, str]] = []
    left_out: set[str] = set()
    for entry in entries:
        name = entry.name
        if name in FILES_TO_IGNORE or name in ROOT_ENTRIES_TO_SKIP or entry is store:
            continue
        match = REPO_DIR_RE.fullmatch(name)
        if match:
            if skip is not None and name not in roots.trash and skip(KIND, real, entry.path):
                left_out.add(name)
                continue
            repos.append((entry, REPO_TYPES[match.group(1)], match.group(2).replace("--", "/")))
        elif TEMPFILE_RE.fullmatch(name) and entry.is_dir(follow_symlinks=False):
            # huggingface_hub's symlink-support probe (SoftTemporaryDirectory); normally removed at once.
            partials.append(PartialFile(entry.path, None, 0, dir_times(entry.path)[1], "temporary"))
        else:
            cache_warnings.append(ScanWarning(entry.path, "not a repo folder, left alone", blocks_deletion=False))

    def one_repo(repo: tuple[os.DirEntry[str], str, str]) -> RepoScan:
        return settle(scan_repo(roots, *repo, listing=listing), ledger)

    for folder in sorted(roots.trash.keys() - {entry.name for entry, _, _ in repos} - left_out):
        for trash_entry, _ in roots.trash[folder]:
            message = "an interrupted prune was removing this from a repo that is gone: the next prune finishes it"
            cache_warnings.append(ScanWarning(trash_entry.path, message, blocks_deletion=False))
    scans = parallel.ordered_map(one_repo, repos, jobs, label=f"scanning {root}")
    items = add_store_reclaim(scans, roots.payloads)

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
        has_refs=True,
        listing=_listing(scans, items) if listing else None,
    )


def _listing(scans: list[RepoScan], items: list[Item]) -> FileListing:
    """The scan's :class:`FileListing`: every repo's revisions' files and blob identities, as walked."""
    files: dict[str, tuple[Listed, ...]] = {}
    for scan_ in scans:
        files.update(scan_.files or {})
    return FileListing(files, {item.path: scan_.identities or {} for scan_, item in zip(scans, items, strict=True)})
