"""Retention policies: pure functions from candidate units to decisions, the clock passed in.

Each policy looks at :class:`Candidate` records (one per revision: a model's unit of
deletion) and returns ``{path: Decision}`` for the units it has an opinion on. A decision
either *selects* a unit for deletion or *keeps* it, and always says which policy decided
and why, so a plan can show a reason for every unit. No policy reads the disk, the clock
or the environment; empty input gives ``{}``. How they combine is :mod:`hfcache.plan.build`'s job
(borg's ``do_prune`` shape: keep rules and protections veto, quotas run last).

>>> c = [Candidate(path=f"/c/m/{v}", item_id="m", revision=v, version=v, last_modified=i)
...      for i, v in enumerate(["1.0.0", "1.1.0", "2.0.0"])]
>>> sorted((p, d.keep) for p, d in keep_latest(c, n=1).items())
[('/c/m/1.0.0', False), ('/c/m/1.1.0', False), ('/c/m/2.0.0', True)]
>>> sorted(p for p, d in keep_latest(c, n=1, per="major").items() if d.keep)
['/c/m/1.1.0', '/c/m/2.0.0']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from itertools import groupby
from typing import NamedTuple

from packaging.version import Version

from hfcache.caches.versions import version_key
from hfcache.model import CacheInventory
from hfcache.plan.query import matching_glob

KEEP_PER = ("major", "minor")
AGE_BY = ("atime", "mtime", "use")
DAY = 86400.0
# How long junk stays after its last change unless a policy says otherwise: a download may
# still be writing a partial file, or about to link an orphan blob or fill an empty repo folder.
DEFAULT_JUNK_GRACE = 24 * 3600.0


@dataclass(frozen=True)
class Candidate:
    """One revision as the policies see it: identity, version and the times that age it.

    ``default`` marks the revision libraries load when asked for none (the hub's ``main``;
    a torch hub repo's ``main``/``master`` ref): a keep rule always keeps it.
    """

    path: str
    item_id: str
    revision: str
    kind: str = ""  # the cache kind (items of two kinds never group together)
    version: str | None = None
    refs: tuple[str, ...] = ()
    last_accessed: float = 0.0
    last_modified: float = 0.0
    size_bytes: int = 0
    default: bool = False
    # From the usage history (``hfcache.history``), when there is one: the last use it recorded
    # and how it was seen (:meth:`signal`), the UTC days it was used on, and since when it knows
    # the revision at all (None: no history of it).
    last_used: float = 0.0
    used_by: str | None = None
    use_days: tuple[int, ...] = ()
    watched_since: float | None = None
    unwatched_days: tuple[int, ...] = ()  # days no run looked: a use then may have gone unseen

    def time(self, age_by: str) -> float:
        """When it was last accessed, modified, or used (``use``: the history's last use, else the access time)."""
        if age_by == "use":
            return max(self.last_used, self.last_accessed)
        return self.last_accessed if age_by == "atime" else self.last_modified

    def signal(self, age_by: str) -> str | None:
        """Which signal :meth:`time` took, for a plan's reason (``use`` only): ``by python3 (history)``, ``(access time)``."""
        if age_by != "use":
            return None
        if self.last_used > self.last_accessed:
            return self.used_by or "(history)"
        return "(access time)"


class Word(str, Enum):
    """An enumeration whose members are their own words: in JSON, in text and in f-strings."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Rule(Word):
    """Which policy or rule decided about a unit (the first word of its reason in the plan)."""

    MAX_AGE = "max-age"
    KEEP_LATEST = "keep-latest"
    PROTECT = "protect"
    DAMAGED = "damaged"
    LAST_REVISION = "last-revision"
    MAX_SIZE = "max-size"
    MIN_FREE = "min-free"
    JUNK = "junk"
    KEEP = "keep"  # junk kept: too young, its download lock held, ...
    RECORDED = "recorded"  # a reason read back from a plan file, as it was written
    MIN_USES = "min-uses"  # used on fewer than N days of a window (LFU, from the usage history)
    NAMED = "named"  # hfcache rm: named on the command line
    VERIFY = "verify"  # hfcache verify --repair: found corrupt or missing (``subject`` says how)


class Case(Word):
    """Which case of its rule a decision is."""

    UNUSED = "unused"  # max-age: not used for longer than the limit
    RARE = "rare"  # min-uses: used on ``rank`` days of the ``limit`` seconds window, fewer than ``n``
    LATEST = "latest"  # keep-latest: among the n latest (``rank`` of ``n``)
    DEFAULT = "default"  # keep-latest: the revision libraries load by default
    OLDER = "older"  # keep-latest: older than the n latest
    UNVERSIONED = "unversioned"  # keep-latest per series: no version, no series to rank it in
    MATCHES = "matches"  # protect: the model id matches ``subject`` (a glob)
    DESIRED = "desired"  # protect: a manifest (``subject``) says this node must hold the revision (hfcache sync)
    BLOCKED = "blocked"  # damaged: the scan found ``subject`` (a warning)
    LAST = "last"  # last-revision, max-size, min-free: the model's last revision stays
    LRU = "lru"  # max-size, min-free: least recently used while over the target
    PARTIAL = "partial"  # junk: a partial download (``subject``: its scheme)
    ORPHAN = "orphan"  # junk: a blob no revision uses
    PAYLOAD = "payload"  # junk: a shared-store payload no repo links to
    EMPTY_REPO = "empty-repo"  # junk: a repo folder with nothing left
    LEFT_BY = "left-by"  # junk: what a removed revision (``subject``) left
    LOCK_HELD = "lock-held"  # keep: its download lock is held
    YOUNG = "young"  # keep: modified within the grace period
    NO_MANIFEST = "no-manifest"  # keep: a payload without a .refs manifest
    TEXT = "text"  # recorded: ``subject`` is the reason as written
    TARGET = "target"  # named: ``subject`` is the target as given, ``scope`` the refs that go with it
    WHOLE = "whole"  # named: the model's last revision, so the whole model goes
    FILE = "file"  # named: one file of a revision goes, the revision (and its refs) stay


class Decision(NamedTuple):
    """What one policy decided about one unit: ``keep`` or not, and why, as values.

    Like borg's ``KeepResult``: the rule and its case, the rank a keep rule gave, and the
    figures the decision was made on (``age`` and ``limit`` in seconds or bytes, ``by`` the
    time or order used). :func:`hfcache.output.words.describe` turns it into the sentence
    plans, tables and the audit log show.
    """

    policy: Rule
    case: Case
    keep: bool = False
    rank: int | None = None
    n: int | None = None
    scope: str | None = None  # the model (and version series) a rank is within
    by: str | None = None  # "atime"/"mtime" for ages, "version"/"last modified" for ranks, the series for per
    age: float | None = None
    limit: float | None = None
    subject: str | None = None  # a glob, a warning, a scheme, a commit, a recorded sentence
    held: bool | None = None  # a partial download's lock: held, free, or no lock (None)


def max_age(candidates: Iterable[Candidate], *, now: float, older_than: float, age_by: str = "atime") -> dict[str, Decision]:
    """Select units not accessed (or modified, with ``age_by="mtime"``) for longer than ``older_than`` seconds.

    >>> old = Candidate("/c/old", "m", "a", last_accessed=0.0)
    >>> new = Candidate("/c/new", "m", "b", last_accessed=90 * 86400.0)
    >>> {p: (d.policy.value, d.age / 86400) for p, d in max_age([old, new], now=100 * 86400.0, older_than=30 * 86400).items()}
    {'/c/old': ('max-age', 100.0)}
    """
    out = {}
    for c in candidates:
        age = now - c.time(age_by)
        if age > older_than:
            out[c.path] = Decision(Rule.MAX_AGE, Case.UNUSED, by=age_by, age=age, limit=older_than, subject=c.signal(age_by))
    return out


def min_uses(candidates: Iterable[Candidate], *, now: float, uses: int, window: float) -> dict[str, Decision]:
    """Select units used on fewer than ``uses`` distinct days (UTC) of the ``window`` seconds before ``now`` (LFU).

    Only a unit the history has watched for the whole window, and that is older than the
    window (last modified before it began), can be selected: a new download, or a history
    begun last week, has not had the time to be used ``uses`` times. A day on which no run
    looked at its cache counts as a possible use (a run sees only the latest access time).

    >>> watched = dict(watched_since=0.0, last_modified=0.0)
    >>> rare = Candidate("/c/rare", "m", "a", use_days=(95,), **watched)
    >>> hot = Candidate("/c/hot", "m", "b", use_days=(91, 95, 99), **watched)
    >>> new = Candidate("/c/new", "m", "c", watched_since=0.0, last_modified=95 * 86400.0)
    >>> sorted(min_uses([rare, hot, new], now=100 * 86400.0, uses=2, window=30 * 86400.0))
    ['/c/rare']
    """
    first = int((now - window) // DAY)
    if uses > int(now // DAY) - first + 1:
        return {}  # more days than the window holds: nothing could ever meet it (refused on the command line)
    out = {}
    for c in candidates:
        if c.watched_since is None or c.watched_since > now - window or c.last_modified > now - window:
            continue
        days = len({d for d in c.use_days if d >= first})
        # A day no run looked may have had a use no run saw: counted as one (a weekly run is no daily use count).
        possible = len({d for d in (*c.use_days, *c.unwatched_days) if d >= first})
        if possible < uses:
            out[c.path] = Decision(Rule.MIN_USES, Case.RARE, rank=days, n=uses, limit=window)
    return out


def _series(version: str, per: str) -> tuple[int, ...]:
    release = Version(version).release
    return release[:1] if per == "major" else (release + (0,))[:2]


def _order(group: list[Candidate]) -> tuple[list[Candidate], str]:
    """Newest first: by version when every revision has one, else by last modification."""
    if all(c.version for c in group):
        return sorted(group, key=lambda c: (version_key(c.version or ""), c.last_modified), reverse=True), "version"
    return sorted(group, key=lambda c: c.last_modified, reverse=True), "last modified"


def keep_latest(candidates: Iterable[Candidate], *, n: int, per: str | None = None) -> dict[str, Decision]:
    """Per model, keep the ``n`` latest revisions and select the others.

    Latest means highest version when every revision of the model has one, else most
    recently modified; different models are never compared. With ``per="major"`` (or
    ``"minor"``) the ``n`` latest of each version series are kept, and a revision without
    a version is kept (it cannot be placed in a series). The default revision (``main``)
    is always kept, on top of the ``n``.
    """
    if n < 1:
        raise ValueError("keep_latest needs n >= 1")
    out: dict[str, Decision] = {}
    ordered = sorted(candidates, key=lambda c: (c.kind, c.item_id))
    for (_, item_id), members in groupby(ordered, key=lambda c: (c.kind, c.item_id)):
        group = list(members)
        series: dict[tuple[int, ...] | None, list[Candidate]] = {}
        if per:
            for c in group:
                key = _series(c.version, per) if c.version else None
                series.setdefault(key, []).append(c)
        else:
            series[None] = group
        for key, members_ in series.items():
            if per and key is None:
                for c in members_:
                    out[c.path] = Decision(Rule.KEEP_LATEST, Case.UNVERSIONED, keep=True, by=per)
                continue
            ranked, by = _order(members_)
            scope = f"{item_id} {per} series {'.'.join(map(str, key))}" if per and key else item_id
            for rank, c in enumerate(ranked, start=1):
                if rank <= n:
                    out[c.path] = Decision(Rule.KEEP_LATEST, Case.LATEST, keep=True, rank=rank, n=n, scope=scope, by=by)
                elif c.default:
                    out[c.path] = Decision(Rule.KEEP_LATEST, Case.DEFAULT, keep=True)
                else:
                    out[c.path] = Decision(Rule.KEEP_LATEST, Case.OLDER, rank=rank, n=n, scope=scope, by=by)
    return out


def matches(glob: str) -> Decision:
    """The decision of a protection: the model id matches ``glob``."""
    return Decision(Rule.PROTECT, Case.MATCHES, keep=True, subject=glob)


def listed(manifest: str) -> Decision:
    """The decision of a revision a manifest wants on this node (``hfcache sync``): kept, by every policy."""
    return Decision(Rule.PROTECT, Case.DESIRED, keep=True, subject=manifest)


def protect(candidates: Iterable[Candidate], *, globs: Iterable[str]) -> dict[str, Decision]:
    """Keep every unit whose model id matches one of ``globs`` (case-insensitive, ``meta-llama/*``).

    >>> list(protect([Candidate("/c/x", "Meta-Llama/L3", "a")], globs=["meta-llama/*"]).values())[0].subject
    'meta-llama/*'
    """
    patterns = tuple(globs)
    out = {}
    for c in candidates:
        hit = matching_glob(c.item_id, patterns)
        if hit is not None:
            out[c.path] = matches(hit)
    return out


def lru_order(candidates: Iterable[Candidate], *, age_by: str = "atime") -> list[Candidate]:
    """Least recently used first (ties: oldest modification, then path, so the order is stable)."""
    return sorted(candidates, key=lambda c: (c.time(age_by), c.last_modified, c.path))


def evict_lru(
    ordered: Iterable[Candidate],
    *,
    excess: int,
    free: Callable[[Candidate], int],
    decision: Callable[[Candidate], Decision],
    allowed: Callable[[Candidate], Decision | None] = lambda c: None,
) -> tuple[dict[str, Decision], dict[str, Decision], int]:
    """Select units in ``ordered`` order (least recently used first) until they free ``excess`` bytes.

    ``free(c)`` removes ``c`` from the caller's count and returns what that freed (so a
    blob shared by two units is counted once); ``allowed(c)`` returns a keep decision for
    a unit that may not go (the last revision of a model, for instance), else None.
    Returns the selected units, the units kept by ``allowed`` that would otherwise have
    gone, and the bytes still missing (0 or less once the target is met). Used by the
    ``max-size`` and ``min-free`` policies, which differ only in how ``excess`` is measured.

    >>> cs = [Candidate(f"/c/{i}", "m", str(i), size_bytes=10) for i in range(3)]
    >>> sel, saved, left = evict_lru(cs, excess=15, free=lambda c: c.size_bytes,
    ...                              decision=lambda c: Decision(Rule.MAX_SIZE, Case.LRU))
    >>> sorted(sel), left
    (['/c/0', '/c/1'], -5)
    """
    selected: dict[str, Decision] = {}
    saved: dict[str, Decision] = {}
    for c in ordered:
        if excess <= 0:
            break
        veto = allowed(c)
        if veto is not None:
            saved[c.path] = veto
            continue
        excess -= free(c)
        selected[c.path] = decision(c)
    return selected, saved, excess


def junk(cache: CacheInventory, *, now: float, grace: float) -> dict[str, tuple[Decision, ...]]:
    """Select a cache's junk: partial downloads, orphan blobs, unreferenced payloads, leftovers.

    Each piece gets its selection (``junk``, the case saying what it is) and, when it must
    stay, a keep decision after it: modified within ``grace`` seconds (a download may still
    be writing or about to link it), its download lock held, or a shared payload without
    the ``.refs`` manifest the hub's own sweep needs. In the cache's order: partials,
    orphans, payloads, leftovers.

    >>> from hfcache.model import PartialFile
    >>> c = CacheInventory("k", "/c", partial_files=(PartialFile("/c/p", None, 5, 0.0, "resumable", lock_held=True),))
    >>> [(d.policy.value, d.case.value) for d in junk(c, now=1e6, grace=3600)["/c/p"]]
    [('junk', 'partial'), ('keep', 'lock-held')]
    """

    def young(mtime: float) -> Decision | None:
        age = now - mtime
        return Decision(Rule.KEEP, Case.YOUNG, keep=True, age=age, limit=grace) if age <= grace else None

    def decisions(select: Decision, keep: Decision | None) -> tuple[Decision, ...]:
        return (select,) if keep is None else (select, keep)

    out: dict[str, tuple[Decision, ...]] = {}
    for p in cache.partial_files:
        held = Decision(Rule.KEEP, Case.LOCK_HELD, keep=True) if p.lock_held else None
        select = Decision(Rule.JUNK, Case.PARTIAL, age=now - p.last_modified, subject=p.scheme, held=p.lock_held)
        out[p.path] = decisions(select, held or young(p.last_modified))
    for o in cache.orphan_files:
        out[o.path] = decisions(Decision(Rule.JUNK, Case.ORPHAN), young(o.last_modified))
    for s in cache.unreferenced_payloads:
        unlisted = None if s.has_manifest else Decision(Rule.KEEP, Case.NO_MANIFEST, keep=True)
        out[s.path] = decisions(Decision(Rule.JUNK, Case.PAYLOAD), young(s.last_modified) or unlisted)
    for lo in cache.leftovers:
        if lo.commit is None:  # a download may be about to fill a fresh repo folder: the grace applies
            out[lo.path] = decisions(Decision(Rule.JUNK, Case.EMPTY_REPO), young(lo.last_modified))
        else:
            out[lo.path] = (Decision(Rule.JUNK, Case.LEFT_BY, subject=lo.commit),)
    return out
