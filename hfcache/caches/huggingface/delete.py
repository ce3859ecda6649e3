"""Deleting from a huggingface_hub cache: the hub's order, made crash-safe and race-safe.

The hub itself (``DeleteCacheStrategy.execute``) unlinks refs, then snapshots, then blobs,
by absolute paths. hfcache keeps that order but makes every step recoverable, so that a
run killed at any instant leaves a cache that loads, and a next plan identical to what an
uninterrupted run would have kept. What is on its way out waits in one private folder of
the cache, ``.locks/hfcache-trash/`` (beside hfcache's prune lock; huggingface_hub's
``scan_cache_dir`` skips ``.locks/``, so it never sees it), flat, each name saying which repo
it came from (see :func:`trash_name`). The folder is made once and stays, as the prune lock
does: setting something aside costs one rename, and no folder is made or removed per revision.

1. **Re-validated on disk** (:meth:`HubDeletion.revalidate`): the refs naming the revision
   must be the plan's, and unless the plan removes the repo, another snapshot must remain.
2. **Refs set aside**: each ref naming commit ``C`` is renamed into the trash and read again
   there; one that no longer names ``C`` (a download moved it) goes back.
3. **Snapshot set aside**: ``snapshots/C`` is renamed into the trash and removed there, then
   ``.no_exist/C`` and ``trees/C.json``. If the snapshot cannot be set aside or removed, it
   and its refs are put back: the revision stays loadable by tag.
4. **Blobs set aside, then checked**: a blob no remaining revision uses is renamed, under the
   hub's own per-blob download lock, into the trash; the repo's snapshot links
   are read again and a linked blob goes back. After a settling time (longer than the poll
   interval of the hub's lock), the links are read once more: a blob a racing download linked
   meanwhile goes back (its link, relative and by name, heals); the others are unlinked.
5. The repo folder goes when its last revision went and no new snapshot or download appeared,
   ``snapshots/`` last; then the shared-store payloads, by the hub's own ``sweep_shared_blob``.

:meth:`HubDeletion.recover` (run under the prune lock before anything is deleted) reads the
trash: refs of a snapshot that is still there go back (unless a newer ref took their place),
a snapshot set aside is finished, a blob set aside goes back if linked, else goes. The scan
reads the trash the same way (:mod:`hfcache.caches.huggingface.scan`), so a plan made before the
repair already sees the refs where they belong.

Left open (documented in the README): huggingface_hub checks that a blob exists *before*
taking its lock; a download that checked before step 4 and is held up for longer than the
settling time can still link a blob just removed.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat as stat_mod
import time
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from hfcache.caches.deletion import Finisher, Going, Outcomes, young
from hfcache.fs.locks import is_lock_held
from hfcache.fs.ops import Tree, UnsafePath
from hfcache.model import CacheInventory, Item, Leftover, OrphanFile, Revision

if TYPE_CHECKING:
    from hfcache.plan.decisions import PlanUnit

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# (store_path: Path, *, cache_dir: str | Path) -> bytes freed; None before huggingface_hub 1.32
sweep_shared_blob: Callable[..., int] | None
try:  # the hub's own garbage collection of its shared store (huggingface_hub >= 1.32)
    from huggingface_hub.utils._shared_blobs import sweep_shared_blob
except ImportError:  # pragma: no cover - older hub: payloads are left behind (leaked, never lost)
    sweep_shared_blob = None

TRASH = os.path.join(".locks", "hfcache-trash")  # relative to the cache root
# In the trash, one level, each name starting with its repo folder (quoted) and "+":
#   <repo>+<commit>                   a snapshot set aside
#   <repo>+<commit>.ref.<quoted ref>  a ref set aside (refs/pr/1 is "pr%2F1")
#   <repo>+blob.<name>                a blob set aside while its links are checked
REPO_MARK = "+"
REF_MARK = ".ref."
BLOB_MARK = "blob."


def trash_name(repo: str, rest: str) -> str:
    """The trash entry of ``rest`` (``<commit>``, ``<commit>.ref.<ref>``, ``blob.<name>``) of the repo at ``repo``."""
    return quote(os.path.basename(repo), safe="-_.") + REPO_MARK + rest


def parse_trash_name(name: str) -> tuple[str, str] | None:
    """``(repo folder name, rest)`` of a trash entry, or None for a name hfcache never makes."""
    quoted, mark, rest = name.partition(REPO_MARK)
    return (unquote(quoted), rest) if mark and quoted and rest else None


def ref_entry(commit: str, ref: str) -> str:
    return f"{commit}{REF_MARK}{quote(ref, safe='')}"


def parse_ref_entry(name: str) -> tuple[str, str] | None:
    """``(commit, ref)`` of a ref set aside (the part after the repo), or None for another entry."""
    commit, mark, quoted = name.partition(REF_MARK)
    return (commit, unquote(quoted)) if mark and len(commit) == 40 and quoted else None


# How long to wait for the hub's lock of one blob before leaving that blob for another run.
BLOB_LOCK_WAIT = 2.0
# `refs/main.1a2b3c4d.tmp`: an interrupted atomic write of a ref, not a ref (the scan skips it too).
REF_TMP_RE = re.compile(r"\.[0-9a-f]{8}\.tmp$")
# At most this many blob locks held at once (each an open descriptor) while a repo's links are read.
LOCKS_AT_ONCE = 256
_COMMIT = re.compile(r"[0-9a-f]{40}")

log = logging.getLogger(__name__)


def _commit(text: str | None) -> str | None:
    return text.strip() if text is not None else None


class HubDeletion:
    """The hub kind's deletion steps (see the module docstring)."""

    follow_links = True

    # -- what may be touched -------------------------------------------------------------------

    def targets(self, cache: CacheInventory, item: Item, going: Going) -> list[str]:
        paths = []
        for _unit, rev in going:
            paths += [os.path.join(item.path, "refs", ref) for ref in rev.refs]
            paths.append(rev.path)
        paths += [os.path.join(item.path, key) for _, rev in going for key in sorted(rev.blobs) if key.startswith("blobs/")]
        going_revs = {rev.revision for _, rev in going}
        if all(r.revision in going_revs for r in item.revisions):
            paths.append(item.path)
        return paths

    def junk_targets(self, cache: CacheInventory, unit: PlanUnit, found: object) -> list[str]:
        return [unit.path]

    # -- reading the repo as it is now ---------------------------------------------------------

    def refs_now(self, tree: Tree, repo: str) -> dict[str, str]:
        """Every ref of the repo: name (``main``, ``pr/1``) -> the commit it holds, read strictly."""
        refs: dict[str, str] = {}
        base = os.path.join(repo, "refs")
        stack = [""]
        while stack:
            prefix = stack.pop()
            folder = os.path.join(base, prefix.rstrip("/")) if prefix else base
            try:
                entries = tree.entries(folder)
            except (UnsafePath, NotADirectoryError):
                continue
            for name, is_dir in entries:
                if is_dir:
                    stack.append(f"{prefix}{name}/" if prefix else f"{name}/")
                elif not REF_TMP_RE.search(name):
                    text = tree.read_text(os.path.join(folder, name), 256)  # (None for a link or what is not a file)
                    if text is not None:
                        refs[f"{prefix}{name}"] = _commit(text) or ""
        return refs

    def linked_blobs(self, tree: Tree, repo: str) -> set[str]:
        """Names of the blobs some snapshot link of the repo points to now (``blobs/<name>``)."""
        names: set[str] = set()
        for target in tree.links(os.path.join(repo, "snapshots")):
            parts = target.replace("\\", "/").split("/")
            if len(parts) >= 2 and parts[-2] == "blobs":
                names.add(parts[-1])
        return names

    # -- just before a unit goes ---------------------------------------------------------------

    def item_busy(
        self, tree: Tree, cache: CacheInventory, path: str, item_id: str | None, grace: float, now: float
    ) -> str | None:
        """A download running into the repo: a lock of it held, or a partial blob younger than ``grace``."""
        locks = os.path.join(tree.path, ".locks", os.path.basename(path))
        for name in _listdir(tree, locks):
            if name.endswith(".lock") and is_lock_held(os.path.join(locks, name)):
                return f"a download into this repo is running (lock held: {name})"
        blobs = os.path.join(path, "blobs")
        for name in _listdir(tree, blobs):
            if name.endswith(".incomplete"):
                age = young(tree, os.path.join(blobs, name), now, grace)
                if age:
                    return f"a download into this repo may be running ({name} modified {age} ago)"
        return None

    def revalidate(self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision) -> str | None:
        tree.forget(item.path)  # the disk as it is now, every folder looked up afresh
        snapshots = _listdir(tree, os.path.join(item.path, "snapshots"))
        if rev.revision not in snapshots:
            return "no longer in the cache"
        naming = sorted(name for name, commit in self.refs_now(tree, item.path).items() if commit == rev.revision)
        if naming != sorted(unit.refs):
            return (
                f"its refs changed since the plan (now: {', '.join(naming) or 'none'}; planned: {', '.join(unit.refs) or 'none'})"
            )
        if not unit.item_removed:
            others = [n for n in snapshots if n != rev.revision]
            if not others:
                return "it is now the model's last revision (the others are gone since the plan)"
        return None

    # -- a revision ----------------------------------------------------------------------------

    def remove_revision(
        self, tree: Tree, cache: CacheInventory, item: Item, unit: PlanUnit, rev: Revision
    ) -> tuple[int, str | None]:
        repo, commit = item.path, rev.revision
        trash = _trash(tree)
        held = os.path.join(trash, trash_name(repo, commit))
        moved: list[str] = []
        try:
            tree.makedirs(trash)
            for ref in sorted(unit.refs):
                src, dst = os.path.join(repo, "refs", ref), os.path.join(trash, trash_name(repo, ref_entry(commit, ref)))
                tree.rename(src, dst)
                moved.append(dst)
                if _commit(tree.read_text(dst, 256)) != commit:
                    raise OSError(errno.EAGAIN, "a ref moved while the revision was being deleted", src)
            mounted = tree.mount_inside(rev.path)
            if mounted:
                raise OSError(errno.EXDEV, "a mount point inside the snapshot: never entered or removed", mounted)
            tree.rename(rev.path, held)
        except OSError as e:
            self._restore_refs(tree, repo, commit)
            return 0, f"{e.filename or rev.path}: {e.strerror or e}; nothing of it was removed"
        freed, error = tree.remove(held)
        log.debug("remove %s: %s", rev.path, error or f"done, {freed} bytes freed")
        if error:
            try:  # what is left goes back with its refs: the revision stays loadable by tag
                tree.rename(held, rev.path)
                self._restore_refs(tree, repo, commit)
            except OSError:
                pass  # left in the trash: the next run's recovery puts the refs back or finishes
            return freed, error
        for path in moved:
            tree.unlink(path, count=False)
        tree.remove(os.path.join(repo, ".no_exist", commit), count=False)
        tree.remove(os.path.join(repo, "trees", commit + ".json"), count=False)
        return freed, None

    def _restore_refs(self, tree: Tree, repo: str, commit: str, names: Sequence[str] | None = None) -> None:
        """Put the refs of ``commit`` set aside back, each only where no newer ref took its place.

        ``names``: the trash's entries, when the caller listed it already.
        """
        trash = _trash(tree)
        prefix = trash_name(repo, "")
        for name in _listdir(tree, trash) if names is None else names:
            parsed = parse_ref_entry(name[len(prefix) :]) if name.startswith(prefix) else None
            if parsed is None or parsed[0] != commit:
                continue
            src, dst = os.path.join(trash, name), os.path.join(repo, "refs", parsed[1])
            try:
                if tree.lstat(dst) is None:
                    tree.makedirs(os.path.dirname(dst))
                    tree.rename(src, dst)
                else:
                    tree.unlink(src, count=False)
            except OSError:
                continue

    # -- what the revisions shared -------------------------------------------------------------

    def remove_rest(
        self, tree: Tree, cache: CacheInventory, item: Item, gone: Going, stay: Sequence[Revision], out: Outcomes
    ) -> Finisher | None:
        """Set aside the blobs no staying revision uses; the finisher removes them (and the repo, payloads)."""
        if not gone:
            return None
        ledger = cache.ledger.blobs.get(item.path, {}) if cache.ledger else {}
        kept = set().union(*(r.blobs for r in stay)) if stay else set()
        owner: dict[str, str] = {}  # blob name -> the unit whose freed bytes it counts to
        stores: dict[str, str] = {}  # payload -> unit
        for unit, rev in reversed(gone):
            for key in sorted(rev.blobs - kept):
                if key.startswith("blobs/") and key[6:] not in owner:
                    owner[key[6:]] = unit.path
                store = ledger.get(key, (0, None))[1]
                if store:
                    stores.setdefault(store, unit.path)
        last = gone[-1][0].path
        whole = not stay
        uncounted: set[str] = set()
        if whole:
            for _, store in ledger.values():
                if store:
                    stores.setdefault(store, last)
            # Orphan blobs go with the repo, through the same protocol; the hub does not count them.
            prefix = os.path.join(item.path, "blobs") + os.sep
            for orphan in cache.orphan_files:
                name = orphan.path[len(prefix) :]
                if orphan.path.startswith(prefix) and name not in owner:
                    owner[name] = last
                    uncounted.add(name)
        aside = self._set_aside(tree, item.path, owner, out, {r.revision for r in stay})

        def finish(tree: Tree) -> None:
            self._finish_blobs(tree, item.path, aside, out, uncounted)
            if whole:
                out[last].add(*self._remove_repo(tree, item.path))
            for store, unit_path in stores.items():
                out[unit_path].add(*_sweep(tree, store))

        return finish

    def _set_aside(
        self, tree: Tree, repo: str, owner: dict[str, str], out: Outcomes, snapshots: set[str] | None = None
    ) -> dict[str, str]:
        """Rename each blob into the trash under its download lock; those linked go back.

        The links are read at once unless ``snapshots`` (the revisions the plan leaves) are
        exactly the repo's snapshots now: then they are what the plan's blob counts were made
        from, and a link a download adds meanwhile is seen by the reading after the settling
        time (:meth:`_finish_blobs`), as a link added just after this reading would be.
        """
        if not owner:
            return {}
        trash = _trash(tree)
        try:
            tree.makedirs(trash)
        except OSError as e:
            out[next(iter(owner.values()))].add(0, f"{trash}: {e.strerror or e}")
            return {}
        aside: dict[str, str] = {}
        locks = self._lock_names(tree, repo)
        for name, unit_path in owner.items():
            try:
                with self._blob_lock(tree, repo, name, locks):
                    tree.rename(os.path.join(repo, "blobs", name), os.path.join(trash, trash_name(repo, BLOB_MARK + name)))
            except FileNotFoundError:
                continue
            except TimeoutError:
                continue  # a download holds it: the blob stays, for a later run
            except OSError as e:
                out[unit_path].add(0, f"{os.path.join(repo, 'blobs', name)}: {e.strerror or e}")
                continue
            aside[name] = unit_path
        if aside and (snapshots is None or set(_listdir(tree, os.path.join(repo, "snapshots"))) != snapshots):
            self._put_back_linked(tree, repo, aside)
        return aside

    def _put_back_linked(self, tree: Tree, repo: str, aside: dict[str, str]) -> None:
        linked = self.linked_blobs(tree, repo)
        for name in [n for n in aside if n in linked]:
            _restore_blob(tree, repo, name)
            del aside[name]

    def _finish_blobs(
        self, tree: Tree, repo: str, aside: dict[str, str], out: Outcomes, uncounted: AbstractSet[str] = frozenset()
    ) -> None:
        """After the settling time: links read again; a linked blob goes back, the rest are unlinked."""
        if aside:
            tree.forget(repo)  # the last reading of the links: every folder looked up afresh
            names = list(aside)
            for start in range(0, len(names), LOCKS_AT_ONCE):
                chunk = {n: aside[n] for n in names[start : start + LOCKS_AT_ONCE]}
                self._finish_some(tree, repo, chunk, out, uncounted)

    def _finish_some(self, tree: Tree, repo: str, aside: dict[str, str], out: Outcomes, uncounted: AbstractSet[str]) -> None:
        """Under the download locks of all these blobs at once, read the links once: restore or unlink each."""
        with ExitStack() as held:
            locked = {}
            locks = self._lock_names(tree, repo)  # listed again: a download may have started since
            for name, unit_path in aside.items():
                try:
                    held.enter_context(self._blob_lock(tree, repo, name, locks))
                    locked[name] = unit_path
                except TimeoutError:
                    _restore_blob(tree, repo, name)  # a download holds its lock: it stays
                except OSError as e:
                    _restore_blob(tree, repo, name)
                    out[unit_path].add(0, f"{os.path.join(repo, 'blobs', name)}: {e.strerror or e}")
            linked = self.linked_blobs(tree, repo) if locked else set()
            for name, unit_path in locked.items():
                if name in linked:
                    _restore_blob(tree, repo, name)
                    continue
                path = os.path.join(_trash(tree), trash_name(repo, BLOB_MARK + name))
                freed, error = tree.unlink(path, count=name not in uncounted)
                out[unit_path].add(freed, error)
                log.debug("remove %s: %s", os.path.join(repo, "blobs", name), error or f"done, {freed} bytes freed")

    def _lock_names(self, tree: Tree, repo: str) -> set[str]:
        """The names in the repo's folder of download locks (``.locks/<repo folder>/``), listed once for many blobs."""
        return set(_listdir(tree, os.path.join(tree.path, ".locks", os.path.basename(repo))))

    @contextmanager
    def _blob_lock(self, tree: Tree, repo: str, name: str, listed: set[str]) -> Iterator[None]:
        """Hold huggingface_hub's download lock of one blob (``.locks/<repo folder>/<name>.lock``).

        ``listed``: the lock folder's names, read just before (:meth:`_lock_names`). A lock
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

    def _remove_repo(self, tree: Tree, repo: str) -> tuple[int, str | None]:
        """Remove a repo whose revisions and blobs are gone, ``snapshots/`` last.

        It stays when anything appeared since the plan: a snapshot, a blob or partial
        download in ``blobs/``, a download lock held. ``blobs/`` and ``snapshots/`` are only
        ever ``rmdir``-ed, so a file a download creates meanwhile stops the removal there,
        leaving a repo the hub reads without complaint.
        """
        tree.forget(repo)  # looked up afresh: what a download may have created since is seen
        try:
            if _listdir(tree, os.path.join(repo, "snapshots")) or _listdir(tree, os.path.join(repo, "blobs")):
                return 0, None  # a revision or a download appeared since the plan: the repo stays
            locks = os.path.join(tree.path, ".locks", os.path.basename(repo))
            if any(n.endswith(".lock") and is_lock_held(os.path.join(locks, n)) for n in _listdir(tree, locks)):
                return 0, None
            names = sorted(_listdir(tree, repo), key=lambda n: (n == "snapshots", n == "blobs"))
        except OSError as e:
            return 0, f"{repo}: {e.strerror or e}"
        for name in [*names, ""]:
            path = os.path.join(repo, name) if name else repo
            if name in ("", "snapshots", "blobs"):
                try:
                    tree.rmdir(path)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        return 0, None  # something arrived meanwhile: it stays, a valid repo
                    return 0, f"{path}: {e.strerror or e}"
                continue
            _, err = tree.remove(path, count=False)
            if err:
                return 0, err  # stays a (revision-less) repo the hub reads without complaint
        return 0, None

    # -- junk ----------------------------------------------------------------------------------

    def remove_junk(self, tree: Tree, cache: CacheInventory, unit: PlanUnit, found: object, out: Outcomes) -> Finisher | None:
        if unit.what == "payload":
            out[unit.path].add(*_sweep(tree, unit.path))
            return None
        if isinstance(found, Leftover) and found.commit is None:
            out[unit.path].add(*self._remove_repo(tree, unit.path))
            return None
        if isinstance(found, OrphanFile):  # a blob a racing download may link: the same protocol as blobs
            repo = os.path.dirname(os.path.dirname(unit.path))
            aside = self._set_aside(tree, repo, {os.path.basename(unit.path): unit.path}, out)
            store = found.shared_payload

            def finish(tree: Tree) -> None:
                self._finish_blobs(tree, repo, aside, out)
                if store:
                    out[unit.path].add(*_sweep(tree, store))

            return finish
        out[unit.path].add(*tree.remove(unit.path))
        return None

    # -- after a kill --------------------------------------------------------------------------

    def recover(self, tree: Tree, cache: CacheInventory) -> list[str]:
        """Finish or roll back what a killed run left in the trash; one line per repair."""
        trash = _trash(tree)
        try:
            st = tree.lstat(trash)
        except OSError:
            return []  # (.locks/ a symlink or on another mount: nothing of ours can be there)
        if st is None or not stat_mod.S_ISDIR(st.st_mode):
            return []
        entries = _listdir(tree, trash)
        by_repo: dict[str, list[str]] = {}
        for name in entries:
            parsed = parse_trash_name(name)
            if parsed is not None and parsed[0] not in (".", "..") and os.sep not in parsed[0] and "\0" not in parsed[0]:
                by_repo.setdefault(parsed[0], []).append(name)
        notes: list[str] = []
        for folder, names in sorted(by_repo.items()):
            notes += self._recover_repo(tree, os.path.join(tree.path, folder), names)
        return notes

    def _recover_repo(self, tree: Tree, repo: str, names: list[str]) -> list[str]:
        trash = _trash(tree)
        prefix = trash_name(repo, "")
        notes: list[str] = []
        rests = [name[len(prefix) :] for name in names]
        blobs = [r[len(BLOB_MARK) :] for r in rests if r.startswith(BLOB_MARK)]
        if blobs:
            aside = dict.fromkeys(blobs, "")
            self._put_back_linked(tree, repo, aside)  # (the repo's links read once for all of them)
            for blob in blobs:
                if blob in aside:
                    tree.unlink(os.path.join(trash, trash_name(repo, BLOB_MARK + blob)))
                    notes.append(f"{repo}: finished removing blob {blob} (an interrupted prune)")
                else:
                    notes.append(f"{repo}: put back blob {blob} (an interrupted prune)")
        commits = {r for r in rests if _COMMIT.fullmatch(r)}
        commits |= {parsed[0] for parsed in map(parse_ref_entry, rests) if parsed}
        for commit in sorted(commits):
            if tree.lstat(os.path.join(repo, "snapshots", commit)) is not None:
                self._restore_refs(tree, repo, commit, names)
                notes.append(f"{repo}: put back the refs of revision {commit} (an interrupted prune)")
            else:
                tree.remove(os.path.join(trash, trash_name(repo, commit)), count=False)
                for name, rest in zip(names, rests, strict=True):
                    if (parse_ref_entry(rest) or ("",))[0] == commit:
                        tree.unlink(os.path.join(trash, name), count=False)
                tree.remove(os.path.join(repo, ".no_exist", commit), count=False)
                tree.remove(os.path.join(repo, "trees", commit + ".json"), count=False)
                notes.append(f"{repo}: finished removing revision {commit} (an interrupted prune)")
        return notes


def _trash(tree: Tree) -> str:
    return os.path.join(tree.path, TRASH)


def _listdir(tree: Tree, path: str) -> list[str]:
    try:
        return tree.listdir(path)
    except (UnsafePath, NotADirectoryError):
        return []


def _restore_blob(tree: Tree, repo: str, name: str) -> None:
    """Put a set-aside blob back, unless a download already wrote a new copy (then the aside one goes)."""
    src, dst = os.path.join(_trash(tree), trash_name(repo, BLOB_MARK + name)), os.path.join(repo, "blobs", name)
    try:
        if tree.lstat(dst) is None:
            tree.rename(src, dst)
        else:
            tree.unlink(src)
    except OSError:
        pass


def _sweep(tree: Tree, store: str) -> tuple[int, str | None]:
    """A shared-store payload, by huggingface_hub's own garbage collection (under the hub's lock)."""
    if sweep_shared_blob is None:  # pragma: no cover - older hub
        return 0, None
    try:
        if tree.lstat(store) is None:  # reached strictly: no symlink or mount on the way
            return 0, None
        from pathlib import Path

        return sweep_shared_blob(Path(store), cache_dir=tree.path), None
    except OSError as e:
        return 0, f"{store}: {e.strerror or e}"


HUB_DELETION = HubDeletion()
