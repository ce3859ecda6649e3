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
from collections.abc import Collection, Iterable
from typing import NamedTuple

from hfcache.state import StateDB, default_state_path
from hfcache.verify.memo import Memo

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
        self, rows: Iterable[tuple[os.stat_result, dict[str, str]]], seen: Iterable[tuple[int, int]], now: float
    ) -> None:
        """Record the digests just computed (``rows``: each file's every digest known), mark ``seen``, forget the long unseen."""
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
            self.db.execute("DELETE FROM verify_memos WHERE seen_at < ?", (now - FORGET_AFTER,))
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
            rows = self.db.execute(
                "SELECT path, kind, root, id, type, names, ident, contents, counts, reasons, next_due, seen_at FROM verify_memos"
            )
            for row in rows:
                try:
                    memo = _memo(*row)
                except Exception:  # noqa: BLE001 - a row that does not read back whole is skipped, whatever is wrong
                    memo = None
                if memo is not None:
                    out[memo.path] = memo
        except sqlite3.Error as e:
            self._guard("reading", e)
            return {}
        return out

    def keep_memos(
        self,
        made: Iterable[Memo],
        dropped: Iterable[str],
        seen: Iterable[Memo],
        now: float,
        rotten: Collection[tuple[int, int]] = (),
    ) -> None:
        """Store the memos ``made`` (replacing those of their folders), remove those of ``dropped`` folders,
        and mark the contents of ``seen`` seen in the digests table (their rows are not forgotten); every memo holding one
        of the ``rotten`` contents (``(dev, ino)``) goes."""
        made, seen = list(made), list(seen)
        with self.writing() as db:
            if db is None:
                return
            db.executemany(
                "INSERT OR REPLACE INTO verify_memos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        os.fsencode(m.path),
                        m.kind,
                        os.fsencode(m.root),
                        m.id,
                        m.type,
                        b"\0".join(os.fsencode(n) for n in m.names),
                        _blob(m.values),
                        _blob(m.contents),
                        json.dumps(dict(m.counts)),
                        json.dumps(list(m.reasons)),
                        m.next_due,
                        m.seen_at,
                    )
                    for m in made
                ],
            )
            db.executemany("DELETE FROM verify_memos WHERE path = ?", [(os.fsencode(p),) for p in dropped])
            if rotten:
                gone = [
                    path for path, contents in db.execute("SELECT path, contents FROM verify_memos") if _holds(contents, rotten)
                ]
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
        or len(values) != 5 * len(listed)
        or len(keys) % 2
        or not isinstance(tally, dict)
        or not all(k in _VERDICTS and type(n) is int and n >= 0 for k, n in tally.items())
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
    except ValueError:
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
