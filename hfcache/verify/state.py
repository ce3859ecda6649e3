"""hfcache's state database: what earlier runs learnt, so that a repeat run redoes nothing.

SQLite (the standard library's ``sqlite3``) in the user state folder
(``platformdirs.user_state_dir("hfcache")/state.db``: ``~/.local/state/hfcache/state.db`` on
Linux), or ``--state FILE`` / ``$HFCACHE_STATE``. WAL and a busy timeout, so that a cron
run and an interactive one can overlap. Everything works without it: a database that
cannot be opened, or is corrupt, is a warning; a corrupt one is moved aside
(``state.db.corrupt-<time>``) and started afresh.

Tables (schema version 1):

- ``digests``: one row per file content hashed, keyed by ``(dev, ino)``, with the size,
  mtime and ctime (nanoseconds) it had, its ``sha256`` and/or ``git_sha1``, and when it was
  hashed. A file whose identity and times are all unchanged is not read again (``verify``
  without ``--full``); any write to it moves its mtime or ctime.
- ``verify_runs``: per cache, when a verify finished and what it counted (for ``metrics``).

Its size stays bounded: rows of files not seen by a verify for 90 days are removed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import platformdirs

log = logging.getLogger(__name__)

STATE_NAME = "state.db"
SCHEMA = 1
FORGET_AFTER = 90 * 86400.0  # rows of files no verify saw for this long go
_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS digests (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    sha256 TEXT, git_sha1 TEXT, hashed_at REAL NOT NULL, seen_at REAL NOT NULL,
    PRIMARY KEY (dev, ino));
CREATE TABLE IF NOT EXISTS verify_runs (
    kind TEXT NOT NULL, root TEXT NOT NULL, finished_at REAL NOT NULL,
    files INTEGER NOT NULL, ok INTEGER NOT NULL, corrupt INTEGER NOT NULL,
    missing INTEGER NOT NULL, unverifiable INTEGER NOT NULL,
    PRIMARY KEY (kind, root));
"""


def default_state_path(env: Mapping[str, str] | None = None) -> str:
    """``$HFCACHE_STATE``, else ``state.db`` in the user state folder (beside the audit log)."""
    env = os.environ if env is None else env
    return env.get("HFCACHE_STATE") or os.path.join(platformdirs.user_state_dir("hfcache", appauthor=False), STATE_NAME)


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


class State:
    """The state database, or nothing (``warnings`` says why) when it cannot be used."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.warnings: list[str] = []
        self.db: sqlite3.Connection | None = None
        if path is not None:
            self.db = self._connect(path)

    def _connect(self, path: str) -> sqlite3.Connection | None:
        for attempt in (1, 2):
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
                db.execute("PRAGMA busy_timeout = 30000")
                db.execute("PRAGMA journal_mode = WAL")
                db.executescript(_TABLES)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
                db.execute("SELECT count(*) FROM digests").fetchone()  # a corrupt file fails here, if not before
                return db
            except sqlite3.DatabaseError as e:
                if attempt == 2 or isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                    self.warnings.append(f"state database {path} cannot be used ({e}): nothing is remembered this run")
                    return None
                aside = f"{path}.corrupt-{int(time.time())}"
                try:
                    os.replace(path, aside)
                except OSError as moved:
                    self.warnings.append(f"state database {path} is corrupt ({e}) and cannot be moved aside ({moved})")
                    return None
                self.warnings.append(f"state database {path} was corrupt ({e}): moved to {aside}, started afresh")
            except OSError as e:
                self.warnings.append(f"state database {path} cannot be opened ({e.strerror or e}): nothing is remembered")
                return None
        return None  # pragma: no cover - the loop returns

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def _guard(self, what: str, e: sqlite3.Error) -> None:
        self.warnings.append(f"state database {self.path}: {what} failed ({e}); nothing more is remembered this run")
        self.close()

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
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._guard("writing", e)

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
            return [LastVerify(*row) for row in self.db.execute("SELECT * FROM verify_runs ORDER BY kind, root")]
        except sqlite3.Error as e:
            self._guard("reading", e)
            return []


def open_state(path: str | None) -> State:
    """The state at ``path`` (:func:`default_state_path` when None)."""
    return State(path or default_state_path())


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
