"""Issue 15: "started" lines in groups, one ``fdatasync`` for many units, each still on disk before its unit's first step.

Models with one planned revision are checked a group at a time (``hfcache.execute.run.GROUP``),
their lines written and flushed at once, then removed. What must hold: no step of a unit
before its line is on disk (in one process and in every worker), far fewer flushes than
units, and a log failing part-way through a group lets only the units whose lines reached
the disk go.
"""

from __future__ import annotations

import os
import time

import pytest

import hfcache
from hfcache.caches.huggingface.delete import HubDeletion
from hfcache.errors import AuditError
from hfcache.execute import audit as audit_mod
from hfcache.execute.audit import read_log
from tests.support import DAY, add_orphan_blobs, cli
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


def _started_end(log: str, path: str) -> int | None:
    """The offset just past the "started" line of ``path`` in the log, or None."""
    with open(log, "rb") as f:
        offset = 0
        for line in f:
            offset += len(line)
            if b'"status": "started"' in line and f'"path": "{path}"'.encode() in line:
                return offset
    return None


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_every_started_line_is_flushed_before_its_units_first_step_and_one_flush_covers_many(tmp_path, monkeypatch, jobs):
    root = str(tmp_path / "hub")
    going = _pairs(root, 40)
    log = str(tmp_path / "audit.log")
    events = str(tmp_path / "events")  # (appended to by every process: workers are forks of this one)
    synced: dict[int, int] = {}  # this process's log fd -> the size it last flushed

    def note(text: str) -> None:
        fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.getpid()} {text}\n".encode())
        os.close(fd)

    real_sync, real_remove = os.fdatasync, HubDeletion.remove_revision

    def fdatasync(fd: int) -> None:
        size = os.fstat(fd).st_size
        real_sync(fd)
        synced[os.getpid()] = size
        note(f"sync {size}")

    def remove_revision(self, tree, cache, item, unit, rev, out):
        end = _started_end(log, unit.path)
        if end is None or end > synced.get(os.getpid(), 0):
            note(f"EARLY {unit.path} line ends at {end}, flushed {synced.get(os.getpid(), 0)}")
        return real_remove(self, tree, cache, item, unit, rev, out)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(HubDeletion, "remove_revision", remove_revision)
    monkeypatch.setattr("hfcache.execute.workers.MIN_SHARE", 1)
    code, done = cli("prune", "--cache-dir", root, "--keep", "1", "--yes", "--json", "--jobs", jobs, "--log", log)
    assert code == 0, done
    assert {u["path"] for u in done["delete"] if u["status"] == "deleted"} == going
    lines = open(events).read().splitlines()
    assert not [line for line in lines if "EARLY" in line]
    # (with workers, each flushed its own lines: none were this process's; how many got work varies)
    assert ({int(line.split()[0]) for line in lines} == {os.getpid()}) == (jobs == "1")
    syncs = [line for line in lines if " sync " in line]
    # One flush per group of started lines (per process), and one for the outcomes at the end:
    # 4 in one process, 7 in three (one flush per unit would be over 40).
    assert len(syncs) <= len(going) // 4, syncs
    records = list(read_log(log))
    assert {r["path"] for r in records if r["status"] == "started"} == going
    assert {r["path"] for r in records if r["status"] == "deleted"} == going


def test_a_line_that_cannot_be_written_mid_group_lets_only_the_units_before_it_go(tmp_path, monkeypatch):
    root = str(tmp_path / "hub")
    going = _pairs(root, 6)
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
    status = {u["path"]: u for u in done["delete"]}
    assert {p for p, u in status.items() if u["status"] == "deleted"} == set(calls[:2])
    stopped = {p for p, u in status.items() if u["status"] == "skipped" and "No space left" in (u["error"] or "")}
    assert stopped == going - set(calls[:2])
    left = {r.path for i in hfcache.scan([root]).caches[0].items for r in i.revisions}
    assert stopped <= left and not set(calls[:2]) & left  # what did not go is whole
    assert {r["path"] for r in read_log(log) if r["status"] == "started"} == set(calls[:2])


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
