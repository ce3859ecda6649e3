"""Issue 15: "started" lines in groups, one ``fdatasync`` for many units, each still on disk before its unit's first step.

Models with one planned revision are checked a group at a time (``hfcache.execute.run.GROUP``),
their lines written and flushed at once, then removed. What must hold: no step of a unit
before its line is on disk (in one process and in every worker), far fewer flushes than
units, and a log failing part-way through a group lets only the units whose lines reached
the disk go.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import hfcache
from hfcache import interrupt
from hfcache.caches.huggingface.delete import HubDeletion
from hfcache.errors import AuditError
from hfcache.execute import audit as audit_mod
from hfcache.execute import run as run_mod
from hfcache.execute.audit import read_log
from tests.support import DAY, PARALLEL_CLI, add_orphan_blobs, cli
from tests.trees import commit, repo


def _pairs(root: str, n: int) -> set[str]:
    """``n`` repos of two revisions each, ``main`` on the newer: ``--keep 1`` plans one unit per model.

    Returns the snapshot paths of the older revisions (what goes).
    """
    old = time.time() - 60 * DAY
    going = set()
    for i in range(n):
        a, b = commit(f"m{i}-a"), commit(f"m{i}-b")
        folder = repo(
            root,
            f"models--org--m{i}",
            snapshots={a: {"w.bin": f"m{i}-wa", "config.json": f"m{i}-c"}, b: {"w.bin": f"m{i}-wb", "config.json": f"m{i}-c"}},
            blobs={f"m{i}-wa": 300, f"m{i}-wb": 301, f"m{i}-c": 20},
            refs={"main": b},
        )
        for name, when in ((f"m{i}-c", old - 10), (f"m{i}-wa", old), (f"m{i}-wb", old + 1)):
            os.utime(os.path.join(folder, "blobs", name), (when, when))
        going.add(os.path.join(folder, "snapshots", a))
    return going


def hooked_cli(hook: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The CLI in a child process (``PARALLEL_CLI``: a worker per model), ``hook`` run first."""
    code = PARALLEL_CLI.replace('sys.argv = ["hfcache"', hook + '\nsys.argv = ["hfcache"')
    return subprocess.run(
        [sys.executable, "-c", code, "0", *args],
        env={**os.environ, "RECORD_ITEMS": "", **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )


def _started_end(log: str, path: str) -> int | None:
    """The offset just past the "started" line of ``path`` in the log, or None."""
    with open(log, "rb") as f:
        offset = 0
        for line in f:
            offset += len(line)
            if b'"status": "started"' in line and f'"path": "{path}"'.encode() in line:
                return offset
    return None


# In the CLI's child process: each fdatasync notes the log size it flushed (per process), and
# each unit's first step notes EARLY when its "started" line is not within what this process flushed.
EVENTS = """
import hfcache.caches.huggingface.delete as _delete
_synced, _real_sync, _real_remove = {}, os.fdatasync, _delete.HubDeletion.remove_revision
def _note(text):
    fd = os.open(os.environ["EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.getpid()} {text}\\n".encode())
    os.close(fd)
def _fdatasync(fd):
    size = os.fstat(fd).st_size
    _real_sync(fd)
    if os.readlink(f"/proc/self/fd/{fd}") == os.environ["LOG"]:
        _synced[os.getpid()] = size
        _note(f"sync {size}")
def _remove_revision(self, tree, cache, item, unit, rev, out):
    end, offset = None, 0
    with open(os.environ["LOG"], "rb") as f:
        for line in f:
            offset += len(line)
            if b'"status": "started"' in line and f'"path": "{unit.path}"'.encode() in line:
                end = offset
    if end is None or end > _synced.get(os.getpid(), 0):
        _note(f"EARLY {unit.path}: its line ends at {end}, this process flushed {_synced.get(os.getpid(), 0)}")
    return _real_remove(self, tree, cache, item, unit, rev, out)
os.fdatasync = _fdatasync
_delete.HubDeletion.remove_revision = _remove_revision
"""


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_every_started_line_is_flushed_before_its_units_first_step_and_one_flush_covers_many(tmp_path, jobs):
    root = str(tmp_path / "hub")
    going = _pairs(root, 40)
    log, events = str(tmp_path / "audit.log"), str(tmp_path / "events")
    args = ("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json", "--jobs", jobs, "--log", log)
    proc = hooked_cli(EVENTS, *args, env={"EVENTS": events, "LOG": log})
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    assert {u["path"] for u in done["delete"] if u["status"] == "deleted"} == going
    lines = open(events).read().splitlines()
    assert not [line for line in lines if "EARLY" in line]
    assert len({line.split()[0] for line in lines}) == (1 if jobs == "1" else 3)  # (each worker flushed its own)
    # One flush per group of started lines (per process), and one for the outcomes at the end:
    # 4 in one process, about 7 in three (one flush per unit would be over 40).
    assert len(lines) <= len(going) // 4, lines
    records = list(read_log(log))
    assert {r["path"] for r in records if r["status"] == "started"} == going
    assert {r["path"] for r in records if r["status"] == "deleted"} == going


def test_a_line_that_cannot_be_written_mid_group_lets_no_unit_go(tmp_path, monkeypatch):
    """The lines before it reached the disk, but the run is stopping: those units are not attempted, and say so."""
    root = str(tmp_path / "hub")
    going = _pairs(root, 6)
    before = {r.path for i in hfcache.scan([root]).caches[0].items for r in i.revisions}
    log = str(tmp_path / "audit.log")
    real_start, calls = audit_mod.AuditLog.start, []

    def start(self, unit, **kw):
        calls.append(unit.path)
        if len(calls) == 3:
            raise AuditError(f"cannot write the audit log {self.path}: No space left on device")
        return real_start(self, unit, **kw)

    monkeypatch.setattr(audit_mod.AuditLog, "start", start)
    code, done = cli("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json", "--log", log)
    assert code == 1, done
    assert {u["path"] for u in done["delete"]} == going and {u["status"] for u in done["delete"]} == {"skipped"}
    assert all("No space left" in u["error"] for u in done["delete"])
    assert {r.path for i in hfcache.scan([root]).caches[0].items for r in i.revisions} == before
    records = list(read_log(log))  # the two lines written: each with its outcome, not attempted
    assert sorted((r["path"], r["status"]) for r in records) == sorted(
        [(p, "started") for p in calls[:2]] + [(p, "skipped") for p in calls[:2]]
    )


def test_a_flush_that_fails_lets_no_unit_of_its_group_go(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    going = _pairs(root, 6)
    before = {r.path for i in hfcache.scan([root]).caches[0].items for r in i.revisions}

    def sync(self):
        raise AuditError(f"cannot write the audit log {self.path}: Input/output error")

    monkeypatch.setattr(audit_mod.AuditLog, "sync", sync)
    code, done = cli("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json", "--log", str(tmp_path / "audit.log"))
    assert code == 1, done
    assert {u["status"] for u in done["delete"]} == {"skipped"}
    assert all("Input/output error" in u["error"] for u in done["delete"])
    assert {u["path"] for u in done["delete"]} == going
    assert {r.path for i in hfcache.scan([root]).caches[0].items for r in i.revisions} == before


def test_junk_goes_in_groups_too_each_line_flushed_before_its_piece(tmp_path, monkeypatch):
    """Orphan blobs of 40 repos and an emptied repo folder."""
    root = str(tmp_path / "hub")
    _pairs(root, 40)
    add_orphan_blobs(root, [f"models--org--m{i}" for i in range(40)])
    shell = os.path.join(root, "models--org--gone")
    for sub in ("snapshots", "blobs", "refs"):
        os.makedirs(os.path.join(shell, sub))
    old = time.time() - 2 * DAY
    for folder, _, _ in os.walk(shell):
        os.utime(folder, (old, old))
    log = str(tmp_path / "audit.log")
    synced, early = [0], []
    real_sync, real_remove = os.fdatasync, HubDeletion.remove_junk

    def fdatasync(fd: int) -> None:
        size = os.fstat(fd).st_size
        real_sync(fd)
        synced[0] = size
        synced.append(size)

    def remove_junk(self, tree, cache, unit, found, out):
        end = _started_end(log, unit.path)
        if end is None or end > synced[0]:
            early.append(unit.path)
        return real_remove(self, tree, cache, unit, found, out)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(HubDeletion, "remove_junk", remove_junk)
    code, done = cli("prune", "--cache-dir", root, "--junk", "--yes", "--json", "--log", log)
    assert code == 0, done
    assert [u["what"] for u in done["delete"]].count("orphan") == 40
    assert {u["status"] for u in done["delete"]} == {"deleted"} and len(done["delete"]) == 41, done
    assert not os.path.exists(shell) and early == []
    assert len(synced) - 1 <= 41 // 4, synced


def test_no_finisher_runs_before_its_settling_time_and_the_last_wait_overlaps_work(tmp_path, monkeypatch):
    """A model's blobs are read again only SETTLE after they were set aside, the last ones too.

    Units slowed to 20 ms each: when the run ends, some finishers have settled and some not;
    the settled ones run while the others settle (the wait is no longer idle), none early.
    """
    root = str(tmp_path / "hub")
    going = _pairs(root, 40)
    queued: list[tuple[float, float | None]] = []
    real_later, real_remove = run_mod._Run.later, HubDeletion.remove_revision

    def later(self, tree, finisher, units, **kw):
        if finisher is None:
            return real_later(self, tree, finisher, units, **kw)
        i = len(queued)
        queued.append((time.monotonic(), None))

        def timed(tree):
            queued[i] = (queued[i][0], time.monotonic())
            return finisher(tree)

        return real_later(self, tree, timed, units, **kw)

    removed = [0.0]

    def remove_revision(self, *args):
        time.sleep(0.02)
        try:
            return real_remove(self, *args)
        finally:
            removed[0] = time.monotonic()

    monkeypatch.setattr(run_mod._Run, "later", later)
    monkeypatch.setattr(HubDeletion, "remove_revision", remove_revision)
    code, done = cli("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json", "--jobs", "1")
    assert code == 0 and {u["path"] for u in done["delete"] if u["status"] == "deleted"} == going, done
    waits = [ran - at for at, ran in queued if ran is not None]
    assert len(waits) == 40 and min(waits) >= run_mod.SETTLE, waits
    # The finishers still waiting when the last unit went: those settled by then ran at once, the
    # others once the newest had settled (a quarter of a second later), not all after that wait.
    last = sorted(r for _, r in queued if r is not None and r > removed[0])
    assert len(last) > 2 and last[-1] - last[0] > run_mod.SETTLE / 2, last


# ---------------------------------------------------------------------------------------------
# A stop in the middle of a group: the units whose lines are on disk but that did not begin
# do not go (from an adversarial review: a group once flushed was removed whole).


def test_a_signal_while_a_group_goes_stops_it_before_the_next_unit(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    going = _pairs(root, 10)
    log = str(tmp_path / "audit.log")
    real, calls = HubDeletion.remove_revision, []

    def remove_revision(self, *args):
        calls.append(args[3].path)
        try:
            return real(self, *args)
        finally:
            if len(calls) == 1:
                interrupt.request(signal.SIGINT)  # (what the handler does)

    monkeypatch.setattr(HubDeletion, "remove_revision", remove_revision)
    try:
        code, done = cli("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json", "--log", log)
    finally:
        interrupt.reset()
    assert code == 130 and len(calls) == 1, (code, calls)
    status = {u["path"]: (u["status"], u["error"]) for u in done["delete"]}
    assert status.pop(calls[0]) == ("deleted", None)
    assert {s for s, _ in status.values()} == {"skipped"} and all("not attempted" in e for _, e in status.values())
    assert {r.path for i in hfcache.scan([root]).caches[0].items for r in i.revisions} >= going - {calls[0]}
    # Each line in the log that says "started" has its outcome: the unit that went, and those that did not.
    records = list(read_log(log))
    started = {r["path"] for r in records if r["status"] == "started"}
    assert started == going and {r["path"] for r in records if r["status"] != "started"} == started
    assert [r["status"] for r in records if r["path"] != calls[0] and r["status"] != "started"] == ["skipped"] * 9


def test_an_outcome_line_failing_mid_group_stops_before_the_next_unit(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    _pairs(root, 40)
    real_remove, real_record = HubDeletion.remove_revision, audit_mod.AuditLog.record
    removed: list[float] = []
    failed_at: list[float] = []

    def remove_revision(self, *args):
        time.sleep(0.02)  # (finishers come due, and their units' outcome lines are written, mid-group)
        removed.append(time.monotonic())
        return real_remove(self, *args)

    def record(self, result, **kw):
        if not failed_at:
            failed_at.append(time.monotonic())
            raise AuditError(f"cannot write the audit log {self.path}: No space left on device")
        return real_record(self, result, **kw)

    monkeypatch.setattr(HubDeletion, "remove_revision", remove_revision)
    monkeypatch.setattr(audit_mod.AuditLog, "record", record)
    args = ("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json", "--jobs", "1", "--log", str(tmp_path / "log"))
    code, done = cli(*args)
    assert code == 1 and failed_at, done
    assert [t for t in removed if t > failed_at[0]] == []
    assert any(u["status"] == "skipped" and "No space left" in u["error"] for u in done["delete"])


# In the CLI's child: the first worker to reach its second unit's first step is SIGKILLed there.
DIES_AT_ITS_SECOND_UNIT = """
import hfcache.caches.huggingface.delete as _delete
_parent, _n, _real = os.getpid(), [0], _delete.HubDeletion.remove_revision
def _remove_revision(self, *args):
    if os.getpid() != _parent:
        _n[0] += 1
        if _n[0] == 2:
            try:
                os.close(os.open(os.environ["DIED"], os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
    return _real(self, *args)
_delete.HubDeletion.remove_revision = _remove_revision
"""


def test_a_worker_killed_mid_group_leaves_the_units_it_never_began_to_the_others(tmp_path):
    """The parent is told of a unit just before its first step, not when its group's lines are flushed.

    What the dead worker began (the unit it died in, the one before it waiting for its settling
    time) fails, truthfully; the rest of its group, never touched, is done by the parent.
    """
    root = str(tmp_path / "hub")
    going = _pairs(root, 12)
    died = str(tmp_path / "died")
    args = ("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json", "--jobs", "3", "--log", str(tmp_path / "log"))
    proc = hooked_cli(DIES_AT_ITS_SECOND_UNIT, *args, env={"DIED": died})
    assert os.path.exists(died) and proc.returncode == 1, proc.stderr
    units = {u["path"]: u for u in json.loads(proc.stdout)["delete"]}
    failed = [p for p, u in units.items() if u["status"] == "failed"]
    assert 1 <= len(failed) <= 2, failed
    assert {p for p, u in units.items() if u["status"] == "deleted"} == going - set(failed)
