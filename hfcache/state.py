"""hfcache's state database: what earlier runs learnt, shared by ``verify`` and the usage history.

SQLite (the standard library's ``sqlite3``) in the user state folder
(``platformdirs.user_state_dir("hfcache")/state.db``: ``~/.local/state/hfcache/state.db`` on
Linux), or ``--state FILE`` / ``$HFCACHE_STATE``. WAL and a busy timeout, so that a cron
run and an interactive one can overlap. Everything works without it: a database that
cannot be opened, or is corrupt, is a warning; a corrupt one is moved aside
(``state.db.corrupt-<time>``) and started afresh. Nothing in it ever decides a deletion on
its own: it adds what the disk cannot tell (a use a ``noatime`` mount did not record).

Tables (schema version 2; version 1 had the first two, which are unchanged):

- ``digests`` and ``verify_runs``: what ``hfcache verify`` hashed (:mod:`hfcache.verify.state`).
Paths (``root``, ``path``) are stored as their bytes (a file name need not be UTF-8).

- ``samples``: per cache and run of ``scan``, ``metrics`` or ``prune``, its size and its file
  system's size and free bytes (:mod:`hfcache.history.store`).
- ``revisions``: per revision (by path) its model, size, last access time seen, and when a
  run first and last saw it; ``uses``: per revision and day (UTC), that it was used, when,
  how it was seen (a later access time, or a process holding one of its files) and by what
  program; ``item_sizes``: each model's size, a row each time it changed.

Retention (so its size stays bounded; :func:`hfcache.history.store.roll_up`): samples are
kept whole for 14 days, then one per cache and hour up to 180 days, one per day up to two
years; uses, size changes and revisions unseen for 400 days go; digests unseen for 90 days go.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import platformdirs

log = logging.getLogger(__name__)

STATE_NAME = "state.db"
SCHEMA = 2
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
CREATE TABLE IF NOT EXISTS samples (
    at REAL NOT NULL, kind TEXT NOT NULL, root BLOB NOT NULL, size INTEGER NOT NULL,
    device INTEGER, fs_total INTEGER, fs_free INTEGER);
CREATE INDEX IF NOT EXISTS samples_by_root ON samples (root, at);
CREATE TABLE IF NOT EXISTS revisions (
    path BLOB PRIMARY KEY, kind TEXT NOT NULL, root BLOB NOT NULL, item TEXT NOT NULL,
    revision TEXT NOT NULL, size INTEGER NOT NULL, atime REAL NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS uses (
    path BLOB NOT NULL, day INTEGER NOT NULL, at REAL NOT NULL, source TEXT NOT NULL, program TEXT,
    PRIMARY KEY (path, day));
CREATE TABLE IF NOT EXISTS item_sizes (
    root BLOB NOT NULL, item TEXT NOT NULL, at REAL NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (root, item, at));
"""


def default_state_path(env: Mapping[str, str] | None = None) -> str:
    """``$HFCACHE_STATE``, else ``state.db`` in the user state folder (beside the audit log)."""
    env = os.environ if env is None else env
    return env.get("HFCACHE_STATE") or os.path.join(platformdirs.user_state_dir("hfcache", appauthor=False), STATE_NAME)


class StateDB:
    """The state database, or nothing (``warnings`` says why) when it cannot be used.

    Every reader and writer goes through :meth:`guard`: a database error becomes a warning
    and the connection is dropped, so the command goes on without remembering.
    """

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
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
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

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, what: str, e: sqlite3.Error) -> None:
        self.warnings.append(f"state database {self.path}: {what} failed ({e}); nothing more is remembered this run")
        self.close()

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection | None]:
        """One write transaction (``BEGIN IMMEDIATE``: a concurrent writer waits for the busy timeout).

        Yields None when there is no database. A failure rolls back, becomes a warning and
        closes the connection: the caller's command goes on.
        """
        if self.db is None:
            yield None
            return
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._guard("writing", e)
