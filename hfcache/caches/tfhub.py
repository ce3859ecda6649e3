"""TensorFlow Hub (``tensorflow_hub``): the modules ``hub.load`` and ``hub.KerasLayer`` download.

Layout reference: ``CACHE-LAYOUTS.md`` section 6, checked against tensorflow/hub
``tensorflow_hub/resolver.py`` (``atomic_download`` and its helpers) and
``compressed_module_resolver.py`` (``_module_dir``)::

    <root>/<sha1(handle)>/                    a module (a SavedModel), complete once renamed into place
    <root>/<sha1>.descriptor.txt              "Module: <handle>\\nDownload Time: ...": written just before
    <root>/<sha1>.lock                        existence lock "<host>.<pid>.<task uid>" while downloading
    <root>/<sha1>.<task uid>.tmp/             that download, being unpacked
    <root>/<sha1>.lock.tmp<hex>, ...descriptor.txt.tmp<hex>   atomic_write_string_to_file's temporaries

An item is a handle without its trailing version (``.../feature_vector/5``: item
``.../feature_vector``, revision ``5``), read from the descriptor without moving its access
time; a module whose descriptor is missing (or unreadable that way) is its own item, named by
its folder. A revision's unit is the module folder, its descriptor and a stale lock.

TF Hub's lock is a file's existence, not a flock: a download whose process still runs on this
host holds it; one from another host (a shared file system) cannot be asked, so its lock, and
anything else of that module, stays while it is younger than the grace period (TF Hub itself
steals a lock after 10 idle minutes, ``LOCK_FILE_TIMEOUT_SEC``). A module folder that exists
but is empty counts as absent to TF Hub (``check_module_exists``), which deletes it before
downloading: it is a leftover, as is a descriptor without its module.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from hfcache.caches._common import (
    FunctionKind,
    Measure,
    ScanState,
    Unit,
    build_item,
    env_path,
    inventory,
    is_dir,
    measure,
    names_in,
    open_and_scan,
    pid_alive,
    read_text_noatime,
)
from hfcache.caches.deletion import TRASH, TrashDeletion, trash_left
from hfcache.caches.versions import parse_version
from hfcache.model import CacheInventory, Item, PartialFile, Revision, ScanWarning
from hfcache.units import describe_age

if TYPE_CHECKING:
    from hfcache.fs.ops import Tree
    from hfcache.plan.decisions import PlanUnit

KIND = "tfhub"
TITLE = "TensorFlow Hub cache"
FOLDER = "tfhub_modules"
_SHA1 = "[0-9a-f]{40}"
_MODULE_RE = re.compile(_SHA1)
_TMP_RE = re.compile(rf"(?P<hash>{_SHA1})\.(?P<task>[0-9a-f]{{32}})\.tmp")
_ATOMIC_RE = re.compile(rf"(?P<hash>{_SHA1})\.(?:lock|descriptor\.txt)\.tmp[0-9a-f]{{32}}")
_VERSIONED_RE = re.compile(r"(?P<id>.+)/(?P<version>\d+)/?")
DESCRIPTOR = ".descriptor.txt"
LOCK = ".lock"


def temp_dir(env: Mapping[str, str]) -> str:
    """``tempfile.gettempdir()`` as a process with ``env`` would find it (POSIX).

    ``TMPDIR``, ``TEMP``, ``TMP`` (empty ones skipped), then ``/tmp``, ``/var/tmp``,
    ``/usr/tmp``: the first folder this process can write to (tempfile tries to create a
    file there; this checks the permission only, and writes nothing), else the current folder.
    """
    candidates = [value for value in (env.get("TMPDIR"), env.get("TEMP"), env.get("TMP")) if value]
    candidates += ["/tmp", "/var/tmp", "/usr/tmp"]
    for folder in candidates:
        folder = os.path.abspath(folder)
        if os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
            return folder
    return os.path.abspath(os.curdir)


def default_root(env: Mapping[str, str]) -> str:
    """``resolver.tfhub_cache_dir(use_temp=True)``: ``$TFHUB_CACHE_DIR``, else ``<temp folder>/tfhub_modules``.

    TF Hub takes the variable as it is (no ``~`` expansion; an empty one counts as unset).
    ``--tfhub_cache_dir`` and ``hub.resolve(..., cache_dir)`` are code, not seen here: pass
    such a folder with ``--cache-dir``.

    >>> default_root({"TFHUB_CACHE_DIR": "/data/tfhub"})
    '/data/tfhub'
    """
    explicit = env_path(env, "TFHUB_CACHE_DIR")
    return os.path.abspath(explicit) if explicit else os.path.join(temp_dir(env), FOLDER)


class LockState(NamedTuple):
    """What a TF Hub lock file says: ``held`` True (its process runs on this host), False (it ended), None (unknown)."""

    held: bool | None
    task: str | None
    owner: str


def lock_state(path: str) -> LockState:
    """Read ``<host>.<pid>.<task uid>`` (``resolver._lock_file_contents``) and ask this host about the pid."""
    text = read_text_noatime(path, 1024)
    parts = text.strip().rsplit(".", 2) if text else []
    if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) <= 0:
        return LockState(None, None, "an unknown process")
    host, pid, task = parts[0], int(parts[1]), parts[2]
    owner = f"pid {pid} on {host}"
    if host != socket.gethostname():
        return LockState(None, task, owner)
    return LockState(pid_alive(pid), task, owner)


def read_handle(path: str) -> str | None:
    """The ``Module:`` line of a descriptor, read without moving its access time (None when that is not possible)."""
    text = read_text_noatime(path, 8192)
    if not text or not text.startswith("Module: "):
        return None
    handle = text[len("Module: ") :].split("\n", 1)[0].strip()
    return handle or None


def split_handle(handle: str) -> tuple[str, str | None]:
    """``(item id, version)``: a trailing ``/<int>`` is the version (section 8).

    >>> split_handle("https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5")
    ('https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector', '5')
    >>> split_handle("gs://bucket/encoder.tar.gz")
    ('gs://bucket/encoder.tar.gz', None)
    """
    match = _VERSIONED_RE.fullmatch(handle)
    if match is None:
        return handle, None
    return match.group("id"), parse_version(match.group("version"), integers=True)


@dataclass
class _Module:
    """Everything of one ``<sha1>`` in the root."""

    module: os.DirEntry[str] | None = None
    descriptor: os.DirEntry[str] | None = None
    lock: os.DirEntry[str] | None = None
    tmps: list[tuple[str, os.DirEntry[str]]] = field(default_factory=list)  # (task uid, folder)
    atomics: list[os.DirEntry[str]] = field(default_factory=list)


def _sort(entries: list[os.DirEntry[str]], state: ScanState) -> dict[str, _Module]:
    found: dict[str, _Module] = defaultdict(_Module)
    for entry in entries:
        name, folder = entry.name, is_dir(entry)
        stem = name[: -len(DESCRIPTOR)] if name.endswith(DESCRIPTOR) else name[: -len(LOCK)] if name.endswith(LOCK) else ""
        tmp, atomic = _TMP_RE.fullmatch(name), _ATOMIC_RE.fullmatch(name)
        if name == TRASH and folder:
            state.warnings.append(trash_left(entry.path))
        elif folder and _MODULE_RE.fullmatch(name):
            found[name].module = entry
        elif not folder and _MODULE_RE.fullmatch(stem) and name.endswith(DESCRIPTOR):
            found[stem].descriptor = entry
        elif not folder and _MODULE_RE.fullmatch(stem):
            found[stem].lock = entry
        elif folder and tmp:
            found[tmp.group("hash")].tmps.append((tmp.group("task"), entry))
        elif not folder and atomic:
            found[atomic.group("hash")].atomics.append(entry)
        else:
            state.unknown(entry.path, "not written by tensorflow_hub")
    return found


class _Scan(ScanState):
    def __init__(self, root: str, warnings: list[ScanWarning]) -> None:
        super().__init__(KIND, root, warnings)
        self.units: dict[str, list[Unit]] = defaultdict(list)

    def module(self, sha1: str, parts: _Module) -> None:
        """One ``<sha1>``: a revision when its folder holds anything; the rest leftovers or downloads."""
        handle = read_handle(parts.descriptor.path) if parts.descriptor else None
        item_id, version = split_handle(handle) if handle else (sha1, None)
        lock = lock_state(parts.lock.path) if parts.lock else None
        present = parts.module is not None and bool(names_in(parts.module.path))
        if present and parts.module is not None:
            self.units[item_id].append(self.revision(sha1, parts, parts.module.path, handle, version, lock))
        self.leftovers(parts, item_id, lock, present)

    def revision(
        self, sha1: str, parts: _Module, folder: str, handle: str | None, version: str | None, lock: LockState | None
    ) -> Unit:
        paths = [folder, *(e.path for e in (parts.descriptor,) if e)]
        if parts.lock and lock is not None and lock.held is not True:
            paths.append(parts.lock.path)  # a stale lock goes with its module (a held one is a partial: see leftovers)
        unit = Unit(version or sha1, tuple(paths), version=version)
        if parts.descriptor is None:
            unit.warnings.append(ScanWarning(folder, "no descriptor: its handle is unknown", False))
        elif handle is None:
            why = "its descriptor cannot be read without moving its access time: its handle is unknown"
            unit.warnings.append(ScanWarning(parts.descriptor.path, why, False))
        elif hashlib.sha1(handle.encode("utf8")).hexdigest() != sha1:
            why = f"the descriptor names {handle}, whose sha1 is not this folder's name"
            unit.warnings.append(ScanWarning(parts.descriptor.path, why, False))
        return unit

    def leftovers(self, parts: _Module, item_id: str, lock: LockState | None, present: bool) -> None:
        """Partial downloads and debris of one ``<sha1>``, each held while its lock is (it ties them together)."""
        held = lock.held if lock else None
        activity = {task: measure(e.path, self.seen, self.warnings) for task, e in parts.tmps}
        debris = [e for e in (parts.module, parts.descriptor) if e is not None and not present]
        for entry in [*debris, *parts.atomics]:
            self.add(entry.path, item_id, "temporary", held)
        if parts.lock is not None and (not present or held):
            # The lock of a download moves when its folder does: its age is the download's.
            ties = activity.get(lock.task or "") if lock else None
            self.add(parts.lock.path, item_id, "temporary", held, ties.mtime if ties else 0.0)
        for task, entry in parts.tmps:
            own = True if held else held if lock and lock.task == task else None
            self.add(entry.path, item_id, "extracting", own, 0.0, activity[task])

    def add(self, path: str, item_id: str, scheme: str, held: bool | None, later: float = 0.0, m: Measure | None = None) -> None:
        got = m if m is not None else measure(path, self.seen, self.warnings)
        self.partials.append(PartialFile(path, item_id, got.size, max(got.mtime, later), scheme, None, held))

    def items_found(self) -> list[Item]:
        out = []
        for item_id, units in sorted(self.units.items()):
            names = [u.revision for u in units]
            for u in units:  # one handle twice (a trailing "/" or not): their folders tell them apart
                if names.count(u.revision) > 1:
                    u.revision = os.path.basename(u.paths[0])
            path = units[0].paths[0] if len(units) == 1 else self.root
            out.append(build_item(KIND, item_id, "module", path, units, self.seen))
        return out


def looks_like_cache(root: str) -> bool:
    """Named ``tfhub_modules``, or holding a descriptor, lock or download of TF Hub's."""
    if os.path.basename(os.path.normpath(root)) == FOLDER:
        return True
    return any(
        (_MODULE_RE.fullmatch(n[: -len(DESCRIPTOR)]) and n.endswith(DESCRIPTOR))
        or (_MODULE_RE.fullmatch(n[: -len(LOCK)]) and n.endswith(LOCK))
        or _TMP_RE.fullmatch(n)
        for n in names_in(root)
    )


def scan(root: str, *, explicit: bool = True) -> CacheInventory:
    """Scan one TF Hub cache folder. Reads descriptors and locks only where their access times stay.

    >>> import tempfile
    >>> scan(tempfile.mkdtemp()).items
    ()
    """
    refusal = "holds no TF Hub module descriptors, locks or downloads"
    return open_and_scan(
        root, _scan_entries, explicit=explicit, kind=KIND, title=TITLE, recognise=looks_like_cache, refusal=refusal
    )


def _scan_entries(real: str, entries: list[os.DirEntry[str]], warnings: list[ScanWarning]) -> CacheInventory:
    state = _Scan(real, warnings)
    for sha1, parts in sorted(_sort(entries, state).items()):
        state.module(sha1, parts)
    items = [*state.items, *state.items_found()]
    return inventory(KIND, TITLE, real, items, warnings, (os.path.join(real, TRASH),), state.partials)


def lock_busy(lock: str, grace: float, now: float) -> str | None:
    """Why the TF Hub lock ``lock`` keeps its module now: held on this host, or moved within ``grace``; else None.

    A lock whose process ended is stale only once the grace period is over too: a process in
    another PID namespace (a container sharing this host's name) looks ended from here.
    """
    try:
        st = os.lstat(lock)
    except OSError:
        return None
    state = lock_state(lock)
    if state.held:
        return f"a download of it is running (lock held: {lock}, by {state.owner})"
    newest = st.st_mtime
    if state.task:
        tmp = f"{lock[: -len(LOCK)]}.{state.task}.tmp"
        if os.path.isdir(tmp):
            newest = max(newest, measure(tmp, set(), []).mtime)
    age = now - newest
    if age < grace:
        return f"its download lock {os.path.basename(lock)} ({state.owner}) moved {describe_age(max(0.0, age))} ago"
    return None


class TfhubDeletion(TrashDeletion):
    """:class:`TrashDeletion`, each module only when no download of it runs and no lock of its is held or recent."""

    grace = 24 * 3600.0  # the run's junk grace, as item_busy (called first, per model) was given it

    def item_busy(
        self, tree: Tree, cache: CacheInventory, path: str, item_id: str | None, grace: float, now: float
    ) -> str | None:
        self.grace = grace
        for partial in cache.partial_files:
            if partial.item_id == item_id and partial.lock_held:
                return f"a download of it is running ({os.path.basename(partial.path)}, its lock held)"
        busy = super().item_busy(tree, cache, path, item_id, grace, now)
        if busy:
            return busy
        for item in cache.items:
            if item.id == item_id and item.path == path:
                for rev in item.revisions:
                    why = lock_busy(rev.path + LOCK, grace, now)
                    if why:
                        return why
        return None

    def revalidate(self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision) -> str | None:
        """Just before the module goes (after the slower checks): a lock taken since the item's check keeps it."""
        lock = rev.path + LOCK
        why = lock_busy(lock, self.grace, time.time()) if tree.lstat(lock) is not None else None
        return why or super().revalidate(tree, cache, item, unit, rev)


TFHUB = FunctionKind(
    KIND,
    TITLE,
    ("module", "unknown"),
    lambda env: [default_root(env)],
    looks_like_cache,
    scan,
    shapes=(
        _SHA1,  # a module folder (or an empty one TF Hub would delete)
        rf"{_SHA1}\.descriptor\.txt",
        rf"{_SHA1}\.lock",  # a stale lock, with its module or alone
        rf"{_SHA1}\.[0-9a-f]{{32}}\.tmp",  # a download left half-way
        rf"{_SHA1}\.(?:lock|descriptor\.txt)\.tmp[0-9a-f]{{32}}",  # atomic_write_string_to_file's temporary
    ),
    deletion=TfhubDeletion(),
)
