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
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one file of one revision."""

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
    """One file content to hash (one ``(dev, ino)``) and the digests asked of it."""

    def __init__(self, path: str, st: os.stat_result) -> None:
        self.path = path
        self.st = st
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


RECHECK = 30 * 86400.0  # an unchanged file is read again after 15 to 30 days: bit rot moves no timestamp


def _due(key: tuple[int, int], hashed_at: float, now: float, recheck: float) -> bool:
    """Whether a content hashed at ``hashed_at`` is read again now: after ``recheck`` times 0.5 to 1.

    The factor is fixed per ``(dev, ino)``, so a cache hashed in one night is read again over
    a fortnight of nightly runs, not all in one of them.
    """
    spread = ((key[0] * 1_000_003 + key[1]) * 2_654_435_761 % 2**32) / 2**32
    return now - hashed_at >= recheck * (0.5 + 0.5 * spread)


def _unchanged(known: Known | None, st: os.stat_result, families: Iterable[str]) -> bool:
    return (
        known is not None
        and (known.size, known.mtime_ns, known.ctime_ns) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        and all(f in known.digests for f in families)
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
    for cache in inventory.caches:
        if not cache.exists:
            continue
        kind = kinds.get(cache.kind)
        rows = [(i, r, e) for i in cache.items for r in i.revisions if chosen(i, r) for e in _expected(kind, cache, i, r)]
        plans.append((cache, rows))
        for _, _, e in rows:
            if e.algorithm is None or e.data is None:
                continue
            try:
                st = os.stat(e.data)
            except OSError:
                continue  # gone: missing, below
            content = contents.setdefault((st.st_dev, st.st_ino), _Content(e.data, st))
            content.families.add(_FAMILY[e.algorithm])
    todo = []
    for key, content in contents.items():
        old = known.get(key)
        if old is not None and _unchanged(old, content.st, content.families) and not _due(key, old.hashed_at, started, recheck):
            content.known = old
        else:
            todo.append(content)
    total = sum(c.st.st_size for c in todo)
    done_bytes = 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for content in pool.map(_hash, sorted(todo, key=lambda c: c.path)):
            done_bytes += content.st.st_size
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
    state.remember(fresh, contents.keys(), finished)
    caches = []
    for cache, rows in plans:
        checks = tuple(_judge(cache, item, rev, e, contents, finished) for item, rev, e in rows)
        result = CacheChecks(cache.kind, cache.root, checks)
        counts = [result.count(v) for v in (Verdict.OK, Verdict.CORRUPT, Verdict.MISSING, Verdict.UNVERIFIABLE)]
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


def _judge(
    cache: CacheInventory, item: Item, rev: Revision, e: Expected, contents: Mapping[tuple[int, int], _Content], now: float
) -> FileCheck:
    base = FileCheck(cache.kind, cache.root, item.id, item.type, rev.revision, e.name, e.path, Verdict.UNVERIFIABLE, e.data)
    if e.algorithm is None:
        return _replace(base, why=e.why or "no hash known")
    expect = dict(algorithm=e.algorithm, expected=e.digest)
    if e.data is None:
        return _replace(base, status=Verdict.MISSING, why="a link to no data", **expect)
    try:
        st = os.stat(e.data)
    except OSError as err:
        return _replace(base, status=Verdict.MISSING, why=f"its data is gone ({err.strerror or err})", **expect)
    content = contents.get((st.st_dev, st.st_ino))
    if content is None or content.error:
        return _replace(base, why=content.error if content else "changed while verified", size_bytes=st.st_size, **expect)
    if content.digest is not None:
        actual, hashed, at, size = content.digest.digests[_FAMILY[e.algorithm]], True, now, content.digest.size
        judged = identity(content.digest.st)
    elif content.known is not None:
        actual, hashed, at, size = content.known.digests[_FAMILY[e.algorithm]], False, content.known.hashed_at, content.st.st_size
        judged = identity(content.st)
    else:  # pragma: no cover - every content is hashed or known
        return _replace(base, why="not hashed")
    good = actual.startswith(e.digest or "") if e.algorithm == "sha256-prefix" else actual == e.digest
    return _replace(
        base,
        status=Verdict.OK if good else Verdict.CORRUPT,
        actual=actual,
        size_bytes=size,
        hashed=hashed,
        hashed_at=at,
        identity=judged,
        why=None if good else f"{e.algorithm} of its content differs from its name's",
        **expect,
    )


def _replace(check: FileCheck, **changes: object) -> FileCheck:
    from dataclasses import replace

    return replace(check, **changes)  # type: ignore[arg-type]
