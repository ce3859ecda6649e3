"""The inventory: frozen records a scanner produces and everything later reads.

Raw numbers only (bytes as ``int``, times as epoch seconds ``float``); human text is made
in :mod:`hfcache.output` (``render.py``, ``words.py``). Paths are absolute strings: the scanner never builds ``Path`` objects in
its hot loop, and strings are what the JSON output carries anyway.

Example, for a cache with one model and two revisions::

    Inventory(caches=(CacheInventory(kind="huggingface", root="/home/me/.cache/huggingface/hub",
        size_bytes=5013, items=(Item(id="org/model", type="model", revisions=(
            Revision(revision="73122f05...", refs=("v1.0",), size_bytes=5002, reclaimable_bytes=2, ...),
            Revision(revision="8067c5ea...", refs=("main",), size_bytes=5007, reclaimable_bytes=7, ...)),
        ...),), ...),), scanned_at=1795000000.0)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class ScanWarning:
    """Something odd found while scanning, with the path it concerns.

    ``blocks_deletion`` marks what makes the enclosing item untrustworthy: nothing later
    deletes through an item (or revision) that carries a blocking warning.

    >>> str(ScanWarning("/c/models--a/snapshots/x/f", "broken symlink"))
    'broken symlink: /c/models--a/snapshots/x/f'
    """

    path: str
    message: str
    blocks_deletion: bool = True

    def __str__(self) -> str:
        return f"{self.message}: {self.path}"


@dataclass(frozen=True)
class Revision:
    """One cached revision: for the hub, one ``snapshots/<commit>`` folder.

    ``size_bytes`` counts each blob the revision reaches once (huggingface_hub's
    ``CachedRevisionInfo.size_on_disk``). ``reclaimable_bytes`` is what deleting this
    revision alone would free: blobs no other revision of the item uses, plus shared-store
    payloads nothing else in the cache references. ``blobs`` holds the keys of the blobs
    it reaches, relative to the item's folder (``blobs/<etag>``, or the snapshot file
    itself in no-symlink mode). ``default`` marks what the owning library loads when asked
    for no revision (the hub's ``main``, a torch hub repo's ``main``/``master`` branch): its
    scanner knows, and a keep rule always keeps it.

    >>> r = Revision("a" * 40, "/c/models--x/snapshots/" + "a" * 40, refs=("main",))
    >>> r.detached
    False
    """

    revision: str
    path: str
    refs: tuple[str, ...] = ()
    size_bytes: int = 0
    reclaimable_bytes: int = 0
    last_accessed: float = 0.0
    last_modified: float = 0.0
    nb_files: int = 0
    blobs: frozenset[str] = frozenset()
    warnings: tuple[ScanWarning, ...] = ()
    version: str | None = None
    paths: tuple[str, ...] = ()
    default: bool = False

    @property
    def unit_paths(self) -> tuple[str, ...]:
        """The files and folders that make up this revision's deletion unit (``path`` unless told otherwise)."""
        return self.paths or (self.path,)

    @property
    def detached(self) -> bool:
        """No ref points to this revision. Pinned-by-commit revisions are detached too: detached is not unused."""
        return not self.refs


class RevisionFile(NamedTuple):
    """One file of a revision as its library names it (``name``, ``/``-separated), and where its bytes are.

    ``path`` is the revision's own entry (for the hub, the snapshot link); ``key`` is what
    holds the bytes, relative to the item's folder, as :attr:`Revision.blobs` lists it
    (``blobs/<etag>``, or the entry itself when it is a copy); None when the entry reaches
    no blob (a dangling link).
    """

    name: str
    path: str
    key: str | None
    size_bytes: int
    last_accessed: float = 0.0


@dataclass(frozen=True)
class Item:
    """One model (or dataset, space, kernel) of a cache: for the hub, one repo folder.

    ``type`` says what it is (``model``, ``dataset``, ``checkpoint``, ``hub-repo``, ...;
    ``unknown`` for what a scanner could not classify: shown and counted, never deletable).
    ``path`` is where the item lives. Items whose revisions are loose files in a shared
    folder (torch checkpoints, Keras files) have that folder as ``path`` and list their
    files in ``paths``: delete ``unit_paths``, never ``path``, for such items.

    ``size_bytes`` counts each blob any revision reaches once (huggingface_hub's
    ``CachedRepoInfo.size_on_disk``); orphan blobs and partial downloads are reported
    separately on the cache. ``deletable`` is false as soon as anything odd was found in
    the item: later commands never delete through it.
    """

    kind: str
    id: str
    type: str
    path: str
    size_bytes: int = 0
    last_accessed: float = 0.0
    last_modified: float = 0.0
    revisions: tuple[Revision, ...] = ()
    nb_blobs: int = 0
    warnings: tuple[ScanWarning, ...] = ()
    paths: tuple[str, ...] = ()

    def damage_only_in(self, paths: Collection[str]) -> bool:
        """Whether everything that keeps this item from being deleted was found in ``paths`` (the files a plan removes).

        A damaged model is never deleted through; but taking out the very files that are its
        damage (a link to a blob that is gone) repairs it, and a file unit re-reads the disk
        for everything else it touches.
        """
        everything = (*self.warnings, *(w for r in self.revisions for w in r.warnings))
        return all(w.path in paths for w in everything if w.blocks_deletion)

    @property
    def unit_paths(self) -> tuple[str, ...]:
        """What deleting the whole item removes: ``path``, or every revision's unit when they share a folder."""
        return self.paths or (self.path,)

    @property
    def deletable(self) -> bool:
        return not any(w.blocks_deletion for w in self.warnings) and not any(
            w.blocks_deletion for r in self.revisions for w in r.warnings
        )

    @property
    def refs(self) -> dict[str, Revision]:
        """Ref name -> revision it points to."""
        return {ref: rev for rev in self.revisions for ref in rev.refs}


@dataclass(frozen=True)
class PartialFile:
    """A download that did not finish (or a temporary file an interrupted write left).

    ``scheme`` says which: ``resumable`` (hub <= 1.17 ``<etag>.incomplete``, resumed by
    the next download; so are llama.cpp's ``<oid>.downloadInProgress`` and the Rust hf-hub
    crate's ``<etag>.part``), ``per-process`` (hub >= 1.18 ``<etag>.<8 hex>.incomplete``,
    never resumed), ``temporary`` (``tmp_<uuid>``, ``.<etag>.<hex>.new``, a ref's atomic
    write ``refs/<name>[.<8 hex>].tmp``, torch's ``*.partial`` and the like),
    ``extracting`` (an archive or folder left half-way through unpacking) or ``unmarked`` (a
    folder its library has not marked complete: kagglehub). ``lock_held`` is True/False
    when the download lock could be tested, None when there is no lock file (llama.cpp takes
    none: only the file's age and the processes holding it tell a live download) or the
    test was impossible.
    """

    path: str
    item_id: str | None
    size_bytes: int
    last_modified: float
    scheme: str
    lock_path: str | None = None
    lock_held: bool | None = None
    # Every lock file a writer of it may take (several programs write one layout, each locking its own
    # place): any of them held keeps it; ``lock_path`` is the one shown.
    other_locks: tuple[str, ...] = ()

    @property
    def locks(self) -> tuple[str, ...]:
        return (self.lock_path, *self.other_locks) if self.lock_path else self.other_locks


@dataclass(frozen=True)
class OrphanFile:
    """A blob no revision reaches. ``shared_payload`` is set when it links into the shared store.

    In a hub cache only a file named as the hub names blobs (an ETag: 40 or 64 hex, a
    mirror's md5) is one; another name no snapshot links is reported as a warning and never
    deleted. ``item_id`` is None for a blob of a store shared by every item (Ollama's ``blobs/``).
    """

    path: str
    item_id: str | None
    size_bytes: int
    last_accessed: float
    last_modified: float
    shared_payload: str | None = None


@dataclass(frozen=True)
class SharedPayload:
    """A payload of the hub's cross-repo shared store that no repo blob links to."""

    path: str
    size_bytes: int
    last_accessed: float
    last_modified: float
    has_manifest: bool


@dataclass(frozen=True)
class Leftover:
    """What a removed hub revision leaves in its repo: ``.no_exist/<commit>/`` or ``trees/<commit>.json``.

    Listed only for commits that no snapshot holds and no ref points to: a ref to a commit
    known only from ``.no_exist/`` is the hub's normal state after a probe, not a leftover.
    ``commit`` is None for a whole repo folder with no revision, ref, blob or partial
    download left in it (what an interrupted removal of the repo leaves), or an emptied
    folder of Ollama's ``manifests/`` (``item_id`` None above a model's folder).
    """

    path: str
    item_id: str | None
    commit: str | None
    size_bytes: int
    last_modified: float


@dataclass(frozen=True)
class BlobLedger:
    """Which bytes each hub blob stands for, so a plan can count what a set of deletions frees.

    ``blobs`` maps an item's path to its blob keys (those of :attr:`Revision.blobs`, plus
    orphan blobs) and, for each, its size and the shared-store payload it links to (or
    None). ``payloads`` maps each payload of the shared store to its size. Caches without
    shared data (every kind but the hub) have no ledger: their revisions free their own size.
    """

    blobs: Mapping[str, Mapping[str, tuple[int, str | None]]]
    payloads: Mapping[str, int]


Identity = tuple[int, int, int, int, int]  # a file's (dev, ino, size, mtime_ns, ctime_ns): a write moves the mtime or ctime
Listed = tuple[str, list[str], list[str | None]]  # a folder of a revision (FileListing): its name in it, its files, their blobs


@dataclass(frozen=True)
class FileListing:
    """What a hub scan read of each revision's files, kept for ``hfcache verify`` (``scan(..., listing=True)``).

    So that a verify neither walks and reads every snapshot link again nor stats every blob
    before deciding what to read. ``files`` maps a revision's path to its folders as the scan
    walked them, each ``(its name in the revision ("" or ending in "/"), its files' names,
    what each holds)``: for a link, the key of the blob it names in the item's ``blobs/``
    (``blobs/<name>``, whether or not it is there), "" when it leads elsewhere; None for a
    copy made without symlinks (two columns, not a record per file: 100,000 files cost two
    appends each). ``blobs`` maps an item's path to the stat identity of each of its blobs
    that is a regular file, by blob name, as the scan saw it (a blob that is a link into the
    shared store, or is gone, has none). A revision the scan could not walk has no entry:
    its files are read from the disk.
    """

    files: Mapping[str, tuple[Listed, ...]]
    blobs: Mapping[str, Mapping[str, Identity]]


@dataclass(frozen=True)
class CacheInventory:
    """Everything found under one cache root.

    ``size_bytes`` is the cache total: every blob a revision reaches, with each payload of
    the shared store counted once (huggingface_hub's ``HFCacheInfo.size_on_disk``).
    ``exists`` is False for a default root that has not been created yet. Kinds other than
    the hub share nothing between items, so their total is the sum of their items. Partial
    downloads are listed apart and are not in the total. ``protected`` lists paths the
    owning library needs (the root, ``checkpoints/``, ``keras.json``, ``trusted_list``):
    nothing may ever delete them. ``ledger`` (hub only) says which blob and payload bytes
    each revision stands for. ``has_refs``: its revisions are named by refs (branches, tags,
    the hub's way); elsewhere "detached" means nothing and no ref can point anywhere.
    ``listing`` (hub only, when asked for) is what the scan read of each revision's files.
    """

    kind: str
    root: str
    exists: bool = True
    size_bytes: int = 0
    items: tuple[Item, ...] = ()
    partial_files: tuple[PartialFile, ...] = ()
    orphan_files: tuple[OrphanFile, ...] = ()
    unreferenced_payloads: tuple[SharedPayload, ...] = ()
    warnings: tuple[ScanWarning, ...] = ()
    shared_store: bool = False
    title: str = ""
    protected: tuple[str, ...] = ()
    leftovers: tuple[Leftover, ...] = ()
    ledger: BlobLedger | None = field(default=None, repr=False, compare=False)
    has_refs: bool = False
    listing: FileListing | None = field(default=None, repr=False, compare=False)

    @property
    def all_warnings(self) -> list[ScanWarning]:
        """Cache-level warnings, then each item's and each revision's, in item order."""
        out = list(self.warnings)
        for item in self.items:
            out.extend(item.warnings)
            for rev in item.revisions:
                out.extend(rev.warnings)
        return out


@dataclass(frozen=True)
class Inventory:
    """The result of a scan: one :class:`CacheInventory` per root, and when it was taken."""

    caches: tuple[CacheInventory, ...] = ()
    scanned_at: float = 0.0


class Disk(NamedTuple):
    """The file system holding a cache root: an identity (``st_dev``), its size and free bytes."""

    device: int
    total: int
    free: int


class Use(NamedTuple):
    """What the usage history (``hfcache.history``) knows of one revision's use.

    ``last``: the latest use recorded (0.0 when none); ``source`` how it was seen (``atime``:
    its access time moved; ``process``: a process held one of its files; ``watched``: no use
    seen since the history began watching it, on a mount whose access times never move);
    ``program`` the programs then holding it; ``days`` the UTC day numbers it was used on,
    oldest first (those from the start the reader asked for); ``first_seen`` when a run first
    saw the revision: before that, the history knows nothing of it; ``unwatched`` the days
    (from that start) on which no run looked at its cache: a use then may have gone unseen
    (a run sees only the latest access time).
    """

    last: float
    source: str | None
    program: str | None
    days: tuple[int, ...]
    first_seen: float
    unwatched: tuple[int, ...] = ()
