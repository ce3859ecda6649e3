"""Deleting the models of one cache on several processes at once: forked workers, a shared queue.

Each unit of a prune is a handful of short system calls (renames into the trash, unlinks,
``rmdir``), checks just before it goes, and its "started" line flushed (one ``fdatasync``
for a group of up to 16 units: :data:`hfcache.execute.run.GROUP`). One
process spends most of that time waiting: on the disk's flushes, on discards the file system
makes inside ``unlink`` (ext4 without a journal, mounted with ``discard``), on the interpreter.
Processes deleting different models overlap those waits. On 2 CPUs, 2,000
revisions of 4,000 repos took 3.4 to 4.1 s in one process, 1.4 to 2.1 s on three or four
(``benchmarks/README.md``).

Nothing of a unit's own order changes: a model's units run one after another in one worker,
each checked just before it goes and flushed to the log before its first step, exactly as in
one process (a worker's group of checked models spans its tasks; it tells the parent of a
unit just before the unit's first step, so a unit it never began is never counted as
begun). What a kind's deletion decides about across models (the hub's shared-store
payloads) keeps the models involved in one task (:func:`groups`), so no two workers ever
decide about the same thing.

* The tasks wait in a pipe (:class:`~hfcache.parallel.TaskQueue`) that every worker reads, so
  the work balances itself. Before starting a task a worker says so; it reports each unit's
  outcome as soon as it has one (the parent prints progress, and builds the results).
* A signal, or an audit log that a worker cannot write, stops every worker before its next
  unit: the parent writes one byte into a pipe all of them look at between units.
* A worker that dies (killed, out of memory) is repaired after by the parent (the kind's
  ``recover``, as the next prune would); of what it took and never reported, the parent does
  the models it had not begun again, and says of each unit it started what the repair left
  (:func:`hfcache.execute.run._after_workers`). It also does the tasks nobody took. Workers
  die with the parent (``PR_SET_PDEATHSIG``): a killed prune stops deleting at once, as one
  process would. A worker's bug (an exception) finishes what it started, then fails the run.
* Forked only on Linux, and only while the parent runs no other thread (:func:`~hfcache.parallel.can_fork`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import select
import signal
import struct
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from hfcache import parallel, progress
from hfcache.parallel import TaskQueue

log = logging.getLogger(__name__)

# Tasks (models) per worker below which another worker is not worth its fork.
MIN_SHARE = 16
_LEN = struct.Struct("<I")
_PR_SET_PDEATHSIG = 1
# How often the parent looks at signals and stops while waiting for the workers' reports.
TICK = 0.1


def groups(keys: Sequence[Iterable[str]]) -> list[list[int]]:
    """Indices of items, grouped so that items sharing any key are in one group (each group in the items' order).

    >>> groups([["a"], [], ["b"], ["a", "c"], ["c"]])
    [[0, 3, 4], [1], [2]]
    """
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, ks in enumerate(keys):
        for k in ks:
            j = first.setdefault(k, i)
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    out: dict[int, list[int]] = {}
    for i in range(len(keys)):
        out.setdefault(find(i), []).append(i)
    return list(out.values())


def workers_for(tasks: int, jobs: int) -> int:
    """How many workers ``tasks`` tasks are worth, at most ``jobs``."""
    return parallel.workers_for(tasks, jobs, MIN_SHARE)  # (this module's share: deleting a model is not scanning one)


class Channel:
    """A worker's side of the pool: the next task, a way to report, whether to stop."""

    def __init__(self, queue: TaskQueue, out: int, stop: int) -> None:
        self.queue = queue
        self.out = out
        self._orphaned = False  # (its parent gone: the pipe to it closed)
        self._stop = select.poll()  # (poll, not select: descriptors numbered over 1024 are fine)
        self._stop.register(stop, select.POLLIN | select.POLLHUP)

    def tasks(self) -> Iterator[int]:
        """Task numbers, each announced to the parent before it is handed out; none once told to stop."""
        for chunk in self.queue.chunks():
            for i in chunk:
                if self.stopped():
                    return
                self.send(("take", i))
                yield i

    def send(self, record: object) -> None:
        """Report to the parent; one gone (its end of the pipe closed) only stops this worker before its next unit."""
        data = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        data = _LEN.pack(len(data)) + data
        try:
            while data:
                data = data[os.write(self.out, data) :]
        except BrokenPipeError:
            self._orphaned = True

    def stopped(self) -> bool:
        """Whether the parent asked every worker to stop (a byte in the stop pipe, never read), or is gone."""
        return self._orphaned or bool(self._stop.poll(0))


@dataclass
class Ended:
    """A worker that ended abnormally: its exit status, and every task it took (its last ones may have outcomes not sent)."""

    pid: int
    status: int
    tasks: list[int]


class _Worker:
    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self.buffer = bytearray()
        self.tasks: list[int] = []
        self.finished = False  # said "end": everything it took is reported


def _die_with_parent(parent: int) -> None:
    """Be killed when the parent dies (Linux), so a killed prune stops deleting at once."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # (libc's, in this process)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the broken pipe stops it at its next report
        pass
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(1)


class Pool:
    """Up to ``workers`` forked workers running ``child(channel)`` over ``total`` tasks; see the module docstring."""

    def __init__(self, total: int, workers: int, child: Callable[[Channel], None]) -> None:
        self.total = total
        self.ended: list[Ended] = []
        self.workers: list[_Worker] = []
        self._stopped = False
        self.errors: list[str] = []  # tracebacks of workers that failed (a bug)
        self.queue = TaskQueue(total)
        try:
            self._stop_read, self._stop_write = os.pipe()
        except OSError:
            os.close(self.queue.fd)
            raise
        try:
            parent = os.getpid()
            for _ in range(workers):
                try:
                    read, write = os.pipe()
                except OSError as e:  # out of descriptors: go on with the workers there are (maybe none)
                    log.info("cannot start another deleting process (%s); going on with %d", e.strerror or e, len(self.workers))
                    break
                try:
                    pid = os.fork()
                except OSError as e:
                    os.close(read)
                    os.close(write)
                    log.info("cannot start another deleting process (%s); going on with %d", e.strerror or e, len(self.workers))
                    break
                if pid == 0:  # pragma: no cover - runs in the child (coverage does not follow forks)
                    os.close(read)
                    self._child(parent, child, write)
                os.close(write)
                self.workers.append(_Worker(pid, read))
        except BaseException:
            self.close()
            raise

    def _child(self, parent: int, child: Callable[[Channel], None], out: int) -> None:  # pragma: no cover - a child
        code = 1
        try:
            _die_with_parent(parent)
            for w in self.workers:  # the other workers' pipes are the parent's business
                os.close(w.fd)
            os.close(self._stop_write)
            progress.silence()
            channel = Channel(self.queue, out, self._stop_read)
            try:
                child(channel)
                channel.send(("end",))
                code = 0
            except Exception:
                channel.send(("error", traceback.format_exc()))
        except BaseException:  # noqa: BLE001 - the parent repairs and reports what it took
            pass
        finally:
            os._exit(code)  # no atexit handlers, no flushing of the parent's buffers

    def stop(self) -> None:
        """Ask every worker to stop before its next unit."""
        if not self._stopped:
            self._stopped = True
            os.write(self._stop_write, b"x")

    def run(self, on_record: Callable[[object], None], tick: Callable[[], None]) -> None:
        """Pass each record the workers send to ``on_record`` until all of them ended; ``tick`` at least every :data:`TICK`."""
        live = {w.fd: w for w in self.workers}
        poll = select.poll()
        for fd in live:
            poll.register(fd, select.POLLIN | select.POLLHUP)
        while live:
            for fd, _ in poll.poll(TICK * 1000):
                w = live[fd]
                got = os.read(fd, 1 << 16)
                if got:
                    w.buffer += got
                    for record in self._records(w):
                        self._note(w, record, on_record)
                    continue
                del live[fd]
                poll.unregister(fd)
                self._reap(w)
            tick()

    def _records(self, w: _Worker) -> Iterator[object]:
        view = memoryview(w.buffer)
        offset = 0
        while len(view) - offset >= _LEN.size:
            (length,) = _LEN.unpack_from(view, offset)
            end = offset + _LEN.size + length
            if end > len(view):
                break
            yield pickle.loads(view[offset + _LEN.size : end])
            offset = end
        view.release()
        del w.buffer[:offset]

    def _note(self, w: _Worker, record: object, on_record: Callable[[object], None]) -> None:
        kind = record[0] if isinstance(record, tuple) and record else None
        if kind == "take":
            w.tasks.append(record[1])  # type: ignore[index]
        elif kind == "end":
            w.finished = True
        elif kind == "error":
            self.errors.append(record[1])  # type: ignore[index]
        else:
            on_record(record)

    def _reap(self, w: _Worker) -> None:
        os.close(w.fd)
        w.fd = -1
        _, status = os.waitpid(w.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 or not w.finished:
            self.ended.append(Ended(w.pid, code, w.tasks))

    def untaken(self) -> list[int]:
        """The tasks no worker started (all of them dead, or stopped)."""
        taken = {i for w in self.workers for i in w.tasks}
        return [i for i in range(self.total) if i not in taken]

    def close(self) -> None:
        """Stop the workers still running (an error in the parent), let them finish what they started, close the pipes.

        Their reports are read and dropped meanwhile: a worker whose pipe is full, or closed,
        would not get to its finishers.
        """
        self.stop()
        if any(w.fd >= 0 for w in self.workers):
            self.run(lambda record: None, lambda: None)
        for fd in (self._stop_read, self._stop_write, self.queue.fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stop_read = self._stop_write = self.queue.fd = -1


def describe_end(status: int) -> str:
    """``killed by SIGKILL`` for -9, ``exited with status 1`` for 1."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}" if status else "ended without saying it was done"
