"""Run one function over many inputs with worker processes (Linux) or threads, results in order.

A cache scan is a few system calls per file plus Python bookkeeping per file: on a local disk
it is bound by the interpreter, so threads only take turns holding its lock, while forked
processes really run side by side (``benchmarks/README.md`` has the numbers). On a network
file system each call waits on a round trip instead, and any kind of worker overlaps those.

Workers are forked, not spawned: they start in a millisecond with everything already
imported. Inputs wait in a queue (a pipe of chunk numbers) that every worker, the parent too,
takes from, so a slow chunk never leaves the others idle. Each result goes back pickled as
soon as it is done, and the parent unpickles what has arrived between its own inputs. A fork
is used only on Linux and only while this process runs no other thread (a thread could hold a
lock the child would then wait on forever); otherwise the same work runs in threads. A worker
that dies or fails is not trusted: whatever it did not send is done again here, so the result
never depends on how the work was split.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from hfcache import progress

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

MIN_AUTO_JOBS = 4
MAX_AUTO_JOBS = 8
MIN_SHARE = 16  # inputs per worker below which another worker is not worth its fork


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as a container or ``taskset`` sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_jobs() -> int:
    """The default number of workers where they can be forked: one per usable CPU, at least 4, at most 8; else 1.

    At least 4 because a scan of a cache that is not in memory (a nightly prune, a big
    cache, NFS) waits on the disk or the network, and more workers overlap those waits even
    on one or two CPUs: on a cold 100,000-file cache, 2 CPUs, 4 workers took 4.4 to 5.4 s
    against 6.3 to 7.5 s for 2 (and 8 took 3.6 to 4.6 s). On a warm cache 4 cost the same as
    2. At most 8 because each worker adds about 4 MB. Threads are slower than one worker on
    a local disk, so without fork the default is 1 (benchmarks/README.md).
    """
    return min(max(usable_cpus(), MIN_AUTO_JOBS), MAX_AUTO_JOBS) if can_fork() else 1


def can_fork() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1


def workers_for(total: int, jobs: int, min_share: int = MIN_SHARE) -> int:
    """How many workers ``total`` inputs are worth, at most ``jobs``: each gets at least ``min_share`` of them."""
    return max(1, min(jobs, total // min_share))


def ordered_map(func: Callable[[T], R], inputs: Sequence[T], jobs: int, *, label: str = "") -> list[R]:
    """``[func(x) for x in inputs]``, spread over up to ``jobs`` workers; reports progress under ``label``.

    ``func`` must not write anything a worker could share (each forked worker has its own
    copy of memory) and its results must pickle.
    """
    total = len(inputs)
    workers = workers_for(total, jobs)
    if workers == 1:
        return _serial_map(func, inputs, label)
    if can_fork():
        log.debug("%s: %d inputs, %d worker processes", label, total, workers)
        return _fork_map(func, inputs, workers, label)
    log.debug("%s: %d inputs, %d threads", label, total, workers)
    with ThreadPoolExecutor(workers) as pool:
        results = []
        for done, result in enumerate(pool.map(func, inputs, chunksize=8), 1):
            results.append(result)
            progress.report(label, done, total)
        return results


def _serial_map(func: Callable[[T], R], inputs: Sequence[T], label: str) -> list[R]:
    results = []
    for done, x in enumerate(inputs, 1):
        results.append(func(x))
        progress.report(label, done, len(inputs))
    return results


_RECORD = struct.Struct("<II")  # a result: input index, pickle length
_TASK = struct.Struct("<I")  # a task: index of the first input of a chunk
MAX_CHUNKS = 1024  # tasks in the queue pipe: 4 KiB, what even a one-page pipe holds (over pipe-user-pages-soft)
RESULT_PIPE_BYTES = 1 << 20  # results are drained between inputs; a bigger pipe seldom blocks a child
READ_BYTES = 1 << 16  # per read: under malloc's mmap threshold


class TaskQueue:
    """The inputs, in chunks, as fixed-size records in a pipe every worker reads from.

    Reads of one record are atomic between processes, so each chunk goes to exactly one
    worker, and whoever is free takes the next: the work balances itself.
    """

    def __init__(self, total: int) -> None:
        self.size = -(-total // MAX_CHUNKS)  # ceil: at most MAX_CHUNKS chunks
        self.total = total
        tasks = b"".join(_TASK.pack(i) for i in range(0, total, self.size))
        self.fd, write = os.pipe()
        try:
            os.set_blocking(write, False)  # never wait here: there is no reader yet
            if os.write(write, tasks) != len(tasks):
                raise OSError(f"the task pipe took only part of {len(tasks)} bytes")
        except OSError:
            os.close(self.fd)
            raise
        finally:
            os.close(write)  # all written: an empty pipe now reads as the end

    def chunks(self) -> Iterator[range]:
        while record := os.read(self.fd, _TASK.size):
            (start,) = _TASK.unpack(record)
            yield range(start, min(start + self.size, self.total))


class _Worker:
    """A forked child taking chunks from the queue and streaming back one record per input."""

    def __init__(self, func: Callable[[T], R], inputs: Sequence[T], queue: TaskQueue) -> None:
        read, write = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            raise
        if self.pid == 0:  # pragma: no cover - runs in the child (coverage does not follow forks)
            os.close(read)
            _child(func, inputs, queue, write)
        os.close(write)
        import fcntl  # Linux only, as forking is

        try:
            fcntl.fcntl(read, fcntl.F_SETPIPE_SZ, RESULT_PIPE_BYTES)
        except OSError:  # pragma: no cover - over the user's pipe-max-size: the default size works too
            pass
        os.set_blocking(read, False)
        self.fd = read
        self.buffer = bytearray()
        self.eof = False
        self.status: int | None = None

    def drain(self, results: dict[int, R], wait: bool = False) -> None:
        """Read what the child has sent so far (or, with ``wait``, all it will send) into ``results``."""
        while not self.eof:
            try:
                got = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                if not wait:
                    break
                select.select([self.fd], [], [])
                continue
            if not got:
                self.eof = True
            self.buffer += got
        view = memoryview(self.buffer)
        offset = 0
        while len(view) - offset >= _RECORD.size:
            index, length = _RECORD.unpack_from(view, offset)
            end = offset + _RECORD.size + length
            if end > len(view):
                break
            try:
                results[index] = pickle.loads(view[offset + _RECORD.size : end])
            except Exception:  # noqa: BLE001 - garbled: that input is done again here
                pass
            offset = end
        view.release()
        del self.buffer[:offset]

    def reap(self, kill: bool = False) -> int:
        """Wait for the child (after killing it when asked) and close its pipe; its exit status."""
        if self.status is not None:
            return self.status
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - already gone
                pass
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status


def _child(func: Callable[[T], R], inputs: Sequence[T], queue: TaskQueue, out: int) -> None:  # pragma: no cover
    """The worker's whole life: chunks from the queue, a record per input down the pipe; then ``_exit``."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent reports it, the child just goes
        progress.silence()
        for chunk in queue.chunks():
            for i in chunk:
                data = pickle.dumps(func(inputs[i]), protocol=pickle.HIGHEST_PROTOCOL)
                record = _RECORD.pack(i, len(data)) + data
                while record:
                    record = record[os.write(out, record) :]
        code = 0
    except BaseException:  # noqa: BLE001 - anything: the parent does what is missing itself
        pass
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def _fork_map(func: Callable[[T], R], inputs: Sequence[T], workers: int, label: str) -> list[R]:
    """The parent is a worker too: between its own inputs it unpickles what the children sent."""
    total = len(inputs)
    results: dict[int, R] = {}
    try:
        queue = TaskQueue(total)
    except OSError as e:
        log.info("no task queue for workers (%s); working alone", e.strerror or e)
        return _serial_map(func, inputs, label)
    children: list[_Worker] = []
    try:
        for _ in range(workers - 1):
            try:
                children.append(_Worker(func, inputs, queue))
            except OSError as e:  # out of processes or file descriptors: go on with fewer workers
                log.info("cannot start another worker (%s); going on with %d", e.strerror or e, len(children) + 1)
                break
        for chunk in queue.chunks():
            for i in chunk:
                results[i] = func(inputs[i])
                for child in children:
                    child.drain(results)
                progress.report(label, len(results), total)
        for child in children:
            child.drain(results, wait=True)
            if child.reap() != 0:
                log.info("scan worker %d failed; what it did not send is done here", child.pid)
            progress.report(label, len(results), total)
    finally:
        os.close(queue.fd)
        for child in children:  # reaped already, unless an exception (Ctrl-C, a bug) came first
            child.reap(kill=True)
    for i in range(total):  # what a failed child took but never sent
        if i not in results:
            results[i] = func(inputs[i])
    return [results[i] for i in range(total)]
