"""The usage history in the state database (:mod:`hfcache.state`): recorded after each scan, read by plans and ``history``.

A use is a day (UTC) on which a revision was seen used: its access time moved past the last
one recorded (the day of that access time), or a process held one of its files when a run
looked (that day, with the program's name). A first sight of a revision records its access
time as a use too: it was read (downloaded, at least) then. What a run cannot see is not a
use: a job that starts and ends between two runs of ``metrics`` on a ``noatime`` mount
leaves no trace, so a cron of ``metrics`` every 15 minutes is what makes the history whole.

Writes are one transaction per run, of what changed only: a revision's row when its size or
access time moved, or once a day to say it is still there; a model's size when it changed.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from typing import Any, NamedTuple

from hfcache.history.observe import Observation
from hfcache.model import Use
from hfcache.state import StateDB

DAY = 86400.0
SEEN_EVERY = DAY  # a revision's row is marked seen again at most this often
CLOCK_SLACK = 60.0  # an access time this far after the run is still the run's clock's
PLAUSIBLE_GAP = 30 * DAY  # a run this long after the newest sample may be a wrong clock: no roll-up then
ROLL_UP_EVERY = DAY
# (age, bucket): older samples are thinned to one per cache and bucket; past the last age they go.
SAMPLE_TIERS = ((14 * DAY, 0.0), (180 * DAY, 3600.0), (730 * DAY, DAY))
FORGET_AFTER = 400 * DAY  # uses, size changes and revisions unseen for this long go


def day_of(t: float) -> int:
    """The UTC day number (days since 1970-01-01) of the time ``t``."""
    return int(t // DAY)


class Sample(NamedTuple):
    at: float
    kind: str
    root: str
    size: int
    device: int | None
    fs_total: int | None
    fs_free: int | None


def _roots(obs: Observation) -> list[bytes]:
    return sorted({_b(c.root) for c in obs.caches})


# Paths are stored as their bytes (BLOB): a file name need not be UTF-8, and SQLite's text must
# be. Names shown only (model ids, revisions, programs) are stored as text, an odd byte replaced.
_b = os.fsencode


def _text(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _in(column: str, values: Iterable[object]) -> tuple[str, tuple[object, ...]]:
    values = tuple(values)
    return f"{column} IN ({', '.join('?' * len(values))})", values


def record(state: StateDB, obs: Observation) -> None:
    """Add what ``obs`` saw to the history (one transaction; a failure is a warning on ``state``)."""
    if state.db is None or not obs.caches:
        return
    now = obs.at
    roots = _roots(obs)
    with state.writing() as db:
        if db is None:
            return
        where, args = _in("root", roots)
        (previous,) = db.execute(f"SELECT max(at) FROM samples WHERE {where}", args).fetchone()
        db.executemany(
            "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)", [(now, c.kind, _b(c.root), *c[2:]) for c in obs.caches]
        )
        known = {
            path: (size, atime, seen)
            for path, size, atime, seen in db.execute(f"SELECT path, size, atime, last_seen FROM revisions WHERE {where}", args)
        }
        rows = []
        uses: list[tuple[bytes, int, float, str, str | None]] = []
        for r in obs.revisions:
            path = _b(r.path)
            old = known.get(path)
            row = (path, r.kind, _b(r.root), _text(r.item), _text(r.revision), r.size)
            if old is None:
                rows.append((*row, r.atime, now, now))
                if r.atime > 0:
                    uses.append(_atime_use(path, r.atime, now))
                continue
            size, atime, seen = old
            moved = abs(r.atime - atime) > 1.0  # (a second's slack: file systems round access times)
            if moved:
                uses.append(_atime_use(path, r.atime, now))
            if r.size != size or moved or seen < now - SEEN_EVERY:
                rows.append((*row, r.atime, now, now))  # the access time as read: not a maximum a future one would freeze
        db.executemany(
            "INSERT INTO revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
            "size = excluded.size, atime = excluded.atime, last_seen = excluded.last_seen",
            rows,
        )
        uses.extend((_b(path), day_of(now), now, "process", _text(",".join(programs))) for path, programs in obs.held.items())
        db.executemany(
            "INSERT INTO uses VALUES (?, ?, ?, ?, ?) ON CONFLICT (path, day) DO UPDATE SET "
            "at = max(at, excluded.at), "
            "source = CASE WHEN excluded.at >= at THEN excluded.source ELSE source END, "
            "program = CASE WHEN excluded.at >= at AND excluded.program IS NOT NULL THEN excluded.program ELSE program END",
            uses,
        )
        sizes = {
            (root, item): size
            for root, item, size, _ in db.execute(
                f"SELECT root, item, size, max(at) FROM item_sizes WHERE {where} GROUP BY root, item", args
            )
        }
        now_sizes = {(_b(root), _text(item)): size for root, item, size in obs.items}
        changed = [(root, item, now, size) for (root, item), size in now_sizes.items() if sizes.get((root, item)) != size]
        gone = [(root, item, now, 0) for (root, item), size in sizes.items() if size and (root, item) not in now_sizes]
        db.executemany("INSERT OR REPLACE INTO item_sizes VALUES (?, ?, ?, ?)", changed + gone)
        _roll_up(db, now, previous)


def _atime_use(path: bytes, atime: float, now: float) -> tuple[bytes, int, float, str, str | None]:
    """The use an access time that moved says: on its day; one after this run (a clock that was ahead) counts now."""
    when = atime if atime <= now + CLOCK_SLACK else now
    return (path, day_of(when), when, "atime", None)


def _roll_up(db: sqlite3.Connection, now: float, previous: float | None) -> None:
    """Thin old samples and forget old uses (:data:`SAMPLE_TIERS`, :data:`FORGET_AFTER`), at most once a day.

    Only when the clock moved plausibly since the newest earlier sample (``previous``): one run
    with the clock years ahead must not take every use with it (the uses would then be
    forgotten while the revisions' first sight stays, and a model used every day would look
    unused). A mark of the last roll-up in the future is ignored.
    """
    if previous is not None and not previous - CLOCK_SLACK <= now <= previous + PLAUSIBLE_GAP:
        return
    row = db.execute("SELECT value FROM meta WHERE key = 'history_rolled_up'").fetchone()
    if row is not None and now - ROLL_UP_EVERY < float(row[0]) <= now:
        return
    newer = 0.0
    for age, bucket in SAMPLE_TIERS:
        if bucket:
            db.execute(
                "DELETE FROM samples WHERE at < ? AND at >= ? AND rowid NOT IN ("
                "SELECT max(rowid) FROM samples WHERE at < ? AND at >= ? GROUP BY root, CAST(at / ? AS INTEGER))",
                (now - newer, now - age, now - newer, now - age, bucket),
            )
        newer = age
    db.execute("DELETE FROM samples WHERE at < ?", (now - SAMPLE_TIERS[-1][0],))
    cut = now - FORGET_AFTER
    db.execute("DELETE FROM uses WHERE at < ?", (cut,))
    db.execute("DELETE FROM revisions WHERE last_seen < ?", (cut,))
    # A model's size changes older than the cut go, but its last size before the cut stays (what it started from).
    db.execute(
        "DELETE FROM item_sizes WHERE at < ? AND rowid NOT IN "
        "(SELECT max(rowid) FROM item_sizes WHERE at < ? GROUP BY root, item)",
        (cut, cut),
    )
    db.execute("INSERT OR REPLACE INTO meta VALUES ('history_rolled_up', ?)", (repr(now),))


# -- reading ---------------------------------------------------------------------------------


def _read(state: StateDB, what: str, query: str, args: tuple[object, ...] = ()) -> list[Any]:
    if state.db is None:
        return []
    try:
        return list(state.db.execute(query, args))
    except sqlite3.Error as e:
        state._guard(f"reading {what}", e)  # noqa: SLF001 - the one error path of the state database
        return []


def usage(state: StateDB, roots: Iterable[str], *, since: float, now: float | None = None) -> dict[str, Use]:
    """Each recorded revision of ``roots`` (by path): its last use, its use days from ``since`` on, and the days
    from then to ``now`` (default: the newest sample) on which no run looked at its cache."""
    roots = list(roots)
    where, args = _in("r.root", map(_b, roots))
    rows = _read(
        state,
        "uses",
        f"SELECT r.path, r.root, r.first_seen, max(u.at), u.source, u.program FROM revisions r "
        f"LEFT JOIN uses u ON u.path = r.path WHERE {where} GROUP BY r.path",
        args,
    )
    days: dict[bytes, list[int]] = {}
    query = (
        f"SELECT u.path, u.day FROM uses u JOIN revisions r ON r.path = u.path WHERE {where} AND u.day >= ? "
        "ORDER BY u.path, u.day"
    )
    for path, day in _read(state, "uses", query, (*args, day_of(since))):
        days.setdefault(path, []).append(day)
    watched: dict[bytes, set[int]] = {}
    newest = since
    swhere, sargs = _in("root", map(_b, roots))
    query = f"SELECT root, CAST(at / 86400 AS INTEGER), max(at) FROM samples WHERE {swhere} AND at >= ? GROUP BY 1, 2"
    for root, day, at in _read(state, "samples", query, (*sargs, day_of(since) * DAY)):  # whole days: a run that day
        watched.setdefault(root, set()).add(day)
        newest = max(newest, at)
    every = range(day_of(since), day_of(newest if now is None else now) + 1)
    unwatched = {root: tuple(d for d in every if d not in seen) for root, seen in watched.items()}
    return {
        os.fsdecode(path): Use(last or 0.0, source, program, tuple(days.get(path, ())), first, unwatched.get(root, tuple(every)))
        for path, root, first, last, source, program in rows
    }


def samples(state: StateDB, *, since: float, roots: Iterable[str] | None = None) -> list[Sample]:
    """The samples taken from ``since`` on (of ``roots``, or of every cache), oldest first."""
    where, args = _in("root", map(_b, roots)) if roots is not None else ("1", ())
    columns = "at, kind, root, size, device, fs_total, fs_free"  # by name: a newer hfcache may add columns
    rows = _read(state, "samples", f"SELECT {columns} FROM samples WHERE at >= ? AND {where} ORDER BY at", (since, *args))
    return [Sample(at, kind, os.fsdecode(root), *rest) for at, kind, root, *rest in rows]


def size_changes(state: StateDB, roots: Iterable[str]) -> dict[tuple[str, str], list[tuple[float, int]]]:
    """Each model's recorded sizes (``(root, model id)`` -> ``[(time, size)]``, oldest first); 0 once it was gone."""
    where, args = _in("root", map(_b, roots))
    out: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for root, item, at, size in _read(
        state, "sizes", f"SELECT root, item, at, size FROM item_sizes WHERE {where} ORDER BY at", args
    ):
        out.setdefault((os.fsdecode(root), item), []).append((at, size))
    return out


class ModelUse(NamedTuple):
    """One model's uses from ``since`` on: the UTC days, and its last use (when, how seen, by what programs)."""

    root: str
    item: str
    days: tuple[int, ...]
    last: float
    source: str | None
    program: str | None


def model_uses(state: StateDB, roots: Iterable[str], *, since: float) -> list[ModelUse]:
    """Per model of ``roots`` (its revisions together), what :class:`ModelUse` says; in model order."""
    where, args = _in("r.root", map(_b, roots))
    days: dict[tuple[bytes, str], set[int]] = {}
    last: dict[tuple[bytes, str], tuple[float, str | None, str | None]] = {}
    query = (
        f"SELECT r.root, r.item, u.day, u.at, u.source, u.program FROM revisions r JOIN uses u ON u.path = r.path WHERE {where}"
    )
    for root, item, day, at, source, program in _read(state, "uses", query, args):
        key = (root, item)
        if at >= since:
            days.setdefault(key, set()).add(day)
        if at > last.get(key, (0.0, None, None))[0]:
            last[key] = (at, source, program)
    return [
        ModelUse(os.fsdecode(root), item, tuple(sorted(days.get((root, item), ()))), *last[(root, item)])
        for root, item in sorted(last)
    ]


def recorded_caches(state: StateDB) -> list[tuple[str, str]]:
    """Every ``(kind, root)`` the history has samples of."""
    return [(kind, os.fsdecode(root)) for kind, root in _read(state, "samples", "SELECT DISTINCT kind, root FROM samples")]


def record_prune(state: StateDB, at: float, runs: Iterable[tuple[str, str, int, int]]) -> None:
    """Record a prune that ran: per cache (kind, root), the units it deleted and those that failed."""
    with state.writing() as db:
        if db is not None:
            db.executemany(
                "INSERT OR REPLACE INTO prune_runs VALUES (?, ?, ?, ?, ?)",
                [(_b(root), kind, at, deleted, failed) for kind, root, deleted, failed in runs],
            )


def last_prunes(state: StateDB) -> dict[str, tuple[float, int, int]]:
    """Per cache root, the last prune that ran: (when, units deleted, units failed)."""
    rows = _read(state, "prune runs", "SELECT root, at, deleted, failed FROM prune_runs")
    return {os.fsdecode(root): (at, deleted, failed) for root, at, deleted, failed in rows}
