"""``verify``'s part of the state database (:mod:`hfcache.state`): digests of files unchanged since, last verifies.

- ``digests``: one row per file content hashed, keyed by ``(dev, ino)``, with the size,
  mtime and ctime (nanoseconds) it had, its ``sha256`` and/or ``git_sha1``, and when it was
  hashed. A file whose identity and times are all unchanged is not read again (``verify``
  without ``--full``); any write to it moves its mtime or ctime.
- ``verify_runs``: per cache, when a verify finished and what it counted (for ``metrics``).
- ``verify_memos``: per repo folder a verify judged whole and found sound, what it looked like
  and what was counted (:mod:`hfcache.verify.memo`): while it is unchanged, it is not walked again.

Its size stays bounded: rows of files, and memos, not seen by a verify for 90 days are removed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from array import array
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import NamedTuple

from hfcache.state import StateDB, default_state_path
from hfcache.verify.memo import FIELDS, Memo

__all__ = ["FORGET_AFTER", "Known", "LastVerify", "State", "default_state_path", "read_last_verifies"]

FORGET_AFTER = 90 * 86400.0  # rows of files no verify saw for this long go


class Known(NamedTuple):
    """A file's content as an earlier run hashed it."""

    size: int
    mtime_ns: int
    ctime_ns: int
    digests: dict[str, str]
    hashed_at: float
    seen_at: float = 0.0


class LastVerify(NamedTuple):
    kind: str
    root: str
    finished_at: float
    files: int
    ok: int
    corrupt: int
    missing: int
    unverifiable: int


class State(StateDB):
    """The state database as ``verify`` uses it (see :class:`hfcache.state.StateDB`)."""

    # -- digests ---------------------------------------------------------------------------

    def known(self) -> dict[tuple[int, int], Known]:
        """Every file hashed before, by ``(dev, ino)`` (read at once: one query, not one per file)."""
        if self.db is None:
            return {}
        try:
            rows = self.db.execute("SELECT dev, ino, size, mtime_ns, ctime_ns, sha256, git_sha1, hashed_at, seen_at FROM digests")
            out = {}
            for dev, ino, size, mtime_ns, ctime_ns, sha256, git_sha1, hashed_at, seen_at in rows:
                digests = {}
                if sha256:
                    digests["sha256"] = sha256
                if git_sha1:
                    digests["git-sha1"] = git_sha1
                out[(dev, ino)] = Known(size, mtime_ns, ctime_ns, digests, hashed_at, seen_at)
            return out
        except sqlite3.Error as e:
            self._guard("reading", e)
            return {}

    def remember(
        self,
        rows: Iterable[tuple[os.stat_result, dict[str, str]]],
        seen: Iterable[tuple[int, int]],
        now: float,
        rotten: Collection[tuple[int, int]] = (),
    ) -> None:
        """Record the digests just computed (``rows``: each file's every digest known), mark ``seen``, forget the long unseen.

        Every memo holding one of the ``rotten`` contents (found corrupt: ``(dev, ino)``) goes in
        the same transaction, so that no memo outlives the digest that says its content is bad.
        """
        if self.db is None:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        st.st_dev,
                        st.st_ino,
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        d.get("sha256"),
                        d.get("git-sha1"),
                        now,
                        now,
                    )
                    for st, d in rows
                ],
            )
            self.db.executemany("UPDATE digests SET seen_at = ? WHERE dev = ? AND ino = ?", [(now, d, i) for d, i in seen])
            self.db.execute("DELETE FROM digests WHERE seen_at < ?", (now - FORGET_AFTER,))
            self.db.execute(_MEMO_TABLE)
            self.db.execute("DELETE FROM verify_memos WHERE seen_at < ?", (now - FORGET_AFTER,))
            if rotten:
                memos = self.db.execute("SELECT path, contents FROM verify_memos").fetchall()
                self.db.executemany("DELETE FROM verify_memos WHERE path = ?", [(p,) for p, c in memos if _holds(c, rotten)])
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._guard("writing", e)

    # -- memos ---------------------------------------------------------------------------------

    def memos(self) -> dict[str, Memo]:
        """Every repo's memo, by its folder; a row that does not read back whole is left out (and replaced later)."""
        if self.db is None:
            return {}
        out = {}
        try:
            rows = self.db.execute(f"SELECT {_MEMO_COLUMNS} FROM verify_memos")
            for row in rows:
                try:
                    memo = _memo(*row)
                except Exception:  # noqa: BLE001 - a row that does not read back whole is skipped, whatever is wrong
                    memo = None
                if memo is not None:
                    out[memo.path] = memo
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):  # (none yet: no verify kept a memo)
                self._guard("reading", e)
            return {}
        except sqlite3.Error as e:
            self._guard("reading", e)
            return {}
        return out

    def keep_memos(
        self,
        made: Sequence[tuple[Memo, Mapping[tuple[int, int], float]]],
        dropped: Iterable[str],
        seen: Iterable[Memo],
        now: float,
    ) -> None:
        """Store the memos ``made`` (replacing those of their folders), remove those of ``dropped`` folders, and
        mark the contents of ``seen`` seen in the digests table (so their rows are not forgotten).

        ``made`` pairs each memo with the ``hashed_at`` of each digest row it was judged on: a memo
        is stored only while every one of those rows is still that one (another verify may have
        hashed a content again meanwhile, and found it corrupt). Nothing is written when there is
        nothing to change.
        """
        seen = list(seen)
        if self.db is None:
            return
        try:
            existing = {bytes(p) for (p,) in self.db.execute("SELECT path FROM verify_memos")}
        except sqlite3.Error:
            existing = set()
        gone = [os.fsencode(p) for p in dropped if os.fsencode(p) in existing]
        if not (made or gone or seen):
            return
        with self.writing() as db:
            if db is None:
                return
            db.execute(_MEMO_TABLE)
            if made:
                rows = {(dev, ino): at for dev, ino, at in db.execute("SELECT dev, ino, hashed_at FROM digests")}
                current = [all(rows.get(k) == at for k, at in on.items()) for _, on in made]
                kept = [m for (m, _), same in zip(made, current, strict=True) if same]
                gone += [os.fsencode(m.path) for (m, _), same in zip(made, current, strict=True) if not same]
                db.executemany(f"INSERT OR REPLACE INTO verify_memos ({_MEMO_COLUMNS}) VALUES ({_MEMO_SLOTS})", map(_row, kept))
            db.executemany("DELETE FROM verify_memos WHERE path = ?", [(p,) for p in gone])
            for m in seen:
                keys = m.contents
                db.executemany(
                    "UPDATE digests SET seen_at = ? WHERE dev = ? AND ino = ?",
                    [(now, keys[i], keys[i + 1]) for i in range(0, len(keys), 2)],
                )
                db.execute("UPDATE verify_memos SET seen_at = ? WHERE path = ?", (now, os.fsencode(m.path)))

    # -- runs ------------------------------------------------------------------------------

    def record_run(self, run: LastVerify) -> None:
        if self.db is None:
            return
        try:
            self.db.execute("INSERT OR REPLACE INTO verify_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", tuple(run))
        except sqlite3.Error as e:
            self._guard("writing", e)

    def last_runs(self) -> list[LastVerify]:
        if self.db is None:
            return []
        try:
            columns = "kind, root, finished_at, files, ok, corrupt, missing, unverifiable"  # by name, never *
            return [LastVerify(*row) for row in self.db.execute(f"SELECT {columns} FROM verify_runs ORDER BY kind, root")]
        except sqlite3.Error as e:
            self._guard("reading", e)
            return []


def _blob(values: array[int]) -> bytes:
    """Signed 64-bit numbers as little-endian bytes (the database may move to another machine)."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("q", values)
    swapped.byteswap()
    return swapped.tobytes()


_MEMO_TABLE = """CREATE TABLE IF NOT EXISTS verify_memos (
    path BLOB PRIMARY KEY, kind TEXT NOT NULL, root BLOB NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL,
    names BLOB NOT NULL, ident BLOB NOT NULL, contents BLOB NOT NULL, counts TEXT NOT NULL,
    reasons TEXT NOT NULL, next_due REAL NOT NULL, seen_at REAL NOT NULL)"""
_MEMO_COLUMNS = "path, kind, root, id, type, names, ident, contents, counts, reasons, next_due, seen_at"  # by name, never *
_MEMO_SLOTS = ", ".join("?" * len(_MEMO_COLUMNS.split(", ")))


def _row(m: Memo) -> tuple[object, ...]:
    """A memo as its row, in the order of :data:`_MEMO_COLUMNS`."""
    names = b"\0".join(os.fsencode(n) for n in m.names)
    counts, reasons = json.dumps(dict(m.counts)), json.dumps(list(m.reasons))
    return (
        os.fsencode(m.path),
        m.kind,
        os.fsencode(m.root),
        m.id,
        m.type,
        names,
        _blob(m.values),
        _blob(m.contents),
        counts,
        reasons,
        m.next_due,
        m.seen_at,
    )


_VERDICTS = frozenset({"ok", "unverifiable"})  # all a memo counts (hfcache.verify.run._sound)


def _memo(
    path: bytes,
    kind: str,
    root: bytes,
    id_: str,
    type_: str,
    names: bytes,
    ident: bytes,
    contents: bytes,
    counts: str,
    reasons: str,
    next_due: float,
    seen_at: float,
) -> Memo | None:
    """A row of ``verify_memos`` back as a :class:`Memo`, or None when it is not one this version writes."""
    folder, top = os.fsdecode(bytes(path)), os.fsdecode(bytes(root))
    values, keys = _ints(ident), _ints(contents)
    listed = tuple(os.fsdecode(n) for n in bytes(names).split(b"\0"))
    tally = json.loads(counts)
    why = json.loads(reasons)
    if (
        not all(isinstance(x, str) for x in (kind, id_, type_))
        or "\0" in folder + top
        or not os.path.isabs(folder)
        or os.path.dirname(folder) != top
        or len(values) != FIELDS * len(listed)
        or len(keys) % 2
        or not isinstance(tally, dict)
        or not all(k in _VERDICTS and type(n) is int and 0 <= n < 2**40 for k, n in tally.items())
        or not isinstance(why, list)
        or not all(isinstance(r, str) for r in why)
        or not isinstance(next_due, (int, float))
        or not isinstance(seen_at, (int, float))
        or next_due != next_due  # NaN
        or seen_at != seen_at
    ):
        return None
    return Memo(folder, kind, top, id_, type_, listed, values, keys, tally, tuple(why), float(next_due), float(seen_at))


def _holds(contents: bytes, keys: Collection[tuple[int, int]]) -> bool:
    """Whether a memo's ``contents`` (or a row that does not read back) has one of ``keys``."""
    try:
        values = _ints(contents)
    except (ValueError, TypeError):
        return True
    return any((values[i], values[i + 1]) in keys for i in range(0, len(values) - 1, 2))


def _ints(data: bytes) -> array[int]:
    values = array("q")
    values.frombytes(bytes(data))
    if sys.byteorder != "little":
        values.byteswap()
    return values


def read_last_verifies(path: str) -> tuple[dict[str, tuple[float, int, int]], list[str]]:
    """Per cache root, when the last verify finished and its corrupt and missing counts; and warnings.

    Read only when the database exists (``metrics`` never creates one).
    """
    if not os.path.exists(path):
        return {}, []
    state = State(path)
    try:
        return {r.root: (r.finished_at, r.corrupt, r.missing) for r in state.last_runs()}, state.warnings
    finally:
        state.close()
