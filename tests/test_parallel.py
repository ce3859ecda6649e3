"""Worker processes for a scan (issue 7): results in order and complete, whatever the workers do.

Speed is measured by ``benchmarks/bench_scan.py``; these tests check what must hold at any speed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import multiprocessing
import os
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from hfcache import parallel, progress
from hfcache.caches.scan import scan_caches
from tests.fakehub import FakeHub
from tests.support import build_rich_cache

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
sys.path.insert(0, BENCHMARKS)

from make_cache import make_cache  # noqa: E402

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")


def alone(check):
    """Run ``check`` in a fresh interpreter, where no other thread runs.

    Workers are forked only while this process runs no other thread, and a test session
    has some (a download's tqdm monitor, a loopback server's handlers): here they would
    quietly run in threads, and the fork path would go untested.
    """
    proc = multiprocessing.get_context("spawn").Process(target=check)
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == 0, f"{check.__name__} failed in its own process (traceback above)"


@contextmanager
def counting_forks():
    """The number of workers of each call that really forked: no test passes by quietly running in one process."""
    calls: list[int] = []
    real = parallel._fork_map

    def counting(*args):
        calls.append(args[2])
        return real(*args)

    parallel._fork_map = counting
    try:
        yield calls
    finally:
        parallel._fork_map = real


def no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def square_with_pid(x: int) -> tuple[int, int]:
    time.sleep(0.001)  # long enough for every worker to get some of the inputs
    return x * x, os.getpid()


def check_order_and_workers() -> None:
    for jobs in (2, 3, 8):
        with counting_forks() as forks:
            got = parallel.ordered_map(square_with_pid, range(500), jobs)
        assert [r for r, _ in got] == [x * x for x in range(500)]
        pids = {pid for _, pid in got}
        assert os.getpid() in pids and 1 < len(pids) <= jobs, pids  # the parent works too, and the children
        assert forks == [jobs] and no_children_left()


@linux_only
def test_results_come_back_in_order_from_several_processes():
    alone(check_order_and_workers)


def test_small_inputs_and_one_job_stay_in_this_process():
    with counting_forks() as forks:
        assert parallel.ordered_map(square_with_pid, range(10), 4) == [(x * x, os.getpid()) for x in range(10)]
        assert parallel.ordered_map(square_with_pid, range(100), 1) == [(x * x, os.getpid()) for x in range(100)]
        assert parallel.ordered_map(square_with_pid, [], 4) == []
    assert forks == []


def test_with_another_thread_running_threads_are_used_not_fork():
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not parallel.can_fork() and parallel.auto_jobs() == 1
        with counting_forks() as forks:
            got = parallel.ordered_map(square_with_pid, range(200), 4)
    finally:
        stop.set()
        other.join()
    assert got == [(x * x, os.getpid()) for x in range(200)] and forks == []


PARENT = [0]


def dies_in_children(x: int) -> int:
    """Kills a child worker on its first input (as the OOM killer might); fine in the parent."""
    time.sleep(0.001)
    if os.getpid() != PARENT[0]:
        os._exit(9)
    return x + 1


def raises_in_children(x: int) -> int:
    time.sleep(0.001)
    if os.getpid() != PARENT[0]:
        raise MemoryError("out of memory in a worker")
    return x + 1


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def check_failed_workers() -> None:
    PARENT[0] = os.getpid()
    handler = Lines()
    logging.getLogger("hfcache.parallel").addHandler(handler)
    logging.getLogger("hfcache.parallel").setLevel(logging.INFO)
    for func in (dies_in_children, raises_in_children):
        handler.lines.clear()
        with counting_forks() as forks:
            got = parallel.ordered_map(func, range(400), 2)
        assert got == [x + 1 for x in range(400)]
        assert forks == [2] and any("failed; what it did not send is done here" in line for line in handler.lines)
        assert no_children_left()


@linux_only
def test_a_failed_worker_loses_nothing():
    alone(check_failed_workers)


def check_fork_refused() -> None:
    handler = Lines()
    logging.getLogger("hfcache.parallel").addHandler(handler)
    logging.getLogger("hfcache.parallel").setLevel(logging.INFO)
    real_fork, forked = os.fork, []

    def fork_once() -> int:  # the second fork fails, as at the process limit (EAGAIN)
        if forked:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        forked.append(1)
        return real_fork()

    os.fork = fork_once
    try:
        got = parallel.ordered_map(square_with_pid, range(300), 3)
    finally:
        os.fork = real_fork
    assert [r for r, _ in got] == [x * x for x in range(300)]
    assert len({pid for _, pid in got}) == 2  # the parent and the one child it could start
    expected = "cannot start another worker (Resource temporarily unavailable); going on with 2"
    assert any(expected in line for line in handler.lines)
    assert no_children_left()


@linux_only
def test_when_fork_fails_the_scan_goes_on_with_fewer_workers():
    alone(check_fork_refused)


def fails_in_parent(x: int) -> int:
    time.sleep(0.001)
    if x >= 100 and os.getpid() == PARENT[0]:
        raise KeyError("a bug")
    return x


def check_error_in_parent() -> None:
    PARENT[0] = os.getpid()
    try:
        # Chunks of one input each, taken in turn: the parent takes some after the 100th.
        parallel.ordered_map(fails_in_parent, range(1000), 3)
    except KeyError:
        pass
    else:
        raise AssertionError("the error was lost")
    assert no_children_left()


@linux_only
def test_an_error_in_the_parent_stops_and_reaps_every_child():
    alone(check_error_in_parent)


def check_progress() -> None:
    seen: list[tuple[str, int, int]] = []
    with counting_forks() as forks, progress.listening(lambda label, done, total: seen.append((label, done, total))):
        parallel.ordered_map(square_with_pid, range(300), 2, label="work")
    assert forks == [2]
    counts = [done for _, done, _ in seen]
    assert counts == sorted(counts) and counts[-1] == 300
    assert {(label, total) for label, _, total in seen} == {("work", 300)}


@linux_only
def test_progress_counts_every_input_once_up_to_the_total():
    alone(check_progress)


def check_hub_scan(rich: str, many: str) -> None:
    one = scan_caches([rich, many], now=0.0)
    with counting_forks() as forks:
        several = scan_caches([rich, many], now=0.0, jobs=3)
    assert forks == [2]  # the big cache forked (33 repos: two workers); the rich one (6 repos) is too small
    assert dataclasses.asdict(one) == dataclasses.asdict(several)
    assert [c.ledger for c in one.caches] == [c.ledger for c in several.caches]
    # What `hfcache scan` and `metrics` ask for: everything but the ledger, which only a plan reads.
    shown = scan_caches([rich, many], now=0.0, jobs=3, ledger=False)
    assert [c.ledger for c in shown.caches] == [None, None]
    assert [dataclasses.asdict(dataclasses.replace(c, ledger=None)) for c in one.caches] == [
        dataclasses.asdict(c) for c in shown.caches
    ]


@linux_only
def test_a_hub_scan_with_workers_is_the_same_scan(tmp_path):
    """The whole inventory (sizes, reclaimable bytes with a shared store, orphans, the ledger) is identical."""
    rich, many = str(tmp_path / "rich"), str(tmp_path / "many")
    with FakeHub() as hub:
        build_rich_cache(hub, rich)
    assert make_cache(many, 1500) == 33
    alone(functools.partial(check_hub_scan, rich, many))
