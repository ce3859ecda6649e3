"""Adversarial tests of execution on several worker processes (hfcache.execute.workers, run._run_parallel).

Each test runs the CLI in a process of its own (hfcache forks only without threads), with a
worker for every model (MIN_SHARE = 1), and some hook injected into it before ``main()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from huggingface_hub import scan_cache_dir

from tests.support import PARALLEL_CLI, add_orphan_blobs, audit_records, many_repos, processes_in

# Runs in the CLI's process before main(): a worker (pid not the prune's) that reaches its
# N-th item (DIE_AT) dies there, SIGKILLed (as the OOM killer does), or raising (DIE_HOW=raise).
# Only one worker dies: the first to get there claims the file DIED.
DYING_WORKER = """
PARENT = os.getpid()
_items = [0]
_run_item = hfcache.execute.run._run_item
def _dying(run, live, deletion, tree, w, path, grace):
    if os.getpid() != PARENT:
        _items[0] += 1
        if _items[0] == int(os.environ["DIE_AT"]):
            try:
                fd = os.open(os.environ["DIED"], os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                pass
            else:
                os.write(fd, os.path.basename(path).encode())
                os.close(fd)
                if os.environ.get("DIE_HOW") == "raise":
                    raise RuntimeError("a bug in a worker")
                os.kill(os.getpid(), signal.SIGKILL)
    return _run_item(run, live, deletion, tree, w, path, grace)
hfcache.execute.run._run_item = _dying
"""


def hooked_cli(hook: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = PARALLEL_CLI.replace('sys.argv = ["hfcache"', hook + '\nsys.argv = ["hfcache"')
    assert code != PARALLEL_CLI
    return subprocess.run(
        [sys.executable, "-c", code, "0", *args],
        env={**os.environ, "RECORD_ITEMS": "", **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )


def _prune_with_a_dying_worker(tmp_path, die_at: int, how: str = "kill", *extra: str):
    root = str(tmp_path / "hub")
    policy = many_repos(root, 12)
    log = str(tmp_path / "audit.log")
    died = str(tmp_path / "died")
    proc = hooked_cli(
        DYING_WORKER,
        *("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--jobs", "3", "--log", log, *extra),
        env={"DIE_AT": str(die_at), "DIED": died, "DIE_HOW": how},
    )
    assert os.path.exists(died), proc.stderr  # a worker did die
    if how == "raise":  # a bug: an internal error, as in one process, once the rest is done and repaired
        assert proc.returncode == 70 and "a deleting process failed: RuntimeError: a bug in a worker" in proc.stderr, proc.stderr
        return root, log, [], open(died).read()
    assert proc.returncode == 1, proc.stderr
    return root, log, json.loads(proc.stdout)["delete"], open(died).read()


def _check_units_against_log(units: list[dict], log: str) -> None:
    records = audit_records(log)
    outcome = {r["path"]: r for r in records if r["status"] != "started"}
    started = {r["path"] for r in records if r["status"] == "started"}
    for u in units:
        if u["status"] == "deleted":
            # a fully deleted unit: all of its planned bytes freed, its outcome line in the audit log
            assert u["freed_bytes"] == u["reclaim_bytes"], u
            assert u["path"] in outcome and outcome[u["path"]]["bytes"] == u["freed_bytes"], u
    # every unit that was started has its outcome line (the prune itself never died)
    assert started <= set(outcome), sorted(started - set(outcome))


def test_a_worker_that_dies_leaves_no_unit_reported_deleted_without_its_bytes_or_log_line(tmp_path):
    """A worker SIGKILLed on its second model: its first model's units were deleted, their blobs waiting to settle.

    Their outcomes were never sent: they were reported "deleted" with freed_bytes 0, with a
    "started" line and no outcome in the log though the prune lived on. Now each unit the
    dead worker started and never reported is failed, saying what the repair left, and logged.
    """
    root, log, units, died = _prune_with_a_dying_worker(tmp_path, 2)
    _check_units_against_log(units, log)
    first = [u for u in units if u["status"] == "failed"]
    assert first and all("before it was done; after the repair it is gone" in u["error"] for u in first), units
    assert scan_cache_dir(root).warnings == []


def test_a_worker_that_raises_finishes_what_it_started_and_the_run_is_an_internal_error(tmp_path):
    """An exception inside a worker (a bug): what it started is finished and logged; then exit 70, as in one process."""
    root, log, units, died = _prune_with_a_dying_worker(tmp_path, 2, "raise")
    _check_units_against_log(units, log)
    assert scan_cache_dir(root).warnings == []


def test_recovery_after_a_dead_worker_does_not_take_the_junk_the_prune_is_still_finishing(tmp_path):
    """--junk: orphan blobs are set aside by the prune itself, finished after their settling time (after the workers).

    A worker dying on its first model makes the prune run the kind's recovery over the
    whole trash. It used to run before the prune's own junk finishers, "finishing" its orphan
    blobs as "an interrupted prune", their units then deleted with 0 bytes freed.
    """
    root = str(tmp_path / "hub")
    policy = many_repos(root, 12)
    add_orphan_blobs(root, ["models--org--new-1", "models--org--new-3"])  # junk, set aside and finished like any blob
    log = str(tmp_path / "audit.log")
    died = str(tmp_path / "died")
    proc = hooked_cli(
        DYING_WORKER,
        *("prune", "--cache-dir", root, "--config", policy, "--junk", "--yes", "--json", "--jobs", "3", "--log", log),
        env={"DIE_AT": "1", "DIED": died},
    )
    assert os.path.exists(died) and proc.returncode == 0, proc.stderr  # (the model it had not begun was done again)
    done = json.loads(proc.stdout)
    assert {u["status"] for u in done["delete"]} == {"deleted"}, done
    orphans = [u for u in done["delete"] if u["what"] == "orphan"]
    assert len(orphans) == 2
    assert "interrupted prune" not in proc.stderr, proc.stderr  # no prune was interrupted
    for u in orphans:
        assert u["status"] == "deleted" and u["freed_bytes"] == u["reclaim_bytes"] == 100, u


# A process with many descriptors open (a library caller, a scheduler that passes its own):
# the pipes the workers are given are numbered over FD_SETSIZE (1024).
MANY_DESCRIPTORS = """
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
_held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
"""


def test_workers_work_in_a_process_with_descriptors_over_fd_setsize(tmp_path):
    """select.select() refuses descriptors >= 1024: the prune died with an internal error (exit 70), nothing reported.

    With --jobs 1 the same process deletes all 42 units and exits 0; so must the workers (poll).
    """
    root = str(tmp_path / "hub")
    policy = many_repos(root, 12)
    log = str(tmp_path / "audit.log")
    args = ("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--jobs", "3", "--log", log)
    seen = str(tmp_path / "seen")
    proc = hooked_cli(MANY_DESCRIPTORS, *args, env={"RECORD_ITEMS": seen})
    assert proc.returncode == 0, proc.stderr
    assert processes_in(seen) == 3  # (three workers, not one process)
    units = json.loads(proc.stdout)["delete"]
    assert len(units) == 42 and {u["status"] for u in units} == {"deleted"}


# In the CLI's process: the audit log fails in the first worker to start the first unit of its
# second model (a "started" line that does not fit: ENOSPC); the time it failed goes to FAILED_AT.
LOG_FAILS_IN_ONE_WORKER = """
PARENT = os.getpid()
import hfcache.execute.audit as _audit
from hfcache.errors import AuditError
_items = [0]
_run_item = hfcache.execute.run._run_item
def _counted(run, live, deletion, tree, w, path, grace):
    _items[0] += 1
    return _run_item(run, live, deletion, tree, w, path, grace)
hfcache.execute.run._run_item = _counted
_start = _audit.AuditLog.start
def _failing(self, unit, **kw):
    if os.getpid() != PARENT and _items[0] == 2:
        try:
            fd = os.open(os.environ["FAILED_AT"], os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            pass
        else:
            os.write(fd, repr(time.time()).encode())
            os.close(fd)
            raise AuditError(f"cannot write the audit log {self.path}: No space left on device")
    return _start(self, unit, **kw)
_audit.AuditLog.start = _failing
"""


def test_an_audit_log_failing_in_one_worker_stops_the_others_before_their_next_unit(tmp_path):
    """The failing worker told the parent only once its own waiting finishers ran (up to SETTLE, 0.25 s, later).

    Meanwhile the other workers went on starting units. One process would have started none
    after the failure; a worker may finish the unit it is on, not start more.
    """
    root = str(tmp_path / "hub")
    policy = many_repos(root, 24)
    log = str(tmp_path / "audit.log")
    failed_at = str(tmp_path / "failed_at")
    code = PARALLEL_CLI.replace('sys.argv = ["hfcache"', LOG_FAILS_IN_ONE_WORKER + '\nsys.argv = ["hfcache"')
    args = ("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--jobs", "3", "--log", log)
    proc = subprocess.run(
        [sys.executable, "-c", code, "0.03", *args],  # each removal 30 ms: a unit takes well over 0.1 s
        env={**os.environ, "RECORD_ITEMS": "", "FAILED_AT": failed_at},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert proc.returncode == 1 and "No space left" in proc.stderr, proc.stderr
    t = float(open(failed_at).read())
    late = [
        (r["id"], round(r["time_epoch"] - t, 3))
        for r in audit_records(log)
        if r["status"] == "started" and r["time_epoch"] > t + 0.1
    ]
    assert late == [], f"units started by other workers after the audit log failed: {late}"


# In the CLI's process: os.pipe fails once the prune has made N pipes for its workers (EMFILE).
PIPES_RUN_OUT = """
import errno
import hfcache.execute.workers as _workers
PARENT_PID = os.getpid()
_pipe, _made, _in_pool = os.pipe, [0], [False]
def _pipe_or_fail():
    if os.getpid() == PARENT_PID and _in_pool[0]:
        _made[0] += 1
        if _made[0] == int(os.environ["FAIL_AT_PIPE"]):
            time.sleep(0.5)  # (the first worker is deleting by now)
            raise OSError(errno.EMFILE, "Too many open files")
    return _pipe()
os.pipe = _pipe_or_fail
_init = _workers.Pool.__init__
def _counted_init(self, *args, **kwargs):
    _in_pool[0] = True
    try:
        _init(self, *args, **kwargs)
    finally:
        _in_pool[0] = False
_workers.Pool.__init__ = _counted_init
"""


def test_a_pipe_refused_after_the_first_worker_goes_on_with_the_workers_there_are(tmp_path):
    """The task queue and stop pipe, then one pipe per worker: the 4th pipe (the 2nd worker's) fails.

    The parent used to close the first worker's pipe, wait for it (its reports failed: units
    it deleted left half-finished in the trash) and then did every task itself: units the
    worker had deleted were "skipped: no longer in the cache", exit 0.
    """
    root = str(tmp_path / "hub")
    policy = many_repos(root, 12)
    log = str(tmp_path / "audit.log")
    seen = str(tmp_path / "seen")
    args = ("prune", "--cache-dir", root, "--config", policy, "--yes", "--json", "--jobs", "3", "--log", log)
    proc = hooked_cli(PIPES_RUN_OUT, *args, env={"RECORD_ITEMS": seen, "FAIL_AT_PIPE": "4"})
    assert proc.returncode == 0, proc.stderr
    units = json.loads(proc.stdout)["delete"]
    assert len(units) == 42 and {u["status"] for u in units} == {"deleted"}, units
    assert all(u["freed_bytes"] == u["reclaim_bytes"] for u in units)
    assert processes_in(seen) == 1  # the one worker that could start did it all
    records = audit_records(log)
    assert sorted(r["path"] for r in records if r["status"] == "deleted") == sorted(u["path"] for u in units)
    assert os.listdir(os.path.join(root, ".locks", "hfcache-trash")) == []
    assert scan_cache_dir(root).warnings == []
