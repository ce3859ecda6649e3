"""The safety checks of a prune: where a path may be deleted, and whether a unit may go now.

Two kinds of check, run at two moments by :mod:`hfcache.execute.run`:

* **Before the first deletion**, over the whole plan (:func:`root_problem`,
  :func:`target_problem`): the root is a cache of its kind and not ``/`` or a home
  folder; every path to remove is normalised, strictly inside the resolved root, reached
  through no symlink, of a shape its kind deletes (``models--*/snapshots/<40 hex>`` for
  the hub), and neither something the cache needs nor hfcache's own log. One failure
  refuses the whole plan.
* **Just before each unit goes** (:class:`LiveChecks`): a download into the same repo
  (its lock held, or a partial file younger than the grace period), a file of the unit
  open or memory-mapped by a running process, an access since the plan. A unit that fails
  one is skipped with the reason, and the plan is never widened.
"""

from __future__ import annotations

import logging
import os
import re
import stat as stat_mod
import time
from collections.abc import Callable, Collection, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

from hfcache.fs.locks import is_lock_held
from hfcache.fs.system import OpenFiles, open_files, sees_every_process
from hfcache.model import CacheInventory, Leftover, PartialFile, Revision
from hfcache.plan.decisions import PlanUnit
from hfcache.units import describe_age

if TYPE_CHECKING:
    from hfcache.caches.deletion import Deletion
    from hfcache.fs.ops import Tree

log = logging.getLogger(__name__)

try:
    import pwd
except ImportError:  # pragma: no cover - Windows: only $HOME and ~ are known
    pwd = None  # type: ignore[assignment]

# ---------------------------------------------------------------------------------------------
# Before the first deletion


def home_dirs() -> set[str]:
    """Every account's home folder (resolved), plus ``$HOME`` and ``~``: never a cache root."""
    homes = {os.path.expanduser("~"), os.environ.get("HOME") or "/"}
    if pwd is not None:
        homes.update(p.pw_dir for p in pwd.getpwall() if p.pw_dir)
    return {os.path.realpath(h) for h in homes}


def _inside(path: str, root: str) -> bool:
    return path.startswith(root.rstrip(os.sep) + os.sep)


def root_problem(cache: CacheInventory, recognizes: Callable[[str], bool] | None, homes: Collection[str]) -> str | None:
    """Why nothing may be deleted from ``cache`` at all, or None.

    The root must be positively identified as a cache of its kind (``recognizes``), and
    must be neither ``/``, a home folder, nor a folder above one: a cache variable set to
    ``$HOME`` must never turn a prune into deleting a home.
    """
    root = os.path.realpath(cache.root)
    if root == os.sep:
        return f"cache root {root} is the root of the file system"
    for home in homes:
        if root == home or _inside(home, root):
            return f"cache root {root} is a home folder or holds one ({home})"
    if recognizes is None:
        return f"no cache kind {cache.kind!r} is installed to recognise {root}"
    if not recognizes(root):
        return f"{root} is no longer recognisable as a {cache.title or cache.kind}"
    return None


def memo_realpath() -> Callable[[str], str]:
    """``os.path.realpath`` for many paths of one tree: each folder on the way is looked at once.

    A path's parent is resolved (and remembered) first; only a component that is a symlink
    is handed to ``os.path.realpath``. For a plan of 10,000 revisions that is one ``lstat``
    per folder instead of one per component of every path.
    """
    memo: dict[str, str] = {}

    def resolve(path: str) -> str:
        hit = memo.get(path)
        if hit is not None:
            return hit
        head, tail = os.path.split(path)
        if not tail or not os.path.isabs(path) or os.path.normpath(path) != path:
            # (a relative or unnormalised path: ".." after a link means the link's parent)
            real = os.path.realpath(path)
        else:
            joined = os.path.join(resolve(head), tail)
            try:
                link = stat_mod.S_ISLNK(os.lstat(joined).st_mode)
            except OSError:
                link = False  # (what is missing resolves to itself, as realpath says)
            real = os.path.realpath(joined) if link else joined
        memo[path] = real
        return real

    return resolve


@lru_cache(maxsize=64)
def _compiled(shapes: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{s})" for s in shapes), re.DOTALL) if shapes else None


def target_problem(
    path: str,
    cache: CacheInventory,
    shapes: tuple[str, ...],
    keep: Iterable[str] = (),
    *,
    resolve: Callable[[str], str] = os.path.realpath,
) -> str | None:
    """Why ``path`` may not be deleted from ``cache``, or None when it may.

    It must be absolute and normalised, strictly inside the (resolved) root, reached
    without any symlink on the way (its parent resolves to itself), shaped like a unit of
    the kind (``shapes``: regular expressions over the ``/``-separated path relative to the
    root), and neither a protected path nor above one; nor may it be or hold one of ``keep``
    (hfcache's own log). ``resolve`` is ``os.path.realpath`` or a memo of it over one plan.
    For many paths of one cache, :class:`TargetCheck` does the same with the work shared.
    """
    return TargetCheck(cache, shapes, keep, resolve=resolve)(path)


class TargetCheck:
    """:func:`target_problem` for many paths of one cache: the root, shapes and kept paths prepared once."""

    def __init__(
        self,
        cache: CacheInventory,
        shapes: tuple[str, ...],
        keep: Iterable[str] = (),
        *,
        resolve: Callable[[str], str] = os.path.realpath,
    ) -> None:
        self.cache = cache
        self.resolve = resolve
        self.root = resolve(cache.root)
        self.prefix = self.root.rstrip(os.sep) + os.sep
        self.pattern = _compiled(tuple(shapes))
        # What is, or holds, a path the cache needs, or hfcache's log (a path that is a link to the
        # log is unlinked, never followed: the log stays; both spellings are kept) -> that path.
        self.needed = _holding((kept, kept) for kept in self.cache.protected)
        self.logs = _holding((p, kept) for kept in map(os.path.abspath, keep) for p in (kept, resolve(kept)))

    def __call__(self, path: str) -> str | None:
        sep = os.sep
        # Normalised: what os.path.normpath would leave as it is (no "//", "/./", "/../", trailing "/").
        if path[:1] != sep or _DOUBLE in path or _DOT in path and _unnormal(path) or path[-1:] == sep:
            return f"{path}: not a normalised absolute path"
        if not path.startswith(self.prefix):
            return f"{path}: outside the cache root {self.root}"
        parent = path.rpartition(sep)[0]
        real = self.resolve(parent)
        if real != parent:
            return f"{path}: reached through a symlink ({parent} resolves to {real})"
        relative = path[len(self.prefix) :]
        if sep != "/":  # pragma: no cover - Windows
            relative = relative.replace(sep, "/")
        if self.pattern is None or not self.pattern.fullmatch(relative):
            cache = self.cache
            return f"{path}: not something a {cache.title or cache.kind} deletes (unexpected shape {relative!r})"
        kept = self.needed.get(path)
        if kept is not None:
            return f"{path}: the cache needs {kept}"
        kept = self.logs.get(path)
        if kept is not None:
            return f"{path}: it holds hfcache's own log {kept}"
        return None


def _holding(paths: Iterable[tuple[str, str]]) -> dict[str, str]:
    """For (path, name) pairs: each path, and each prefix of it that a "/" follows (what holds it) -> the first name."""
    found: dict[str, str] = {}
    for path, name in paths:
        found.setdefault(path, name)
        for i, c in enumerate(path):
            if c == os.sep and i:
                found.setdefault(path[:i], name)
    return found


_DOUBLE, _DOT = os.sep * 2, os.sep + "."


def _unnormal(path: str) -> bool:
    """Whether an absolute path holding "/." has a "." or ".." component."""
    return any(part in (".", "..") for part in path.split(os.sep))


# ---------------------------------------------------------------------------------------------
# Just before a unit goes

# How stale the table of open files may get: rebuilt when older than this, or than a few
# times what building it took (on a machine with thousands of processes).
OPEN_FILES_MAX_AGE = 1.0
# A unit counts as read since the plan when its newest access time moved by more than this.
ATIME_SLACK = 1.0


class _Files:
    """What a unit's files look like now: identities (``st_dev, st_ino``) and the newest access time."""

    def __init__(self) -> None:
        self.ids: set[tuple[int, int]] = set()
        self.atime: float | None = None

    def add(self, st: os.stat_result) -> None:
        if stat_mod.S_ISREG(st.st_mode):
            self.ids.add((st.st_dev, st.st_ino))
            self.atime = st.st_atime if self.atime is None else max(self.atime, st.st_atime)


def unit_files(paths: Iterable[str], *, follow: bool) -> _Files:
    """The regular files of ``paths`` (files or trees; folders are never followed through links).

    ``follow`` stats each file through its symlinks (a hub snapshot entry, whose data and
    access time are its blob's); otherwise links count as themselves, as the scanners do.
    """
    files = _Files()
    stack: list[str] = []
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat_mod.S_ISDIR(st.st_mode):
            stack.append(path)
        else:
            _add_entry(files, path, st, follow)
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):  # (the types come with the listing: no stat)
                    stack.append(entry.path)
                elif follow and entry.is_symlink():
                    files.add(os.stat(entry.path))
                else:
                    _add_entry(files, entry.path, entry.stat(follow_symlinks=False), follow)
            except OSError:
                continue  # gone, or a broken link (which holds no data)
    return files


def _add_entry(files: _Files, path: str, st: os.stat_result, follow: bool) -> None:
    if follow and stat_mod.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError:
            return  # a broken link holds no data
    files.add(st)


class LiveChecks:
    """Whether a unit may go *now*; ``notes`` says what could not be checked.

    ``clock``, ``list_open_files`` and ``sees_all`` are parameters so that tests (and library
    users) can pass their own; by default the wall clock, /proc (or psutil), and whether this
    process may read every other one (root with CAP_SYS_PTRACE).

    A process whose files could not be read is a note only when reading them was possible
    for someone: run without root, another user's process may hold a unit's files, and root
    would see them. Root that may read every process and still cannot read one (a process
    the kernel protects from everyone) says which under ``-v``, not every run.
    """

    def __init__(
        self,
        roots: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
        list_open_files: Callable[[Iterable[str]], OpenFiles] = open_files,
        sees_all: Callable[[], bool] = sees_every_process,
    ) -> None:
        self.roots = tuple(sorted({os.path.realpath(r) for r in roots}))
        self.clock = clock
        self.list_open_files = list_open_files
        self.sees_all = sees_all
        self._table: OpenFiles | None = None
        self._built_at = 0.0
        self._build_time = 0.0
        self.denied = 0
        self._told = False

    @property
    def notes(self) -> list[str]:
        if not self.denied or self.sees_all():
            return []
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # root without CAP_SYS_PTRACE: a container, usually
            how = "root lacks CAP_SYS_PTRACE here (a container's root often does): grant it to check all"
        else:
            how = "run as root (or as the cache's only user) to check all"
        return [
            f"the open files of {self.denied} process(es) could not be read (permission denied): "
            f"a unit one of them uses may have been deleted; {how}"
        ]

    def _open(self) -> OpenFiles:
        now = time.monotonic()
        if self._table is None or now - self._built_at > max(OPEN_FILES_MAX_AGE, 4 * self._build_time):
            self._table = self.list_open_files(self.roots)
            self._built_at = time.monotonic()
            self._build_time = self._built_at - now
            self.denied = max(self.denied, self._table.denied)
            if self._table.denied and not self._told and self.sees_all():
                self._told = True
                shown = ", ".join(self._table.unreadable[:10]) + (", ..." if len(self._table.unreadable) > 10 else "")
                log.info("open files not readable even with every privilege, so not checked: %s", shown or self._table.denied)
        return self._table

    def in_use(self, files: _Files) -> str | None:
        users = self._open().users
        for key in files.ids:
            if key in users:
                return f"in use: a file of it is open or memory-mapped by {users[key]}"
        return None

    def item_busy(
        self, deletion: Deletion, tree: Tree, cache: CacheInventory, path: str, item_id: str | None, grace: float
    ) -> str | None:
        """A download running into the item at ``path``, as its kind sees one (:meth:`Deletion.item_busy`)."""
        return deletion.item_busy(tree, cache, path, item_id, grace, self.clock())

    def revision_busy(self, cache: CacheInventory, unit: PlanUnit, rev: Revision, *, follow: bool = False) -> str | None:
        """The revision vanished, was read since the plan, or a process holds one of its files.

        ``follow`` reads each file through its links (the hub's snapshot entries, whose data
        and access time are their blobs').
        """
        return self._busy(rev.path, rev.unit_paths, unit, follow)

    def file_busy(self, unit: PlanUnit) -> str | None:
        """One file of a revision: vanished, read since the plan, or open or mapped by a process (through its link)."""
        return self._busy(unit.path, [unit.path], unit, True)

    def _busy(self, path: str, paths: Iterable[str], unit: PlanUnit, follow: bool) -> str | None:
        if not os.path.lexists(path):
            return "no longer in the cache"
        files = unit_files(paths, follow=follow)
        if files.atime is not None and files.atime > unit.last_accessed + ATIME_SLACK:
            return f"read since the plan was made ({describe_age(max(0.0, self.clock() - files.atime))} ago)"
        return self.in_use(files)

    def junk_busy(
        self, deletion: Deletion, tree: Tree, cache: CacheInventory, unit: PlanUnit, found: object, grace: float
    ) -> str | None:
        """A piece of junk vanished, was modified since the plan, is being downloaded or is open."""
        try:
            st = os.lstat(unit.path)
        except OSError:
            return "no longer in the cache"
        if isinstance(found, Leftover) and found.commit is None:  # an emptied repo folder a download may refill
            return self.item_busy(deletion, tree, cache, unit.path, found.item_id, grace)
        if st.st_mtime > unit.last_modified + ATIME_SLACK and not stat_mod.S_ISDIR(st.st_mode):
            return "modified since the plan was made"
        if isinstance(found, PartialFile) and any(is_lock_held(lock) for lock in found.locks):
            return "its download lock is held"
        return self.in_use(unit_files([unit.path], follow=True))
