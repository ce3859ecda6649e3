"""Decisions in words: the sentence a plan, its tables and the audit log give for each reason.

A :class:`~hfcache.plan.policies.Decision` holds values (its rule and case, a rank, ages
and limits); this is the one place they become text. ``describe(d)`` is ``"<rule>: <why>"``,
the form the plan's JSON contract carries in ``reasons``.

>>> from hfcache.plan.policies import Case, Decision, Rule
>>> describe(Decision(Rule.MAX_AGE, Case.UNUSED, by="atime", age=100 * 86400.0, limit=30 * 86400.0))
'max-age: not accessed for 100d (limit 30d)'
>>> describe(Decision(Rule.KEEP_LATEST, Case.LATEST, keep=True, rank=1, n=2, scope="org/m", by="version"))
'keep-latest: #1 of the 2 latest of org/m (by version)'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from hfcache.plan.policies import Case, Decision, Rule
from hfcache.units import describe_age, describe_size

_LOCK = {True: "lock held", False: "lock free", None: "no lock"}


def _verb(by: str | None) -> str:
    return {"atime": "accessed", "use": "used"}.get(by or "", "modified")


def _unused(d: Decision) -> str:
    if d.by == "use":  # the signal that decided: "by python3 (history)", "(access time)"
        return f"last used {_age(d.age)} ago {d.subject or ''} (limit {_age(d.limit)})".replace("  ", " ")
    return f"not {_verb(d.by)} for {_age(d.age)} (limit {_age(d.limit)})"


def _age(seconds: float | None) -> str:
    return describe_age(seconds or 0.0)


def _bytes(limit: float | None) -> str:
    return describe_size(limit or 0)


_WHY: dict[Case, Callable[[Decision], str]] = {
    Case.UNUSED: _unused,
    Case.RARE: lambda d: (
        f"used on {d.rank} day{'' if d.rank == 1 else 's'} in the last {_age(d.limit)}, fewer than {d.n} (history)"
    ),
    Case.LATEST: lambda d: f"#{d.rank} of the {d.n} latest of {d.scope} (by {d.by})",
    Case.DEFAULT: lambda d: "default revision (main): what libraries load",
    Case.OLDER: lambda d: f"older than the {d.n} latest of {d.scope} (by {d.by})",
    Case.UNVERSIONED: lambda d: f"no version, so no {d.by} series to rank it in",
    Case.MATCHES: lambda d: f"model matches {d.subject!r}",
    Case.DESIRED: lambda d: f"listed in {d.subject} (hfcache sync): this node keeps it",
    Case.BLOCKED: lambda d: f"not deletable: {d.subject}",
    Case.PARTIAL: lambda d: f"{d.subject} partial download, {_age(d.age)} old, {_LOCK[d.held]}",
    Case.ORPHAN: lambda d: "blob no revision uses",
    Case.PAYLOAD: lambda d: "shared-store payload no repo links to",
    Case.EMPTY_REPO: lambda d: "repo folder with no revision, ref or blob left",
    Case.LEFT_BY: lambda d: f"left by removed revision {(d.subject or '')[:12]}",
    Case.LOCK_HELD: lambda d: "its download lock is held",
    Case.YOUNG: lambda d: f"modified {_age(d.age)} ago, within the {_age(d.limit)} grace period",
    Case.NO_MANIFEST: lambda d: "no .refs manifest (the hub never deletes those)",
    Case.TARGET: lambda d: f"{d.subject!r} on the command line" + (f"; its refs go too: {d.scope}" if d.scope else ""),
    Case.FILE: lambda d: f"{d.subject!r} on the command line: this file goes, its revision stays",
    Case.WHOLE: lambda d: (
        f"{d.subject!r} on the command line: the whole model goes" + (f"; its refs go too: {d.scope}" if d.scope else "")
    ),
}


def _last(d: Decision) -> str:
    if d.policy is Rule.LAST_REVISION:
        return f"last revision of {d.scope}: pass --allow-remove-all to remove it"
    return f"last revision of {d.scope} kept: pass --allow-remove-all to evict it"


def _lru(d: Decision) -> str:
    used = f"least recently used ({_verb(d.by)} {_age(d.age)} ago{' ' + d.subject if d.subject else ''})"
    if d.policy is Rule.MIN_FREE:
        return f"{used} until {_bytes(d.limit)} are free"
    return f"{used} while the cache is over {_bytes(d.limit)}"


def describe(d: Decision) -> str:
    """One decision as the sentence plans show: ``"<rule>: <why>"``."""
    if d.case is Case.TEXT:
        return d.subject or ""  # read back from a plan file: as it was written
    if d.case is Case.LAST:
        return f"{d.policy}: {_last(d)}"
    if d.case is Case.LRU:
        return f"{d.policy}: {_lru(d)}"
    if d.policy is Rule.VERIFY:
        return f"{d.policy}: {d.subject}; {_REPAIR.get(d.case, '')}" + (f"; its refs go too: {d.scope}" if d.scope else "")
    return f"{d.policy}: {_WHY[d.case](d)}"


# hfcache verify --repair: what goes with a file found corrupt or missing (the library downloads it again).
_REPAIR = {
    Case.FILE: "this file goes, its revision stays",
    Case.TARGET: "the revision goes (its kind removes no single file)",
    Case.WHOLE: "the whole model goes (its kind removes no single file)",
}


def describe_all(decisions: Iterable[Decision]) -> list[str]:
    return [describe(d) for d in decisions]


def recorded(text: str) -> Decision:
    """A reason read back from a plan file: kept as written (``describe`` gives the text back)."""
    return Decision(Rule.RECORDED, Case.TEXT, subject=text)
