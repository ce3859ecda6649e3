"""Signals (issue 15, item 11): SIGTERM and SIGHUP stop hfcache as Ctrl-C does, never half-way through a unit.

Outside an execution a signal stops at once (exit 130, ``interrupted (SIGTERM)``). While a
plan executes it is only noted (:mod:`hfcache.interrupt`): the unit under way finishes, the
rest is skipped with the reason ``not attempted: interrupted (SIGTERM)``, the results so far are printed
(table or JSON) and logged, and the exit code is 130.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
from huggingface_hub import scan_cache_dir

import hfcache
from hfcache import interrupt
from hfcache.execute.audit import read_log
from hfcache.execute.prune_lock import PruneLocks
from tests.support import assert_kept_revisions_load_offline, contents, many_repos, run_cli, slow_cli, small_cache

SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGHUP, id="SIGHUP")]


def deleted_lines(log: str) -> list[dict]:
    return [r for r in read_log(log) if r.get("status") == "deleted"]


def interrupt_a_prune(tmp_path, signum: int, *, extra: tuple[str, ...] = ("--json",)):
    """A real prune of 8 repos (28 units), signalled once two units are in the log; returns what it printed."""
    root = str(tmp_path / "hub")
    policy = many_repos(root, 8)
    before = scan_cache_dir(root)
    done = run_cli("prune", "--cache-dir", root, "--config", policy, "--dry-run", "--json")
    planned = json.loads(done.stdout)["delete"]
    assert len(planned) == 4 * 4 + 4 * 3
    log = str(tmp_path / "audit.log")
    proc = slow_cli(0.02, "prune", "--cache-dir", root, "--config", policy, "--yes", "--log", log, *extra)
    deadline = time.time() + 60
    while len(deleted_lines(log)) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return root, before, planned, log, proc.returncode, out, err


def assert_nothing_half_done(root: str, before, deleted: set[str], log: str, monkeypatch) -> None:
    """What is gone is exactly what was reported and logged deleted, and every other revision loads offline."""
    assert {r["revision"] for r in deleted_lines(log)} == deleted
    assert len(deleted_lines(log)) == len(deleted)  # one line per unit, none twice
    (cache,) = hfcache.scan([root]).caches
    remaining = {r.revision for i in cache.items for r in i.revisions}
    assert remaining == {r.commit_hash for repo in before.repos for r in repo.revisions} - deleted
    assert not cache.all_warnings
    assert_kept_revisions_load_offline(root, before, deleted, monkeypatch)  # scan_cache_dir: no warnings either


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_during_a_prune_reports_what_was_deleted_and_exits_130(tmp_path, monkeypatch, signum):
    name = signal.Signals(signum).name
    root, before, planned, log, code, out, err = interrupt_a_prune(tmp_path, signum)
    assert code == 130, (out, err)
    assert f"interrupted ({name})" in err and "Traceback" not in err
    result = json.loads(out)  # the results so far, as an uninterrupted run prints them
    assert [u["path"] for u in result["delete"]] == [u["path"] for u in planned]
    statuses = {u["status"] for u in result["delete"]}
    assert statuses <= {"deleted", "skipped"}, statuses
    deleted = {u["revision"] for u in result["delete"] if u["status"] == "deleted"}
    assert len(deleted) >= 2
    assert result["freed_bytes"] == sum(u["freed_bytes"] or 0 for u in result["delete"])
    assert_nothing_half_done(root, before, deleted, log, monkeypatch)


def test_a_signal_during_a_prune_prints_the_result_table(tmp_path, monkeypatch):
    root, before, planned, log, code, out, err = interrupt_a_prune(tmp_path, signal.SIGTERM, extra=())
    assert code == 130, (out, err)
    assert "interrupted (SIGTERM)" in err
    assert "deleted" in out and "org/old-0" in out  # the normal result table, on stdout
    deleted = {r["revision"] for r in deleted_lines(log)}
    assert_nothing_half_done(root, before, deleted, log, monkeypatch)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_during_a_prune_stops_it_after_the_unit_under_way(tmp_path, monkeypatch, signum):
    name = signal.Signals(signum).name
    root, before, planned, log, code, out, err = interrupt_a_prune(tmp_path, signum)
    assert code == 130, (out, err)
    result = json.loads(out)
    deleted = {u["revision"] for u in result["delete"] if u["status"] == "deleted"}
    stopped = [u for u in result["delete"] if u["status"] == "skipped"]
    assert stopped and len(deleted) + len(stopped) == len(planned)  # stopped part-way, nothing failed
    assert all(u["error"].endswith(f"interrupted ({name})") for u in stopped), stopped  # "not attempted: ..."
    assert all(u["freed_bytes"] in (0, None) for u in stopped)
    assert_nothing_half_done(root, before, deleted, log, monkeypatch)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_while_waiting_for_another_prunes_lock_stops_at_once(tmp_path, signum):
    root = str(tmp_path / "hub")
    small_cache(root)
    before = contents(root)
    with PruneLocks({root: os.path.join(root, ".locks", "hfcache-prune.lock")}, 0):  # another prune runs
        proc = slow_cli(0, "prune", "--cache-dir", root, "--max-age", "30d", "--yes", "--lock-wait", "10m")
        time.sleep(2)  # scanned and planned by now: waiting for the lock
        assert proc.poll() is None, proc.communicate()
        started = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - started < 10
    assert proc.returncode == 130, (out, err)
    assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in err
    assert {k: v for k, v in contents(root).items() if "hfcache-prune" not in k} == before


# ---------------------------------------------------------------------------------------------
# In this process


@pytest.fixture
def handlers():
    """The signals as in a terminal's command (not as the test run's caller may have left them: ignored
    under nohup or in a background job); the handlers restored and any noted signal forgotten after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    interrupt.reset()


@pytest.mark.parametrize("signum", [signal.SIGINT, *(p.values[0] for p in SIGNALS)])
def test_a_signal_outside_an_execution_exits_130_at_once(tmp_path, monkeypatch, capsys, handlers, signum):
    from hfcache import cli

    root = str(tmp_path / "hub")
    small_cache(root)
    before = contents(root)

    def signalled_scan(*args, **kwargs):
        signal.raise_signal(signum)
        raise AssertionError("the signal did not stop the scan")

    monkeypatch.setattr(cli.prune, "scan_caches", signalled_scan)
    monkeypatch.setattr(sys, "argv", ["hfcache", "prune", "--cache-dir", root, "--max-age", "30d", "--yes"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 130
    err = capsys.readouterr().err
    assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in err
    assert contents(root) == before


def test_a_signal_ignored_by_the_caller_stays_ignored(tmp_path, monkeypatch, handlers):
    """Under nohup (SIGHUP ignored) hfcache must not start reacting to SIGHUP."""
    from hfcache import cli

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    monkeypatch.setattr(sys, "argv", ["hfcache", "scan", "--cache-dir", str(tmp_path), "--json"])
    with pytest.raises(SystemExit):
        cli.main()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is interrupt.handle


def test_deferred_only_notes_the_signal(handlers):
    assert interrupt.requested() is None
    with interrupt.deferred():
        interrupt.handle(signal.SIGTERM)  # noted, not raised
        interrupt.handle(signal.SIGINT)  # the first signal is the one reported
        assert interrupt.is_deferred()
    assert interrupt.requested() == "SIGTERM" and interrupt.reason() == "interrupted (SIGTERM)"
    assert not interrupt.is_deferred()
    with pytest.raises(interrupt.Interrupted):
        interrupt.handle(signal.SIGHUP)
    interrupt.reset()
    assert interrupt.requested() is None
