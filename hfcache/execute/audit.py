"""The audit log: one JSON line per unit a prune deleted (or tried to), appended as it goes.

Default place: ``platformdirs.user_state_dir("hfcache")/audit.log`` (on Linux
``$XDG_STATE_HOME/hfcache/audit.log``, else ``~/.local/state/hfcache/audit.log``);
``--log FILE`` moves it (never through a symlink: it is opened with ``O_NOFOLLOW``). Each
line is a complete record, written with one ``write`` on a file opened for appending. A
unit gets two: ``"status": "started"`` (with its refs and version), flushed to disk
(``fdatasync``) before its first step, and its outcome (``deleted`` or ``failed``) once
it is done (after its batch of removals), flushed before the next unit starts. The lines of
a group of units (:data:`hfcache.execute.run.GROUP`) are written together and flushed with
one ``fdatasync``, each before its own unit's first step; a unit whose line is written but
that a stop keeps from beginning gets the outcome ``skipped`` ("not attempted: ..."). A prune
killed half-way leaves ``started`` lines without an outcome for the units it was on: those
waiting for their batch, and those of its group not begun yet (up to 16 per deleting
process, untouched); and lines for every unit that went. A write that fails (a full disk)
raises :class:`AuditError`: execution stops before the next unit. hfcache never deletes its
own log (a plan whose targets would include it is refused).

A line::

    {"time": "2026-11-22T03:00:01Z", "time_epoch": 1795316401.2, "run": "1795316400-4242",
     "user": "ml", "host": "gpu-7", "kind": "huggingface", "root": "/data/hf/hub",
     "id": "org/model", "revision": "3f2a...", "what": "revision", "path": "/data/hf/hub/...",
     "status": "deleted", "bytes": 4831838208, "reasons": ["max-age: ..."], "error": null}
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Iterator

import platformdirs

from hfcache.errors import AuditError, UsageError
from hfcache.output.words import describe_all
from hfcache.plan.decisions import PlanUnit, UnitResult
from hfcache.units import iso

LOG_NAME = "audit.log"


def default_log_path() -> str:
    """Where the audit log goes without ``--log``: the user state folder (platformdirs)."""
    return os.path.join(platformdirs.user_state_dir("hfcache", appauthor=False), LOG_NAME)


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container's arbitrary user)
        return str(os.getuid())


class AuditLog:
    """An open audit log; use as a context manager. Opening fails with a one-line :class:`UsageError`."""

    def __init__(self, path: str | None = None) -> None:
        self.path = os.path.abspath(path or default_log_path())
        self.run = f"{int(time.time())}-{os.getpid()}"
        self.user = _user()
        self.host = socket.gethostname()
        self._fd: int | None = None

    def __enter__(self) -> AuditLog:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise UsageError(
                f"cannot open the audit log {self.path}: {e.strerror or e} (choose another with --log FILE)", path=self.path
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def start(self, unit: PlanUnit, *, sync: bool = True) -> None:
        """Record, durably, that ``unit`` is about to go (before its first step; ``sync=False``: :meth:`sync` does it)."""
        self._write(unit, None, sync=sync)

    def record(self, result: UnitResult, *, sync: bool = False) -> None:
        """Append the outcome of one unit (deleted, or failed part-way) as one line."""
        self._write(result.unit, result, sync=sync)

    def sync(self) -> None:
        """Flush the lines written so far to disk."""
        assert self._fd is not None, "AuditLog used outside its with block"
        try:
            os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)
        except OSError as e:
            raise AuditError(f"cannot write the audit log {self.path}: {e.strerror or e}") from None

    def _write(self, unit: PlanUnit, result: UnitResult | None, *, sync: bool) -> None:
        """One line: ``result`` is what the unit did, None for the line before its first step."""
        assert self._fd is not None, "AuditLog used outside its with block"
        now = time.time()
        line = {
            "time": iso(now),
            "time_epoch": now,
            "run": self.run,
            "user": self.user,
            "host": self.host,
            "kind": unit.kind,
            "root": unit.root,
            "id": unit.id,
            "revision": unit.revision,
            "what": unit.what,
            "path": unit.path,
            "status": "started" if result is None else result.status,
            "bytes": 0 if result is None else result.freed_bytes,
            "reasons": describe_all(unit.reasons),
            "error": None if result is None else result.error,
        }
        if result is None:
            line.update(refs=list(unit.refs), version=unit.version, planned_bytes=unit.reclaim_bytes)
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
        except OSError as e:
            raise AuditError(f"cannot write the audit log {self.path}: {e.strerror or e}") from None
        if written != len(data):
            raise AuditError(f"cannot write the audit log {self.path}: short write (disk full?)")
        if sync:
            self.sync()


def read_log(path: str | None = None) -> Iterator[dict[str, object]]:
    """The records of an audit log, oldest first; lines that are not JSON objects are skipped."""
    try:
        f = open(path or default_log_path(), encoding="utf-8")  # noqa: SIM115 - a generator owns it
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line (a crash mid-write on a file system without atomic appends)
            if isinstance(record, dict):
                yield record
