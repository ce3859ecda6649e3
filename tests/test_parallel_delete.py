"""Deleting a cache's models on several processes at once (hfcache.execute.workers; issue 15's speed goal).

What one process guarantees must hold with many: every unit checked just before it goes and
its "started" line flushed before its first step, a signal or a full log stopping every
worker before its next unit, a kill of the prune stopping all deletion at once, and a worker
that dies leaving nothing the next run would plan differently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from huggingface_hub import scan_cache_dir

import hfcache
from hfcache.caches.huggingface.delete import HUB_DELETION
from hfcache.fs.ops import Tree
from tests.support import (
    add_orphan_blobs,
    assert_kept_revisions_load_offline,
    audit_records,
    cli,
    many_repos,
    parallel_cli,
    processes_in,
    publish,
)


def wait_for_lines(proc: subprocess.Popen, log: str, n: int, status: str = "deleted") -> None:
    deadline = time.time() + 60
    while len([r for r in audit_records(log) if r["status"] == status]) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.005)


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def listing(root: str) -> set[str]:
    return {os.path.join(folder, name) for folder, dirs, files in os.walk(root) for name in dirs + files}


def revisions(root: str) -> set[tuple[str, str]]:
    return {(i.id, r.revision) for c in hfcache.scan([root]).caches for i in c.items for r in i.revisions}


@pytest.fixture
def models(tmp_path):
    """Twelve repos (42 units), the policy, and the dry-run plan's units."""
    root = str(tmp_path / "hub")
    policy = many_repos(root, 12)
    code, plan = cli("prune", "--cache-dir", root, "--config", policy, "--dry-run", "--json")
    assert code == 0 and len(plan["delete"]) == 6 * 4 + 6 * 3, plan
    return root, policy, plan["delete"]


def test_several_processes_delete_exactly_what_one_does(tmp_path, models):
    root, policy, planned = models
    alone = str(tmp_path / "alone")
    many_repos(alone, 12)  # the same cache again (a copy would read it, and move the access times that plan it)
    seen = str(tmp_path / "seen")
    results = {}
    for where, jobs in ((alone, "1"), (root, "3")):
        log = str(tmp_path / f"audit-{jobs}.log")
        proc = parallel_cli(
            0, "prune", "--cache-dir", where, "--config", policy, "--yes", "--json", "--jobs", jobs, "--log", log, record=seen
        )
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results[jobs] = done = json.loads(out)
        records = audit_records(log)
        assert sorted(r["path"] for r in records if r["status"] == "started") == sorted(u["path"] for u in done["delete"])
        assert sorted(r["path"] for r in records if r["status"] == "deleted") == sorted(u["path"] for u in done["delete"])
    assert processes_in(seen) == 1 + 3  # one process alone, then three workers
    for one, many in zip(results["1"]["delete"], results["3"]["delete"], strict=True):
        assert one["status"] == many["status"] == "deleted"
        assert one["freed_bytes"] == many["freed_bytes"] == many["reclaim_bytes"]
    assert revisions(root) == revisions(alone)
    assert scan_cache_dir(root).warnings == []


def test_a_killed_prune_leaves_no_worker_deleting(tmp_path, models, monkeypatch):
    root, policy, planned = models
    before = scan_cache_dir(root)
    log = str(tmp_path / "audit.log")
    args = ("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--jobs", "3", "--log", log)
    proc = parallel_cli(2.0, *args)  # each removal takes 2 s: every worker is inside a unit when the prune dies
    deadline = time.time() + 60
    while len([r for r in audit_records(log) if r["status"] == "started"]) < 3:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.005)
    assert len(children(proc.pid)) == 3
    proc.kill()  # SIGKILL to the prune alone, as the OOM killer or `kill -9 PID` does
    proc.wait()  # (not communicate: its pipes stay open while any worker lives)
    time.sleep(0.2)
    at_kill = listing(root)
    time.sleep(4.5)  # two more removals of a worker that outlived the prune
    assert listing(root) == at_kill, "a worker went on deleting after the prune was killed"
    proc.communicate()
    code, done = cli("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--log", log)
    assert code == 0, done
    gone = {(u["id"], u["revision"]) for u in planned}
    assert revisions(root) == {(c.repo_id, r.commit_hash) for c in before.repos for r in c.revisions} - gone
    assert scan_cache_dir(root).warnings == []
    assert_kept_revisions_load_offline(root, before, {u["revision"] for u in planned}, monkeypatch)
    gone = {r["path"] for r in audit_records(log) if r["status"] in ("started", "deleted")}
    assert {u["path"] for u in planned} <= gone  # every removed revision is in the audit log


def test_a_signal_to_the_prune_alone_stops_every_worker_after_its_unit(tmp_path, models):
    root, policy, planned = models
    log = str(tmp_path / "audit.log")
    seen = str(tmp_path / "seen")
    args = ("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--jobs", "3", "--log", log)
    proc = parallel_cli(0.02, *args, record=seen)
    wait_for_lines(proc, log, 2, "started")  # (a unit is reported deleted with the batch of removals it is in)
    proc.send_signal(signal.SIGTERM)  # the prune's process only: it tells its workers
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert processes_in(seen) == 3  # (three workers were deleting)
    units = json.loads(out)["delete"]
    deleted = {u["path"] for u in units if u["status"] == "deleted"}
    stopped = {u["path"] for u in units if u["status"] == "skipped"}
    assert deleted and stopped and deleted | stopped == {u["path"] for u in planned}, units
    assert {u["error"] for u in units if u["status"] == "skipped"} == {"not attempted: interrupted (SIGTERM)"}
    records = audit_records(log)
    assert {r["path"] for r in records if r["status"] == "deleted"} == deleted
    # None left half-way: every "started" line has its outcome; a unit whose line a group had
    # flushed but that the stop kept from beginning says "skipped", and is whole (below).
    outcomes = {r["path"]: r["status"] for r in records if r["status"] != "started"}
    assert {r["path"] for r in records if r["status"] == "started"} == set(outcomes)
    assert {p for p, status in outcomes.items() if status != "deleted"} <= stopped
    left = {r.path for c in hfcache.scan([root]).caches for i in c.items for r in i.revisions}
    assert stopped <= left and not (deleted & left)
    assert scan_cache_dir(root).warnings == []


def test_a_worker_that_dies_fails_its_units_and_the_others_carry_on(tmp_path, models, monkeypatch):
    root, policy, planned = models
    before = scan_cache_dir(root)
    log = str(tmp_path / "audit.log")
    proc = parallel_cli(0.02, "prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--jobs", "3", "--log", log)
    wait_for_lines(proc, log, 1)
    victim = children(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert "killed by SIGKILL" in err, err
    units = json.loads(out)["delete"]
    hit = [u for u in units if u["status"] != "deleted"]  # what the model it was on lost (a model it had not begun is redone)
    assert all(u["status"] == "failed" and "killed by SIGKILL" in u["error"] for u in hit), units
    assert proc.returncode == (1 if hit else 0)
    records = audit_records(log)  # every unit started has its outcome, the dead worker's too
    assert {r["path"] for r in records if r["status"] == "started"} <= {r["path"] for r in records if r["status"] != "started"}
    assert scan_cache_dir(root).warnings == []  # what it left was repaired at once
    code, again = cli("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--log", log)
    assert code == 0, again
    assert {(u["id"], u["revision"]) for u in again["delete"]} <= {(u["id"], u["revision"]) for u in hit}
    gone = {(u["id"], u["revision"]) for u in planned}
    assert revisions(root) == {(c.repo_id, r.commit_hash) for c in before.repos for r in c.revisions} - gone
    assert_kept_revisions_load_offline(root, before, {u["revision"] for u in planned}, monkeypatch)


def test_a_full_log_in_one_worker_stops_them_all_before_their_next_unit(tmp_path, models):
    root, policy, planned = models
    logs = tmp_path / "logfs"
    logs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(logs)], check=True)
    log = str(logs / "audit.log")
    seen = str(tmp_path / "seen")
    try:
        proc = parallel_cli(
            0, "prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--jobs", "3", "--log", log, record=seen
        )
        out, err = proc.communicate(timeout=120)
        records = audit_records(log)
    finally:
        subprocess.run(["umount", "-l", str(logs)], check=False)
    assert proc.returncode == 1, err
    assert processes_in(seen) == 3  # (three workers)
    status = {u["path"]: u for u in json.loads(out)["delete"]}
    deleted = {p for p, u in status.items() if u["status"] == "deleted"}
    stopped = {p for p, u in status.items() if u["status"] == "skipped" and "audit log" in (u["error"] or "")}
    assert deleted and stopped and deleted | stopped == set(status), status
    assert deleted <= {r["path"] for r in records if r["status"] == "started"}
    left = {r.path for c in hfcache.scan([root]).caches for i in c.items for r in i.revisions}
    assert stopped <= left and not (deleted & left)
    assert scan_cache_dir(root).warnings == []


def test_a_forked_worker_reads_folders_through_descriptors_of_its_own(tmp_path):
    """A descriptor's read position is shared across a fork: a worker listing a folder must not move the parent's."""
    folder = tmp_path / "root" / "sub"
    folder.mkdir(parents=True)
    for i in range(50):
        (folder / f"f{i}").write_text("x")
    with Tree(str(tmp_path / "root")) as tree:
        assert len(tree.listdir(str(folder))) == 50
        held = tree._dir(["sub"])
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                tree.detach()
                os.lseek(tree._dir(["sub"]), 0, os.SEEK_END)  # a listing left half-way: its position moved
                os.lseek(tree.fd, 0, os.SEEK_END)
                code = 0
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        for fd in (held, tree.fd):
            with open(f"/proc/self/fdinfo/{fd}") as f:
                assert "pos:\t0\n" in f.read()
        assert len(tree.listdir(str(folder))) == 50


def test_repos_sharing_a_xet_payload_are_deleted_by_one_process(tmp_path):
    """What the hub's deletion decides about across repos (a shared-store payload) is decided by one process alone."""
    root = str(tmp_path / "hub")
    policy = many_repos(root, 12)
    sharing = ("models--org--old-0", "models--org--old-4")  # both go whole: their payload goes with the last
    for name in sharing:
        snap = os.path.join(root, name, "snapshots")
        pointer = os.path.join(snap, sorted(os.listdir(snap))[0], "config.json")
        publish(root, pointer, "c0" * 32, os.path.getsize(pointer))
    stores = {os.path.join(f, n) for f, _, names in os.walk(os.path.join(root, "blobs")) for n in names if n == "c0" * 32}
    assert len(stores) == 1, stores  # the one payload both repos' blobs are now
    # They may land on one process by chance; what groups them must say they share something.
    (cache,) = hfcache.scan([root]).caches
    keys = {os.path.basename(i.path): set(HUB_DELETION.shared_keys(cache, i)) for i in cache.items}
    assert keys[sharing[0]] & keys[sharing[1]] and not any(keys[n] for n in keys if n not in sharing)
    seen = str(tmp_path / "seen")
    proc = parallel_cli(0, "prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--jobs", "3", record=seen)
    out, err = proc.communicate(timeout=120)
    done = json.loads(out)
    assert proc.returncode == 0 and {u["status"] for u in done["delete"]} == {"deleted"}, err
    by = dict(reversed(line.split()) for line in open(seen))
    assert by[sharing[0]] == by[sharing[1]] and len(set(by.values())) == 3, by
    assert not any(map(os.path.exists, stores))  # it went with the last repo linking to it
    assert scan_cache_dir(root).warnings == []


def test_junk_removed_before_the_workers_start_is_finished_once(tmp_path):
    """Junk goes first, in this process; its blobs wait for their settling time there, never again in a worker."""
    root = str(tmp_path / "hub")
    policy = many_repos(root, 12)
    add_orphan_blobs(root, ["models--org--new-1", "models--org--new-3"])  # junk, set aside and finished like any blob
    log = str(tmp_path / "audit.log")
    seen = str(tmp_path / "seen")
    args = ("prune", "--cache-dir", root, "--config", policy, "--junk", "--yes", "--json", "--jobs", "3", "--log", log)
    proc = parallel_cli(0, *args, record=seen)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    units = json.loads(out)["delete"]
    assert sum(u["what"] == "orphan" for u in units) == 2 and {u["status"] for u in units} == {"deleted"}, units
    assert processes_in(seen) == 3
    outcomes = [r["path"] for r in audit_records(log) if r["status"] != "started"]
    assert sorted(outcomes) == sorted(u["path"] for u in units)  # one outcome line each, none twice
