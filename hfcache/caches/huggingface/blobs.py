"""The hub's blobs on their way out (step 4 of :mod:`hfcache.caches.huggingface.delete`).

A blob no remaining revision uses is renamed into hfcache's trash under the hub's own
per-blob download lock (:func:`set_aside`); after a settling time the repo's links are
read once more and a blob a racing download linked meanwhile goes back, the others are
unlinked (:func:`finish_blobs`). Shared-store payloads go by the hub's own garbage
collection (:func:`sweep`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import ExitStack, contextmanager

from hfcache.caches.deletion import Outcomes
from hfcache.caches.huggingface.trash import (
    aside_prefix,
    linked_blobs,
    listdir,
    put_back_linked,
    restore_blob,
    trash_path,
)
from hfcache.fs.ops import Tree

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# How long to wait for the hub's lock of one blob before leaving that blob for another run.
BLOB_LOCK_WAIT = 2.0
# At most this many blob locks held at once (each an open descriptor) while a repo's links are read.
LOCKS_AT_ONCE = 256

# The hub's deletion steps log under one name, whichever module takes them.
log = logging.getLogger("hfcache.caches.huggingface.delete")


def set_aside(tree: Tree, repo: str, owner: dict[str, str], out: Outcomes, snapshots: set[str] | None = None) -> dict[str, str]:
    """Rename each blob into the trash under its download lock; those linked go back.

    The links are read at once unless ``snapshots`` (the revisions the plan leaves) are
    exactly the repo's snapshots now: then they are what the plan's blob counts were made
    from, and a link a download adds meanwhile is seen by the reading after the settling
    time (:func:`finish_blobs`), as a link added just after this reading would be.
    """
    if not owner:
        return {}
    trash = trash_path(tree)
    try:
        tree.makedirs(trash)
    except OSError as e:
        out[next(iter(owner.values()))].add(0, f"{trash}: {e.strerror or e}")
        return {}
    aside: dict[str, str] = {}
    locks = _lock_names(tree, repo)
    blobs, aside_as = os.path.join(repo, "blobs", ""), aside_prefix(tree, repo)  # (+ a name: a path)
    for name, unit_path in owner.items():
        try:
            with _blob_lock(tree, repo, name, locks):
                tree.rename(blobs + name, aside_as + name)
        except FileNotFoundError:
            continue
        except TimeoutError:
            continue  # a download holds it: the blob stays, for a later run
        except OSError as e:
            out[unit_path].add(0, f"{os.path.join(repo, 'blobs', name)}: {e.strerror or e}")
            continue
        aside[name] = unit_path
    if aside and (snapshots is None or set(listdir(tree, os.path.join(repo, "snapshots"))) != snapshots):
        put_back_linked(tree, repo, aside)
    return aside


def finish_blobs(tree: Tree, repo: str, aside: dict[str, str], out: Outcomes, uncounted: AbstractSet[str] = frozenset()) -> None:
    """After the settling time: links read again; a linked blob goes back, the rest are unlinked."""
    if aside:
        tree.forget(repo)  # the last reading of the links: every folder looked up afresh
        names = list(aside)
        for start in range(0, len(names), LOCKS_AT_ONCE):
            chunk = {n: aside[n] for n in names[start : start + LOCKS_AT_ONCE]}
            _finish_some(tree, repo, chunk, out, uncounted)


def _finish_some(tree: Tree, repo: str, aside: dict[str, str], out: Outcomes, uncounted: AbstractSet[str]) -> None:
    """Under the download locks of all these blobs at once, read the links once: restore or unlink each."""
    with ExitStack() as held:
        locked = {}
        locks = _lock_names(tree, repo)  # listed again: a download may have started since
        for name, unit_path in aside.items():
            try:
                held.enter_context(_blob_lock(tree, repo, name, locks))
                locked[name] = unit_path
            except TimeoutError:
                restore_blob(tree, repo, name)  # a download holds its lock: it stays
            except OSError as e:
                restore_blob(tree, repo, name)
                out[unit_path].add(0, f"{os.path.join(repo, 'blobs', name)}: {e.strerror or e}")
        linked = linked_blobs(tree, repo) if locked else set()
        blobs, aside_as = os.path.join(repo, "blobs", ""), aside_prefix(tree, repo)
        for name, unit_path in locked.items():
            if name in linked:
                restore_blob(tree, repo, name)
                continue
            tree.unlink_later(aside_as + name, out[unit_path].removed(blobs + name, log), count=name not in uncounted)


def _lock_names(tree: Tree, repo: str) -> set[str]:
    """The names in the repo's folder of download locks (``.locks/<repo folder>/``), listed once for many blobs."""
    return set(listdir(tree, os.path.join(tree.path, ".locks", os.path.basename(repo))))


@contextmanager
def _blob_lock(tree: Tree, repo: str, name: str, listed: set[str]) -> Iterator[None]:
    """Hold huggingface_hub's download lock of one blob (``.locks/<repo folder>/<name>.lock``).

    ``listed``: the lock folder's names, read just before (:func:`_lock_names`). A lock
    file made after that reading belongs to a download that started after it: that one
    is seen by the reading of the links that follows, as when the file is missing.
    """
    if fcntl is None or name + ".lock" not in listed:
        yield
        return
    folder = os.path.join(tree.path, ".locks", os.path.basename(repo))
    try:
        with tree.parent(os.path.join(folder, name + ".lock")) as (dfd, lname):
            fd = os.open(lname, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)  # flock needs no more
    except FileNotFoundError:
        # No download of this blob ever took its lock here (the hub keeps lock files once
        # made): nothing to wait for. One starting now finds the blob set aside and fetches
        # it again, or links it and is seen when the links are read after the settling time.
        yield
        return
    try:
        deadline = time.monotonic() + BLOB_LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(name) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _hub_sweep() -> Callable[..., int] | None:
    """The hub's own garbage collection of its shared store (huggingface_hub >= 1.32), None before.

    ``(store_path: Path, *, cache_dir: str | Path) -> bytes freed``. Imported when a payload
    goes, not with this module: it brings the hub's utilities and filelock, about 20 ms of
    the start-up of every command, most of which delete nothing.
    """
    try:
        from huggingface_hub.utils._shared_blobs import sweep_shared_blob
    except ImportError:  # pragma: no cover - older hub: payloads are left behind (leaked, never lost)
        return None
    return sweep_shared_blob


def sweep(tree: Tree, store: str) -> tuple[int, str | None]:
    """A shared-store payload, by huggingface_hub's own garbage collection (under the hub's lock)."""
    sweep_shared_blob = _hub_sweep()
    if sweep_shared_blob is None:  # pragma: no cover - older hub
        return 0, None
    try:
        if tree.lstat(store) is None:  # reached strictly: no symlink or mount on the way
            return 0, None
        from pathlib import Path

        return sweep_shared_blob(Path(store), cache_dir=tree.path), None
    except OSError as e:
        return 0, f"{store}: {e.strerror or e}"
