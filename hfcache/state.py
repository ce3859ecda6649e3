"""hfcache's state database: what earlier runs learnt, shared by ``verify`` and the usage history.

SQLite (the standard library's ``sqlite3``) in the user state folder
(``platformdirs.user_state_dir("hfcache")/state.db``: ``~/.local/state/hfcache/state.db`` on
Linux), or ``--state FILE`` / ``$HFCACHE_STATE``. WAL and a busy timeout, so that a cron
run and an interactive one can overlap. Everything works without it: a database that
cannot be opened, or is corrupt, is a warning; a corrupt one is moved aside
(``state.db.corrupt-<time>``) and started afresh (only a file SQLite calls corrupt, or one
named ``.db``: a folder or another file at that path is left alone). The usage history
decides deletions (``age_by: use``, ``min_uses``), so ``prune`` trusts only a database of its
own account, in a folder no one else may write (``hfcache.prune``).

Tables (schema version 4; version 1 had the first two, version 2 those up to ``item_sizes``, 3 ``prune_runs``):

- ``digests`` and ``verify_runs``: what ``hfcache verify`` hashed (:mod:`hfcache.verify.state`);
  ``verify_memos``, the repos it need not walk again while they are unchanged, is made by the
  first verify that keeps one (:mod:`hfcache.verify.memo`): an extra table, which an hfcache
  that does not know it leaves alone (so no new schema version).
Paths (``root``, ``path``) are stored as their bytes (a file name need not be UTF-8).

- ``samples``: per cache and run of ``scan``, ``metrics`` or ``prune``, its size and its file
  system's size and free bytes (:mod:`hfcache.history.store`).
- ``revisions``: per revision (by path) its model, size, last access time seen, and when a
  run first and last saw it; ``uses``: per revision and day (UTC), that it was used, when,
  how it was seen (a later access time, or a process holding one of its files) and by what
  program; ``item_sizes``: each model's size, a row each time it changed.
(What ``hfcache sync`` keeps is apart, in ``desired.json`` beside it: :mod:`hfcache.desired`.)
- ``prune_runs``: per cache, the last prune that ran (not a dry run): when, units deleted
  and failed (``metrics``: an alert when prunes fail or stop running).

Retention (so its size stays bounded; :func:`hfcache.history.store.roll_up`): samples are
kept whole for 14 days, then one per cache and hour up to 180 days, one per day up to two
years; uses, size changes and revisions unseen for 400 days go; digests (and verify's memos) unseen for 90 days go.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat as stat_mod
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import platformdirs

log = logging.getLogger(__name__)

STATE_NAME = "state.db"
SCHEMA = 4
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
CREATE TABLE IF NOT EXISTS prune_runs (
    root BLOB PRIMARY KEY, kind TEXT NOT NULL, at REAL NOT NULL, deleted INTEGER NOT NULL, failed INTEGER NOT NULL);
"""


BUSY_TIMEOUT = 10.0  # seconds a run waits for another's write (writes take milliseconds)
_HEADER = b"SQLite format 3\x00"
_NAMES = (".db", ".sqlite", ".sqlite3")  # a file so named, not a database, is taken for a corrupt one and moved aside
_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def _not_ours(path: str) -> str | None:
    """Why ``path`` is not a place for hfcache's database, or None (nothing there, or a database, or a ``.db`` file).

    A folder, a FIFO or a device is never opened (a FIFO would block the read); a regular file
    that is not an SQLite database is taken for a corrupt one (and moved aside, as the
    module says) only when it is named like one: ``--state notes.txt`` or a model's blob
    never lose their contents.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot be looked at ({e.strerror or e})"
    if not stat_mod.S_ISREG(st.st_mode):
        return "is not a file"
    if st.st_size == 0 or path.endswith(_NAMES):
        return None
    try:
        with open(path, "rb") as f:
            header = f.read(len(_HEADER))
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None if header == _HEADER else "is not an SQLite database (and not named .db)"


def _corrupt(e: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file itself is damaged (not: busy, locked, full, an I/O error)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in _CORRUPT)
    text = str(e).lower()
    return "malformed" in text or "not a database" in text


def _schema(db: sqlite3.Connection) -> int | None:
    """The schema version the database says it has; None for a new (or pre-meta) one."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return None
        raise
    try:
        return int(row[0]) if row else None
    except ValueError:
        return None


def default_state_path(env: Mapping[str, str] | None = None) -> str:
    """``$HFCACHE_STATE``, else ``state.db`` in the user state folder (beside the audit log)."""
    env = os.environ if env is None else env
    return env.get("HFCACHE_STATE") or os.path.join(platformdirs.user_state_dir("hfcache", appauthor=False), STATE_NAME)


OFF = "off"  # --state off / HFCACHE_STATE=off: no state database at all


def state_path(given: str | None) -> str | None:
    """The state database a command uses: ``given`` (``--state``), else the default; None when turned off.

    Here, not in :mod:`hfcache.history`: ``verify`` records no history and does not import it
    (psutil and the history's modules: about 15 ms of its start-up).
    """
    path = given or default_state_path()
    return None if path == OFF else path


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
        problem = _not_ours(path)
        if problem:
            self.warnings.append(f"state database {path} {problem}: left alone, nothing is remembered this run")
            return None
        for attempt in (1, 2):
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
                db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
                found = _schema(db)
                if found is not None and found > SCHEMA:
                    db.close()
                    self.warnings.append(f"state database {path} is of a newer hfcache (schema {found}): not used this run")
                    return None
                if found != SCHEMA:  # new, or older: its tables made (reading never writes otherwise)
                    db.execute("PRAGMA journal_mode = WAL")
                    db.executescript(_TABLES)
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
                db.execute("SELECT 1 FROM digests LIMIT 1").fetchall()  # a corrupt file fails here, if not before
                return db
            except sqlite3.DatabaseError as e:
                if attempt == 2 or not _corrupt(e):  # locked, busy, full disk, I/O error: not the file's fault
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
