"""``hfcache verify``: every cached file hashed against what its cache says it should be, offline.

1. Each selected revision's files come with what they should hash to, from their kind
   (:meth:`~hfcache.caches.protocol.CacheKind.expected`: the hub's blob names, torch's
   checkpoint prefixes; ``unverifiable``, and why, where a kind keeps no hash), and with
   what the scan's stat saw of each content when it made one (``Expected.seen``: the hub's
   scan with ``listing=True``), else each is stat'ed here.
2. Each content is read once, however many revisions share it (one ``(dev, ino)``, one
   read, every digest it needs from that pass), in parallel (``jobs`` threads: hashlib and
   the reads release the GIL), gently (:mod:`hfcache.verify.reading`).
3. A content an earlier run hashed, whose size, mtime and ctime have not moved since, is not
   read again (:mod:`hfcache.verify.state`), unless ``full``, or unless its digest is older
   than ``recheck`` (15 to 30 days by default, spread over the files: bit rot moves no
   timestamp, so every file is read again within a month of nightly runs). Its result says
   so (``hashed`` false, ``hashed_at``): a file is reported ``ok`` only when a digest of its
   present content matched, this run or an earlier one.

A file is ``ok``, ``corrupt`` (the digest differs: expected and actual are given),
``missing`` (a link to no data) or ``unverifiable`` (why: no hash known, not a regular file,
unreadable, changed while read).
"""

from __future__ import annotations

import math
import os
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial
from itertools import chain
from operator import itemgetter
from typing import NamedTuple

from hfcache import parallel, progress
from hfcache.caches.protocol import CacheKind, Expected, no_hashes
from hfcache.model import CacheInventory, Inventory, Item, Revision
from hfcache.plan.policies import Word
from hfcache.verify import memo
from hfcache.verify.memo import Memo
from hfcache.verify.reading import FAMILY, Digest, FileChanged, NotAFile, check_digest, hash_file, matches
from hfcache.verify.state import Known, LastVerify, State

# The digest a check needs, by its algorithm: sha256 prefixes come from the same sha256.


class Verdict(Word):
    OK = "ok"
    CORRUPT = "corrupt"
    MISSING = "missing"
    UNVERIFIABLE = "unverifiable"


class FileCheck(NamedTuple):
    """The verdict on one file of one revision.

    A named tuple, as the other per-file records are (:class:`~hfcache.caches.protocol.Expected`):
    a 100,000-file verify makes 100,000 of them, and a frozen dataclass took three times as
    long to build (0.3 s of a repeat run that reads nothing).
    """

    kind: str
    root: str
    id: str
    type: str
    revision: str
    name: str
    path: str
    status: Verdict
    data: str | None = None
    algorithm: str | None = None
    expected: str | None = None
    actual: str | None = None
    size_bytes: int = 0
    why: str | None = None
    hashed: bool = False  # read by this run (else its digest is an earlier run's, its file unchanged since)
    hashed_at: float | None = None
    identity: tuple[int, int, int, int, int] | None = None  # its data's (dev, ino, size, mtime_ns, ctime_ns) as judged


_STATUS = itemgetter(FileCheck._fields.index("status"))


def identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells one content from another without reading it: a later write moves the mtime or ctime."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class CacheChecks:
    """The verdicts on one cache's files: those judged one by one (``files``), and those counted from memos.

    ``reused``: the repos left unchanged since a verify judged them whole
    (:mod:`hfcache.verify.memo`), counted by verdict without a record per file. ``count`` and
    ``total`` include them.
    """

    kind: str
    root: str
    files: tuple[FileCheck, ...] = ()
    reused: tuple[Memo, ...] = ()

    def count(self, verdict: Verdict) -> int:
        return self._tally[verdict]

    @property
    def total(self) -> int:
        """Every file checked: judged one by one, or counted from a memo."""
        return len(self.files) + self._reused[2]

    @property
    def reused_reasons(self) -> set[str]:
        """Why the files counted from memos are unverifiable."""
        return self._reused[1]

    @cached_property
    def _reused(self) -> tuple[Counter[str], set[str], int]:
        return memo.tally(self.reused)

    @cached_property
    def _tally(self) -> Counter[str]:
        """Files by verdict, counted once (the view, the JSON, the exit code and the state database all ask)."""
        return Counter(map(_STATUS, self.files)) + self._reused[0]


@dataclass(frozen=True)
class VerifyReport:
    caches: tuple[CacheChecks, ...]
    started_at: float
    finished_at: float
    bytes_hashed: int = 0
    files_hashed: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)
    changed_memos: tuple[str, ...] = ()  # repos counted from memos that changed during the run: judge them anew

    @property
    def problems(self) -> int:
        """Files corrupt or missing: what ``verify`` exits non-zero for."""
        return sum(c.count(Verdict.CORRUPT) + c.count(Verdict.MISSING) for c in self.caches)


class _Content:
    """One file content to hash (one ``(dev, ino)``) and the digests asked of it.

    Of its stat only what a verify compares is kept, ``seen``: its identity (dev, ino, size,
    mtime_ns, ctime_ns), most often the very tuple the scan made (a stat result and its
    numbers take about 600 bytes; a 100,000-file cache has 60,000 blobs).
    """

    __slots__ = ("path", "seen", "families", "digest", "known", "error")

    def __init__(self, path: str, seen: tuple[int, int, int, int, int]) -> None:
        self.path = path
        self.seen = seen
        self.families: set[str] = set()
        self.digest: Digest | None = None
        self.known: Known | None = None
        self.error: str | None = None


Found = tuple[_Content | None, int] | OSError  # what a data path holds (None: a content this run did not look at), its size


def _look(path: str, seen: tuple[int, int, int, int, int] | None, contents: dict[tuple[int, int], _Content]) -> Found:
    """The content at ``path`` by its identity, from the scan (``seen``) or a stat now, or why it cannot be stat'ed."""
    if seen is None:
        try:
            seen = identity(os.stat(path))
        except OSError as err:
            return err
    key = (seen[0], seen[1])
    content = contents.get(key)
    if content is None:
        content = contents[key] = _Content(path, seen)
    return content, seen[2]


def _expected(kind: CacheKind | None, cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
    if kind is None:
        return no_hashes(cache.title or cache.kind, rev)
    try:
        return list(kind.expected(cache, item, rev))
    except Exception as e:  # noqa: BLE001 - a plug-in's failure is its own: its files are unverifiable, not the run
        return [Expected(os.path.basename(p), p, None, why=f"{KIND_FAILED} ({type(e).__name__}: {e})") for p in rev.unit_paths]


KIND_FAILED = "its kind failed to say"  # a plug-in's error: no verdict a memo may keep
SEEN_EVERY = 86400.0  # how often a file's row is marked seen again
FRESH = 5.0  # seconds since the scan began within which a run that read nothing judges on its one look (_found_now)
RECHECK = 30 * 86400.0  # an unchanged file is read again after 15 to 30 days: bit rot moves no timestamp


def _spread(key: tuple[int, int]) -> float:
    """A fraction in [0, 1) fixed per ``(dev, ino)``."""
    return ((key[0] * 1_000_003 + key[1]) * 2_654_435_761 % 2**32) / 2**32


def _due(key: tuple[int, int], hashed_at: float, now: float, recheck: float) -> bool:
    """Whether a content hashed at ``hashed_at`` is read again now: after ``recheck`` times 0.5 to 1.

    The factor is fixed per ``(dev, ino)``, so a cache hashed in one night is read again over
    a fortnight of nightly runs, not all in one of them.
    """
    return now - hashed_at >= recheck * (0.5 + 0.5 * _spread(key))


def _unchanged(known: Known, seen: tuple[int, int, int, int, int], families: set[str]) -> bool:
    """Whether ``known`` is of the content of identity ``seen`` (same size, mtime, ctime) and has every digest asked for."""
    return known[:3] == seen[2:] and families <= known.digests.keys()


def _hash(content: _Content) -> _Content:
    try:
        content.digest = hash_file(content.path, content.families)
    except NotAFile:
        content.error = "not a regular file once opened: not read"
    except FileChanged as e:
        content.error = f"{e.strerror} (a download into it?)"
    except OSError as e:
        content.error = f"cannot be read ({e.strerror or e})"
    return content


def verify(
    inventory: Inventory,
    *,
    kinds: Mapping[str, CacheKind],
    chosen: Callable[[Item, Revision], bool] = lambda item, rev: True,
    jobs: int = 1,
    full: bool = False,
    recheck: float = RECHECK,
    state: State | None = None,
    clock: Callable[[], float] = time.time,
    reused: Mapping[str, Sequence[Memo]] | None = None,
    make_memos: bool = True,
) -> VerifyReport:
    """Verify every revision of ``inventory`` that ``chosen`` selects (see the module docstring).

    ``reused``: by cache root, the memos of repos the scan left out, unchanged since a verify
    judged them (:class:`hfcache.verify.memo.Reuse`); their files are counted from them. Each
    repo of a kind that can leave unchanged repos out (``skips_unchanged``) and that this run
    judged gets a new memo, when every file of it was judged and found sound (and ``make_memos``:
    a run that lists every file uses none, and need not walk the repos again to make them),
    else loses its own.
    """
    started = clock()
    state = state or State(None)
    known = {} if full else state.known()
    plans: list[tuple[CacheInventory, list[tuple[Item, Revision, list[Expected]]]]] = []
    contents: dict[tuple[int, int], _Content] = {}
    by_path: dict[str, Found] = {}  # each data path looked at once, however many links reach it
    for cache in inventory.caches:
        if not cache.exists:
            continue
        kind = kinds.get(cache.kind)
        revs = [(i, r, _expected(kind, cache, i, r)) for i in cache.items for r in i.revisions if chosen(i, r)]
        plans.append((cache, revs))
        for _, _, expected in revs:
            for _, _, data, algorithm, _, _, seen in expected:
                if algorithm is None or data is None:
                    continue
                found = by_path.get(data)
                if found is None:
                    found = by_path[data] = _look(data, seen, contents)
                if not isinstance(found, OSError) and found[0] is not None:
                    found[0].families.add(FAMILY[algorithm])
    todo = []
    for key, content in contents.items():
        old = known.get(key)
        if old is not None and _unchanged(old, content.seen, content.families) and not _due(key, old.hashed_at, started, recheck):
            content.known = old
        else:
            todo.append(content)
    total = sum(c.seen[2] for c in todo)
    done_bytes = 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        # Largest first: a big shard started last runs alone at the end. Shards of 768, 512, 371
        # and 256 MiB on 2 jobs: 1.95x, against 1.76x in path order (benchmarks/bench_verify.py).
        for content in pool.map(_hash, sorted(todo, key=lambda c: (-c.seen[2], c.path))):
            done_bytes += content.seen[2]
            progress.report("hashing", done_bytes, total)
    finished = clock()
    fresh = []
    for key, content in contents.items():
        if content.digest is not None:
            old = known.get(key) if not full else None
            same = old is not None and (old.size, old.mtime_ns, old.ctime_ns) == (
                content.digest.st.st_size,
                content.digest.st.st_mtime_ns,
                content.digest.st.st_ctime_ns,
            )
            fresh.append((content.digest.st, {**(old.digests if same and old else {}), **content.digest.digests}))
    # Marked seen at most once a day (what the 90-day forgetting needs): a repeat run writes back nothing it need not.
    stale = [k for k in contents if (row := known.get(k)) is None or row.seen_at < finished - SEEN_EVERY]
    state.remember(fresh, stale, finished, rotten=_rotten(plans, by_path) if todo else ())
    # Each data path stat'ed again once, after the reads, unless nothing was read and every look is fresh (see _found_now).
    fresh_looks = not todo and 0.0 <= time.time() - inventory.scanned_at <= FRESH
    now_of = by_path.__getitem__ if fresh_looks else _found_now(contents)
    hits = reused or {}
    memos = _Memos(inventory.scanned_at, recheck, make_memos)
    caches = _conclude(plans, hits, now_of, finished, kinds, state, memos)
    # A repo counted from its memo was looked at when the scan began; a run that took time looks again
    # (as _found_now does for every judged path): one changed since is for the caller to judge anew.
    changed = () if fresh_looks else tuple(m.path for ms in hits.values() for m in ms if not memo.unchanged(m))
    hashed = [c for c in todo if c.digest is not None]
    return VerifyReport(
        tuple(caches),
        started,
        finished,
        bytes_hashed=sum(c.digest.size for c in hashed if c.digest),
        files_hashed=len(hashed),
        warnings=tuple(state.warnings),
        changed_memos=changed,
    )


class _Memos(NamedTuple):
    """How a run keeps memos: the scan's start (nothing changed after it is in one), the recheck period, whether to make any."""

    before: float
    recheck: float
    make: bool


def _conclude(
    plans: list[tuple[CacheInventory, list[tuple[Item, Revision, list[Expected]]]]],
    hits: Mapping[str, Sequence[Memo]],
    now_of: Callable[[str], Found],
    finished: float,
    kinds: Mapping[str, CacheKind],
    state: State,
    how: _Memos,
) -> list[CacheChecks]:
    """Each cache's verdicts (with the files counted from memos); its last run and its repos' memos recorded."""
    caches = []
    made: list[tuple[Memo, dict[tuple[int, int], float]]] = []
    dropped: list[str] = []
    for cache, revs in plans:
        judged = _judge(cache, revs, now_of, finished)
        result = CacheChecks(cache.kind, cache.root, judged, tuple(hits.get(cache.root, ())))
        counts = [result.count(v) for v in (Verdict.OK, Verdict.CORRUPT, Verdict.MISSING, Verdict.UNVERIFIABLE)]
        state.record_run(LastVerify(cache.kind, cache.root, finished, result.total, *counts))
        caches.append(result)
        kind = kinds.get(cache.kind)
        if kind is not None and kind.skips_unchanged:
            new, gone = _memos(cache, revs, judged, how)
            made += new
            dropped += gone
    touched = [m for ms in hits.values() for m in ms if m.seen_at < finished - SEEN_EVERY]
    state.keep_memos(made, dropped, touched, finished)
    return caches


def _memos(
    cache: CacheInventory, revs: list[tuple[Item, Revision, list[Expected]]], judged: Sequence[FileCheck], how: _Memos
) -> tuple[list[tuple[Memo, dict[tuple[int, int], float]]], list[str]]:
    """The memo of each repo of ``cache`` judged whole and sound (with the digests it stood on: see
    :meth:`State.keep_memos`), when ``how.make``; and the judged repos whose memo must go."""
    checks: dict[str, list[FileCheck]] = {}
    chosen: Counter[str] = Counter()
    at = 0
    for item, _, expected in revs:
        checks.setdefault(item.path, []).extend(judged[at : at + len(expected)])
        chosen[item.path] += 1
        at += len(expected)
    root = os.path.join(cache.root, "")
    odd = {
        p[len(root) :].split(os.sep, 1)[0]
        for p in chain(
            (w.path for w in cache.warnings),
            (f.path for f in cache.partial_files),
            (f.path for f in cache.orphan_files),
            (f.path for f in cache.leftovers),
        )
        if p.startswith(root)
    }
    candidates, dropped = [], []
    for item in {i.path: i for i, _, _ in revs}.values():
        if not all(map(_sound, checks[item.path])):
            dropped.append(item.path)
        elif not how.make or chosen[item.path] < len(item.revisions):
            continue  # sound, but not (wholly) judged for a memo: its memo, if any, stays, valid while unchanged
        elif (
            item.warnings
            or any(r.warnings for r in item.revisions)
            or os.path.basename(item.path) in odd
            or os.path.dirname(item.path) != cache.root
        ):
            dropped.append(item.path)
        else:
            candidates.append(item)
    # Each folder walked for its memo by a worker process, as the scan walks them (0.4 s -> 0.2 s for 2,400 repos, 2 CPUs).
    taken = parallel.ordered_map(partial(memo.take, before=how.before), [i.path for i in candidates], parallel.auto_jobs())
    made = []
    for item, found in zip(candidates, taken, strict=True):
        made_one = _memo_of(cache, item, checks[item.path], found, how) if found is not None else None
        if made_one is None:
            dropped.append(item.path)
        else:
            made.append(made_one)
    return made, dropped


def _rotten(
    plans: list[tuple[CacheInventory, list[tuple[Item, Revision, list[Expected]]]]], by_path: Mapping[str, Found]
) -> set[tuple[int, int]]:
    """The contents this run read whose digest is not the one a file naming them expects: corrupt, by ``(dev, ino)``."""
    out = set()
    for _, revs in plans:
        for _, _, expected in revs:
            for _, _, data, algorithm, digest, _, _ in expected:
                found = by_path.get(data) if algorithm is not None and data is not None else None
                if algorithm is None or found is None or isinstance(found, OSError) or found[0] is None:
                    continue
                content = found[0]
                if content.digest is not None and not check_digest(algorithm, digest or "", content.digest.digests):
                    out.add((content.seen[0], content.seen[1]))
    return out


def _sound(f: FileCheck) -> bool:
    """Ok, or unverifiable for want of any hash (a verdict the layout alone decides; not a kind's failure)."""
    if f.status == Verdict.OK:
        return True
    return f.status == Verdict.UNVERIFIABLE and f.algorithm is None and not (f.why or "").startswith(KIND_FAILED)


def _memo_of(
    cache: CacheInventory, item: Item, checks: Sequence[FileCheck], taken: tuple[tuple[str, ...], array[int]], how: _Memos
) -> tuple[Memo, dict[tuple[int, int], float]] | None:
    """The memo of ``item``'s folder as ``taken`` (:func:`memo.take`) found it, when ``checks`` are of contents in it."""
    names, values = taken
    where = {name: i * memo.FIELDS for i, name in enumerate(names)}
    prefix = os.path.join(item.path, "")
    due: dict[tuple[int, int], float] = {}
    stood_on: dict[tuple[int, int], float] = {}  # the digest rows judged on: their hashed_at
    counts: Counter[str] = Counter()
    reasons: set[str] = set()
    for f in checks:
        if f.status == Verdict.OK:
            at = where.get(f.data[len(prefix) :]) if f.data and f.data.startswith(prefix) else None
            if at is None or f.identity is None or f.hashed_at is None or tuple(values[at : at + memo.FIELDS]) != f.identity:
                return None  # a content elsewhere (the shared store, another repo), or not the one judged
            key = (f.identity[0], f.identity[1])
            due[key] = min(due.get(key, math.inf), f.hashed_at + how.recheck * (0.5 + 0.5 * _spread(key)))
            stood_on[key] = f.hashed_at
        elif not _sound(f):
            return None  # corrupt, missing, or unverifiable for a passing reason (unreadable, changed, a kind's error)
        elif not _settled_inside(f.path, prefix, where):
            return None  # a link out of the repo, or to a blob that is itself a link (the shared store, another repo)
        else:
            reasons.add(f.why or "no hash known")
        counts[str(f.status)] += 1
    contents = array("q", chain.from_iterable(due))
    next_due = min(due.values(), default=math.inf)
    return Memo(
        item.path,
        cache.kind,
        cache.root,
        item.id,
        item.type,
        names,
        values,
        contents,
        dict(counts),
        tuple(sorted(reasons)),
        next_due,
        how.before,
    ), stood_on


def _settled_inside(path: str, prefix: str, where: Mapping[str, int]) -> bool:
    """Whether ``path`` is a file the memo has (``where``), or a link straight to one (a blob named by a mirror's ETag).

    What an unverifiable file is, is then decided inside the repo, by what the memo watches.
    """
    try:
        target = os.readlink(path)
    except OSError:
        return path.startswith(prefix) and path[len(prefix) :] in where
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return resolved.startswith(prefix) and resolved[len(prefix) :] in where


def _judged_stamp(content: _Content) -> tuple[int, int]:
    """(size, mtime_ns) of the content as judged: after this run's read, else as first looked at.

    Not the ctime: a hard link of the blob removed or added meanwhile moves it, and the
    content stays the same; a write moves the mtime.
    """
    st = content.digest.st if content.digest is not None else None
    return (st.st_size, st.st_mtime_ns) if st is not None else (content.seen[2], content.seen[3])


def _found_now(contents: Mapping[tuple[int, int], _Content]) -> Callable[[str], Found]:
    """What each data path holds now, stat'ed again once per path after the reads.

    A run that read something took time (hours for a big first run): a blob deleted or
    replaced meanwhile, read or not, must not be reported ``ok``, and a path that now holds a
    content this run did not look at is "changed while verified". Only what the verdict
    needs is kept, not the stat result (a 100,000-file cache has 60,000 blobs). The same
    inode with another size or mtime than the content had when judged was written since (a
    resumed download, a tool writing through the link): "changed while verified".

    A run that read nothing, and whose scan began at most :data:`FRESH` seconds ago, judges
    each path on the one look it had instead (:func:`_look`: the scan's stat, or its own just
    before; ``verify`` decides). Nothing was read in between, only this run's bookkeeping:
    the verdict is as of that look, a few seconds at most before the report, as a second
    stat's would be as of a moment before it; and ``ok`` still means that the content the
    look found (its dev, inode, size, mtime and ctime) is the one an earlier run's digest
    matched. A 100,000-file repeat run saves 60,000 stats (a tenth of a second) this way. A
    blob gone or replaced before the scan looked is found either way; a slow scan (a cold
    disk, NFS) makes its looks older than :data:`FRESH`, and the second stat is done.
    """
    seen: dict[str, Found] = {}

    def now(path: str) -> Found:
        found = seen.get(path)
        if found is None:
            try:
                st = os.stat(path)
            except OSError as err:
                found = err
            else:
                content = contents.get((st.st_dev, st.st_ino))
                if content is not None and (st.st_size, st.st_mtime_ns) != _judged_stamp(content):
                    content = None  # the same inode, written since it was looked at: changed while verified
                found = (content, st.st_size)
            seen[path] = found
        return found

    return now


_new = tuple.__new__  # FileCheck(...) without the Python-level __new__ of a NamedTuple: 100,000 per repeat run


def _judge(
    cache: CacheInventory, revs: list[tuple[Item, Revision, list[Expected]]], now_of: Callable[[str], Found], now: float
) -> tuple[FileCheck, ...]:
    """The verdict on each file of ``revs``, on what its data path holds (``now_of``: see :func:`_found_now`).

    Each built in one call (no ``dataclasses.replace`` of a base); a checked one, nearly every
    file, with every field in order, without the keyword handling (a 100,000-file repeat run
    makes 100,000 of them).
    """
    out = []
    for item, rev, expected in revs:
        head = (cache.kind, cache.root, item.id, item.type, rev.revision)
        for e in expected:
            name, path, data, algorithm, digest, why, _ = e
            if algorithm is None:
                out.append(FileCheck(*head, name, path, Verdict.UNVERIFIABLE, data, why=why or "no hash known"))
                continue
            if data is None:
                out.append(FileCheck(*head, name, path, Verdict.MISSING, None, algorithm, digest, why="a link to no data"))
                continue
            found = now_of(data)
            if isinstance(found, OSError):
                gone = f"its data is gone ({found.strerror or found})"
                out.append(FileCheck(*head, name, path, Verdict.MISSING, data, algorithm, digest, why=gone))
                continue
            content, size_now = found
            if content is None or content.error:
                trouble = content.error if content else "changed while verified"
                out.append(
                    FileCheck(*head, name, path, Verdict.UNVERIFIABLE, data, algorithm, digest, size_bytes=size_now, why=trouble)
                )
                continue
            if content.digest is not None:
                actual, hashed, at, size = content.digest.digests[FAMILY[algorithm]], True, now, content.digest.size
                judged = identity(content.digest.st)
            elif content.known is not None:
                known, judged = content.known, content.seen
                actual, hashed, at, size = known.digests[FAMILY[algorithm]], False, known.hashed_at, judged[2]
            else:  # pragma: no cover - every content is hashed or known
                out.append(FileCheck(*head, name, path, Verdict.UNVERIFIABLE, data, algorithm, digest, why="not hashed"))
                continue
            if matches(algorithm, digest or "", actual):
                out.append(
                    _new(
                        FileCheck,
                        (*head, name, path, Verdict.OK, data, algorithm, digest, actual, size, None, hashed, at, judged),
                    )
                )
            else:
                why = f"{algorithm} of its content differs from its name's"
                out.append(
                    _new(
                        FileCheck,
                        (*head, name, path, Verdict.CORRUPT, data, algorithm, digest, actual, size, why, hashed, at, judged),
                    )
                )
    return tuple(out)
