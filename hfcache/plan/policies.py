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
from itertools import groupby

from packaging.version import Version

from hfcache.caches.versions import version_key
from hfcache.plan.query import matching_glob
from hfcache.units import describe_age

KEEP_PER = ("major", "minor")
AGE_BY = ("atime", "mtime")


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

    def time(self, age_by: str) -> float:
        return self.last_accessed if age_by == "atime" else self.last_modified


@dataclass(frozen=True)
class Decision:
    """What one policy decided about one unit: ``keep`` or not, and why."""

    policy: str
    reason: str
    keep: bool = False

    def __str__(self) -> str:
        return f"{self.policy}: {self.reason}"


def max_age(candidates: Iterable[Candidate], *, now: float, older_than: float, age_by: str = "atime") -> dict[str, Decision]:
    """Select units not accessed (or modified, with ``age_by="mtime"``) for longer than ``older_than`` seconds.

    >>> old = Candidate("/c/old", "m", "a", last_accessed=0.0)
    >>> new = Candidate("/c/new", "m", "b", last_accessed=90 * 86400.0)
    >>> {p: str(d) for p, d in max_age([old, new], now=100 * 86400.0, older_than=30 * 86400).items()}
    {'/c/old': 'max-age: not accessed for 100d (limit 30d)'}
    """
    verb = "accessed" if age_by == "atime" else "modified"
    out = {}
    for c in candidates:
        age = now - c.time(age_by)
        if age > older_than:
            out[c.path] = Decision("max-age", f"not {verb} for {describe_age(age)} (limit {describe_age(older_than)})")
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
                    out[c.path] = Decision("keep-latest", f"no version, so no {per} series to rank it in", keep=True)
                continue
            ranked, by = _order(members_)
            scope = f"{item_id} {per} series {'.'.join(map(str, key))}" if per and key else item_id
            for rank, c in enumerate(ranked, start=1):
                if rank <= n:
                    out[c.path] = Decision("keep-latest", f"#{rank} of the {n} latest of {scope} (by {by})", keep=True)
                elif c.default:
                    out[c.path] = Decision("keep-latest", "default revision (main): what libraries load", keep=True)
                else:
                    out[c.path] = Decision("keep-latest", f"older than the {n} latest of {scope} (by {by})")
    return out


def protect(candidates: Iterable[Candidate], *, globs: Iterable[str]) -> dict[str, Decision]:
    """Keep every unit whose model id matches one of ``globs`` (case-insensitive, ``meta-llama/*``).

    >>> list(protect([Candidate("/c/x", "Meta-Llama/L3", "a")], globs=["meta-llama/*"]).values())[0].reason
    "model matches 'meta-llama/*'"
    """
    patterns = tuple(globs)
    out = {}
    for c in candidates:
        hit = matching_glob(c.item_id, patterns)
        if hit is not None:
            out[c.path] = Decision("protect", f"model matches {hit!r}", keep=True)
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
    ...                              decision=lambda c: Decision("max-size", "over quota"))
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
