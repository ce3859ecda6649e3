"""Run one function over many inputs with worker processes (Linux) or threads, results in order.

A cache scan is a few system calls per file plus Python bookkeeping per file: on a local disk
it is bound by the interpreter, so threads only take turns holding its lock, while forked
processes really run side by side (``benchmarks/README.md`` has the numbers). On a network
file system each call waits on a round trip instead, and any kind of worker overlaps those.

Workers are forked, not spawned: they start in a millisecond with everything already
imported and send back only their results (pickled one input at a time as it is done, so a
worker holds its share only in that compact form). A fork is used only on Linux and only while this process runs no
other thread (a thread could hold a lock the child would then wait on forever); otherwise the
same work runs in threads. A worker that dies or fails is not trusted: its share is done
again here, so the result never depends on how the work was split.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from . import progress

T = TypeVar("T")
R = TypeVar("R")

MAX_AUTO_JOBS = 8
MIN_SHARE = 16  # inputs per worker below which another worker is not worth its fork


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as a container or ``taskset`` sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_jobs() -> int:
    """The default number of workers: one per usable CPU (at most 8) where workers can be forked, else 1.

    Threads are slower than one worker on a local disk, so without fork the default stays 1.
    """
    return min(usable_cpus(), MAX_AUTO_JOBS) if can_fork() else 1


def can_fork() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1


def ordered_map(
    func: Callable[[T], R], inputs: Sequence[T], jobs: int, *, label: str = "", processes: bool = True
) -> list[R]:
    """``[func(x) for x in inputs]``, spread over up to ``jobs`` workers; reports progress under ``label``.

    ``func`` must not write anything a worker could share (each forked worker has its own
    copy of memory) and its results must pickle. ``processes=False`` always uses threads.
    """
    total = len(inputs)
    workers = max(1, min(jobs, total // MIN_SHARE))
    if workers == 1:
        results = []
        for done, x in enumerate(inputs, 1):
            results.append(func(x))
            progress.report(label, done, total)
        return results
    if processes and can_fork():
        return _fork_map(func, inputs, workers, label)
    with ThreadPoolExecutor(workers) as pool:
        results = []
        for done, result in enumerate(pool.map(func, inputs, chunksize=8), 1):
            results.append(result)
            progress.report(label, done, total)
        return results


class _Worker:
    """A forked child working on ``share`` (indexes into the inputs)."""

    def __init__(self, share: range, func: Callable[[T], R], inputs: Sequence[T], ticks: bool) -> None:
        self.share = share
        result_r, result_w = os.pipe()
        tick_r, tick_w = os.pipe() if ticks else (-1, -1)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child (coverage does not follow forks)
            os.close(result_r)
            if ticks:
                os.close(tick_r)
            _child(func, inputs, share, result_w, tick_w)
        os.close(result_w)
        if ticks:
            os.close(tick_w)
            os.set_blocking(tick_r, False)
        self.results = os.fdopen(result_r, "rb")
        self.tick_fd = tick_r
        self.ticks = 0

    def poll_ticks(self) -> None:
        """Count the inputs the child has finished so far, without waiting."""
        if self.tick_fd < 0:
            return
        try:
            got = os.read(self.tick_fd, 65536)
        except BlockingIOError:
            return
        if not got:
            os.close(self.tick_fd)
            self.tick_fd = -1
        self.ticks += len(got)

    def collect(self) -> list[R] | None:
        """The child's results, or None when it died or failed (it is then reaped either way)."""
        results: list[R] | None = []
        try:
            for _ in self.share:
                results.append(pickle.load(self.results))  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a short or garbled stream: the share is redone here
            results = None
        if self.reap() != 0:
            results = None
        return results

    def reap(self, kill: bool = False) -> int:
        """Wait for the child (after killing it when asked) and close the pipes; its exit status."""
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - already gone
                pass
        self.results.close()
        if self.tick_fd >= 0:
            os.close(self.tick_fd)
            self.tick_fd = -1
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def _child(func: Callable[[T], R], inputs: Sequence[T], share: range, result_fd: int, tick_fd: int) -> None:  # pragma: no cover
    """The worker's whole life: its results go down the pipe, one pickle per input; then ``_exit``."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent reports it, the child just goes
        progress.silence()
        # Kept here, pickled, until the share is done: the parent reads only after its own share,
        # and a child blocked on a full pipe would do nothing meanwhile.
        buffer = io.BytesIO()
        for i in share:
            pickle.dump(func(inputs[i]), buffer, protocol=pickle.HIGHEST_PROTOCOL)
            if tick_fd >= 0:
                os.write(tick_fd, b".")
        with os.fdopen(result_fd, "wb") as out:
            out.write(buffer.getbuffer())
        code = 0
    except BaseException:  # noqa: BLE001 - anything: the parent redoes this share
        pass
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def _fork_map(func: Callable[[T], R], inputs: Sequence[T], workers: int, label: str) -> list[R]:
    total = len(inputs)
    ticks = progress.active()
    children: list[_Worker] = []
    results: list[R | None] = [None] * total
    try:
        for w in range(1, workers):
            children.append(_Worker(range(w, total, workers), func, inputs, ticks))
        done = 0
        for i in range(0, total, workers):
            results[i] = func(inputs[i])
            done += 1
            if ticks:
                for child in children:
                    child.poll_ticks()
                progress.report(label, done + sum(c.ticks for c in children), total)
        while children:
            child = children.pop(0)
            got = child.collect()
            if got is None:
                got = [func(inputs[i]) for i in child.share]
            for i, result in zip(child.share, got, strict=True):
                results[i] = result
            done += len(child.share)
            progress.report(label, done + sum(c.ticks for c in children), total)
    finally:
        for child in children:  # only after an exception here (Ctrl-C, a bug): stop the rest
            child.reap(kill=True)
    return results  # type: ignore[return-value]
