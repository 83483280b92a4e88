"""Run one function over many submissions in parallel processes, results in input order.

`plan` and `apply` over a repository of municipalities are independent per submission
(one manifest, one export, one lockfile with its own lock), and the per-record work is
CPU-bound Python, so threads would share one core: processes use them all. Results come
back in the order of the inputs whatever order the workers finish in, so the output of
`-j 4` is byte for byte that of `-j 1`.

Workers are started with `spawn`, not `fork` or `forkserver`: a forked child inherits the
parent's threads and locks mid-flight (a progress bar, a broker connection), and a fork
server keeps the environment of the moment it started, while a `spawn` worker sees the
environment (`IPLOSCTL_STATE_DIR`, `XDG_CACHE_HOME`, …) as it is when the pool starts.
Each worker is fed one item at a time through a pipe by a thread of this process, not by
a `ProcessPoolExecutor`, whose workers cannot be stopped before they have taken an item
(`caller_works` needs that). `jobs == 1`, or a single item, runs in this process with no
workers at all.
"""

from __future__ import annotations

import contextlib
import copyreg
import dataclasses
import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from iplosctl.errors import WorkerLostError

T = TypeVar("T")

#: what the user can do when a worker died: nothing in the input is wrong
_AGAIN = ": run the command again (apply picks up where it stopped), with -j 1 if memory is short"
R = TypeVar("R")


def picklable_dataclasses(*classes: type) -> None:
    """Let frozen dataclasses that mypyc compiled (`iplosctl.compiled`) cross to a worker.

    A compiled class has no `__dict__`, so pickle's default restores its fields with
    `setattr`, which a frozen dataclass refuses: rebuild it through its constructor
    instead. Harmless for the same classes run interpreted.
    """
    for cls in classes:
        copyreg.pickle(cls, _by_constructor)


def _by_constructor(obj: Any) -> tuple[type, tuple[Any, ...]]:
    return type(obj), tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


def default_jobs() -> int:
    """The cores this process may use (`os.process_cpu_count` from Python 3.13 on)."""
    count: Callable[[], int | None] = getattr(os, "process_cpu_count", os.cpu_count)
    return max(1, count() or 1)


def run_ordered(
    work: Callable[[T], R],
    items: Sequence[T],
    *,
    jobs: int | None = None,
    caller_works: bool = False,
) -> Iterator[R]:
    """`work(item)` for each item, yielded in the order of `items` as soon as each is done.

    `work` must be a module-level function (or a `functools.partial` of one) and its
    arguments and results picklable. It should return its failures rather than raise
    them: an exception still propagates, but only once the items before it are yielded.

    Items are handed out in order, each to whoever is free. With `caller_works`, this
    process is one of the `jobs`, and a worker takes its first item only once it is up:
    when most items are quick (an unchanged plan answered from its caches) this process
    is done before a spawned worker has finished importing, and the workers are stopped
    unused (356 unchanged manifests: 1.9 s with two workers, 1.2 s this way). Only for
    work that ^C may cut short in this process (plan writes nothing but caches).

    ^C reaches the whole process group: the workers ignore it and finish the item they
    hold, nothing new starts, the items finished in order are still yielded, then
    KeyboardInterrupt propagates.
    """
    total = min(jobs or default_jobs(), len(items))
    helpers = total - 1 if caller_works else total
    if total <= 1 or helpers < 1:
        for item in items:
            yield work(item)
        return
    board = _Board(len(items), helpers)
    pool: list[_Helper] = []
    position = 0  # the next item to yield
    mine: int | None = None  # the item this process is working on
    try:
        for _ in range(helpers):  # inside the try: one that cannot start stops the others
            pool.append(_Helper(work, items, board))
        if caller_works:
            while (mine := board.take()) is not None:
                try:
                    board.done(mine, True, work(items[mine]))
                except Exception as exc:  # raised in its turn, after the items before it
                    board.done(mine, False, exc)
                mine = None
                while (ready := board.ready(position)) is not None:
                    ok, value = ready
                    if not ok:
                        raise value
                    position += 1
                    yield value
        while position < len(items):
            ok, value = board.result(position)
            if not ok:
                raise value
            position += 1
            yield value
    except KeyboardInterrupt:
        board.close()
        while position < len(items) and position != mine and board.taken(position):
            ok, value = board.result(position)
            if not ok:
                break
            position += 1
            yield value
        raise
    finally:
        board.close()
        for helper in pool:
            helper.stop()


class _Board:
    """How many items are handed out (in order) and what came back. A closed board hands
    out nothing more. `feeders` counts the workers still able to take items: when none is
    left, an item nobody took can never be done."""

    def __init__(self, count: int, feeders: int) -> None:
        self._count = count
        self._handed = 0
        self.closed = False
        self.feeders = feeders
        self.last_loss = ""
        self._results: dict[int, tuple[bool, Any]] = {}
        self._changed = threading.Condition()

    def take(self) -> int | None:
        with self._changed:
            if self.closed or self._handed >= self._count:
                return None
            self._handed += 1
            return self._handed - 1

    def taken(self, index: int) -> bool:
        with self._changed:
            return index < self._handed

    def close(self) -> None:
        with self._changed:
            self.closed = True

    def done(self, index: int, ok: bool, value: Any) -> None:
        with self._changed:
            self._results[index] = (ok, value)
            self._changed.notify_all()

    def feeder_gone(self, why: str = "") -> None:
        with self._changed:
            self.feeders -= 1
            self.last_loss = why or self.last_loss
            self._changed.notify_all()

    def ready(self, index: int) -> tuple[bool, Any] | None:
        """What came back for `index` if it has, without waiting."""
        with self._changed:
            return self._results.pop(index, None)

    def result(self, index: int) -> tuple[bool, Any]:
        """Wait for whoever took `index`; fail it if no worker is left to take it."""
        with self._changed:
            self._changed.wait_for(
                lambda: index in self._results or (self.feeders <= 0 and index >= self._handed)
            )
            if index in self._results:
                return self._results.pop(index)
            why = self.last_loss or "no worker process is left" + _AGAIN
            return False, WorkerLostError(why)


class _Helper:
    """One `spawn` worker and the thread in this process that feeds it.

    Every item the thread takes is reported to the board, also when the worker died (OOM,
    a signal) or the item could not be handed over: that item fails, the other workers go
    on, and once none is left the items nobody took fail too (`_Board.result`), so nothing
    waits for ever.
    """

    def __init__(self, work: Callable[[T], R], items: Sequence[T], board: _Board) -> None:
        ours, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(theirs, work), daemon=True
        )
        self.process.start()
        theirs.close()
        self.conn = ours
        self.items: Sequence[Any] = items
        self.board = board
        self.ready = threading.Event()
        #: the item handed to the worker and not answered yet
        self.holding: int | None = None
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        why = ""
        try:
            why = self._take_items()
        except Exception as exc:  # an item or answer that does not pickle, or a bug here
            why = f"feeding a worker process failed: {exc!r}"
            if self.holding is not None:
                self.board.done(self.holding, False, exc)
        finally:
            with contextlib.suppress(Exception):  # tell the worker to stop, if it still can
                self.conn.send(None)
            self.board.feeder_gone(why)

    def _take_items(self) -> str:
        """Feed the worker until no item is free; what went wrong if it died ('' if not)."""
        try:
            self.conn.recv()  # the worker is up: only now is an item worth handing over
        except (EOFError, OSError):
            return self._loss()
        self.ready.set()
        while (index := self.board.take()) is not None:
            self.holding = index
            try:
                self.conn.send((index, self.items[index]))
                answer: tuple[int, bool, Any] = self.conn.recv()
            except (EOFError, OSError):
                why = self._loss()
                self.board.done(index, False, WorkerLostError(why))
                return why
            self.holding = None
            self.board.done(*answer)
        return ""

    def _loss(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        how = ""
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                how = f", killed by {signal.Signals(-code).name}"
        return f"a worker process ended unexpectedly (exit code {code}){how}" + _AGAIN

    def stop(self) -> None:
        """Let the worker finish the item it holds; one that is not even up is ended now
        (the board is closed first, so it cannot take one after this looked)."""
        if not self.ready.is_set():
            self.process.terminate()
        self.thread.join()
        self.process.join()
        self.conn.close()


def _serve(conn: Connection, work: Callable[[Any], Any]) -> None:
    """A worker: say it is up, then answer items until told to stop (None) or cut off."""
    _ignore_sigint()
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        index, item = job
        try:
            answer: tuple[int, bool, Any] = (index, True, work(item))
        except BaseException as exc:  # handed to the parent, which raises it
            exc.add_note("in a worker process:\n" + traceback.format_exc())
            answer = (index, False, exc)
        try:
            conn.send(answer)
        except Exception as exc:  # a result that does not pickle
            conn.send((index, False, RuntimeError(f"a result could not be sent back: {exc!r}")))


def _ignore_sigint() -> None:
    """Workers leave ^C to the parent, which decides what still runs (`run_ordered`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
