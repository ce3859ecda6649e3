"""``hfcache verify``: every cached file hashed against what its cache says it should be, offline.

1. Each selected revision's files come with what they should hash to, from their kind
   (:meth:`~hfcache.caches.protocol.CacheKind.expected`: the hub's blob names, torch's
   checkpoint prefixes; ``unverifiable``, and why, where a kind keeps no hash).
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

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from hfcache import progress
from hfcache.caches.protocol import CacheKind, Expected, no_hashes
from hfcache.model import CacheInventory, Inventory, Item, Revision
from hfcache.plan.policies import Word
from hfcache.verify.reading import Digest, FileChanged, NotAFile, hash_file
from hfcache.verify.state import Known, LastVerify, State

# The digest a check needs, by its algorithm: sha256 prefixes come from the same sha256.
_FAMILY = {"sha256": "sha256", "sha256-prefix": "sha256", "git-sha1": "git-sha1"}


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


def identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells one content from another without reading it: a later write moves the mtime or ctime."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class CacheChecks:
    kind: str
    root: str
    files: tuple[FileCheck, ...] = ()

    def count(self, verdict: Verdict) -> int:
        return sum(1 for f in self.files if f.status == verdict)


@dataclass(frozen=True)
class VerifyReport:
    caches: tuple[CacheChecks, ...]
    started_at: float
    finished_at: float
    bytes_hashed: int = 0
    files_hashed: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def problems(self) -> int:
        """Files corrupt or missing: what ``verify`` exits non-zero for."""
        return sum(c.count(Verdict.CORRUPT) + c.count(Verdict.MISSING) for c in self.caches)


class _Content:
    """One file content to hash (one ``(dev, ino)``) and the digests asked of it.

    Of its stat only what a verify compares is kept, ``stamp``: (size, mtime_ns, ctime_ns)
    (a stat result and its numbers take about 600 bytes; a 100,000-file cache has 60,000 blobs).
    """

    __slots__ = ("path", "key", "stamp", "families", "digest", "known", "error")

    def __init__(self, path: str, st: os.stat_result) -> None:
        self.path = path
        self.key = (st.st_dev, st.st_ino)
        self.stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        self.families: set[str] = set()
        self.digest: Digest | None = None
        self.known: Known | None = None
        self.error: str | None = None


def _expected(kind: CacheKind | None, cache: CacheInventory, item: Item, rev: Revision) -> list[Expected]:
    if kind is None:
        return no_hashes(cache.title or cache.kind, rev)
    try:
        return list(kind.expected(cache, item, rev))
    except Exception as e:  # noqa: BLE001 - a plug-in's failure is its own: its files are unverifiable, not the run
        return [
            Expected(os.path.basename(p), p, None, why=f"its kind failed to say ({type(e).__name__}: {e})")
            for p in rev.unit_paths
        ]


SEEN_EVERY = 86400.0  # how often a file's row is marked seen again
RECHECK = 30 * 86400.0  # an unchanged file is read again after 15 to 30 days: bit rot moves no timestamp


def _due(key: tuple[int, int], hashed_at: float, now: float, recheck: float) -> bool:
    """Whether a content hashed at ``hashed_at`` is read again now: after ``recheck`` times 0.5 to 1.

    The factor is fixed per ``(dev, ino)``, so a cache hashed in one night is read again over
    a fortnight of nightly runs, not all in one of them.
    """
    spread = ((key[0] * 1_000_003 + key[1]) * 2_654_435_761 % 2**32) / 2**32
    return now - hashed_at >= recheck * (0.5 + 0.5 * spread)


def _unchanged(known: Known | None, stamp: tuple[int, int, int], families: Iterable[str]) -> bool:
    """Whether ``known`` is of the content with ``stamp`` (size, mtime_ns, ctime_ns) and has every digest asked for."""
    return (
        known is not None and (known.size, known.mtime_ns, known.ctime_ns) == stamp and all(f in known.digests for f in families)
    )


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
) -> VerifyReport:
    """Verify every revision of ``inventory`` that ``chosen`` selects (see the module docstring)."""
    started = clock()
    state = state or State(None)
    known = {} if full else state.known()
    plans: list[tuple[CacheInventory, list[tuple[Item, Revision, Expected]]]] = []
    contents: dict[tuple[int, int], _Content] = {}
    by_path: dict[str, _Content | None] = {}  # each data path stat'ed once, however many links reach it
    for cache in inventory.caches:
        if not cache.exists:
            continue
        kind = kinds.get(cache.kind)
        rows = [(i, r, e) for i in cache.items for r in i.revisions if chosen(i, r) for e in _expected(kind, cache, i, r)]
        plans.append((cache, rows))
        for _, _, e in rows:
            if e.algorithm is None or e.data is None:
                continue
            if e.data in by_path:
                content = by_path[e.data]
            else:
                try:
                    st = os.stat(e.data)
                except OSError:
                    content = None  # gone: missing, below
                else:
                    content = contents.setdefault((st.st_dev, st.st_ino), _Content(e.data, st))
                by_path[e.data] = content
            if content is not None:
                content.families.add(_FAMILY[e.algorithm])
    todo = []
    for key, content in contents.items():
        old = known.get(key)
        if (
            old is not None
            and _unchanged(old, content.stamp, content.families)
            and not _due(key, old.hashed_at, started, recheck)
        ):
            content.known = old
        else:
            todo.append(content)
    total = sum(c.stamp[0] for c in todo)
    done_bytes = 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        # Largest first: a big shard started last runs alone at the end. Shards of 768, 512, 371
        # and 256 MiB on 2 jobs: 1.95x, against 1.76x in path order (benchmarks/bench_verify.py).
        for content in pool.map(_hash, sorted(todo, key=lambda c: (-c.stamp[0], c.path))):
            done_bytes += content.stamp[0]
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
    state.remember(fresh, stale, finished)
    caches = []
    seen: dict[str, tuple[_Content | None, int] | OSError] = {}  # each data path stat'ed again once, after the reads
    for cache, rows in plans:
        checks = tuple(_judge(cache, item, rev, e, contents, finished, seen) for item, rev, e in rows)
        result = CacheChecks(cache.kind, cache.root, checks)
        tally = Counter(f.status for f in checks)
        counts = [tally[v] for v in (Verdict.OK, Verdict.CORRUPT, Verdict.MISSING, Verdict.UNVERIFIABLE)]
        state.record_run(LastVerify(cache.kind, cache.root, finished, len(checks), *counts))
        caches.append(result)
    hashed = [c for c in todo if c.digest is not None]
    return VerifyReport(
        tuple(caches),
        started,
        finished,
        bytes_hashed=sum(c.digest.size for c in hashed if c.digest),
        files_hashed=len(hashed),
        warnings=tuple(state.warnings),
    )


def _content_now(
    path: str, contents: Mapping[tuple[int, int], _Content], seen: dict[str, tuple[_Content | None, int] | OSError]
) -> tuple[_Content | None, int] | OSError:
    """The content ``path`` holds now (None: not one this run looked at) and its size, or why it cannot be stat'ed.

    Once per path in a run's judging (many links share one blob); only what the verdict needs
    is kept, not the stat result (a 100,000-file cache has 60,000 blobs).
    """
    found = seen.get(path)
    if found is None:
        try:
            st = os.stat(path)
        except OSError as err:
            found = err
        else:
            found = (contents.get((st.st_dev, st.st_ino)), st.st_size)
        seen[path] = found
    return found


def _judge(
    cache: CacheInventory,
    item: Item,
    rev: Revision,
    e: Expected,
    contents: Mapping[tuple[int, int], _Content],
    now: float,
    seen: dict[str, tuple[_Content | None, int] | OSError],
) -> FileCheck:
    """The verdict on one file, its data stat'ed again after the reads (a blob gone or replaced meanwhile is no ``ok``).

    Built in one call (no ``dataclasses.replace`` of a base: a 100,000-file repeat run makes
    100,000 of them).
    """
    head = (cache.kind, cache.root, item.id, item.type, rev.revision, e.name, e.path)
    if e.algorithm is None:
        return FileCheck(*head, Verdict.UNVERIFIABLE, e.data, why=e.why or "no hash known")
    if e.data is None:
        return FileCheck(*head, Verdict.MISSING, None, e.algorithm, e.digest, why="a link to no data")
    found = _content_now(e.data, contents, seen)
    if isinstance(found, OSError):
        why = f"its data is gone ({found.strerror or found})"
        return FileCheck(*head, Verdict.MISSING, e.data, e.algorithm, e.digest, why=why)
    content, size_now = found
    if content is None or content.error:
        trouble = content.error if content else "changed while verified"
        return FileCheck(*head, Verdict.UNVERIFIABLE, e.data, e.algorithm, e.digest, size_bytes=size_now, why=trouble)
    if content.digest is not None:
        actual, hashed, at, size = content.digest.digests[_FAMILY[e.algorithm]], True, now, content.digest.size
        judged = identity(content.digest.st)
    elif content.known is not None:
        actual, hashed, at, size = content.known.digests[_FAMILY[e.algorithm]], False, content.known.hashed_at, content.stamp[0]
        judged = (*content.key, *content.stamp)
    else:  # pragma: no cover - every content is hashed or known
        return FileCheck(*head, Verdict.UNVERIFIABLE, e.data, e.algorithm, e.digest, why="not hashed")
    good = actual.startswith(e.digest or "") if e.algorithm == "sha256-prefix" else actual == e.digest
    return FileCheck(
        *head,
        Verdict.OK if good else Verdict.CORRUPT,
        e.data,
        e.algorithm,
        e.digest,
        actual,
        size,
        why=None if good else f"{e.algorithm} of its content differs from its name's",
        hashed=hashed,
        hashed_at=at,
        identity=judged,
    )
