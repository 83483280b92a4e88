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
`jobs == 1`, or a single item, runs in this process with no pool at all.
"""

from __future__ import annotations

import copyreg
import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
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
    work: Callable[[T], R], items: Sequence[T], *, jobs: int | None = None
) -> Iterator[R]:
    """`work(item)` for each item, yielded in the order of `items` as soon as each is done.

    `work` must be a module-level function (or a `functools.partial` of one) and its
    arguments and results picklable. It should return its failures rather than raise
    them: an exception still propagates, but only once the items before it are yielded.
    When the consumer stops early (an exception, ^C) the pending items are cancelled.
    """
    workers = min(jobs or default_jobs(), len(items))
    if workers <= 1:
        for item in items:
            yield work(item)
        return
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint
    )
    futures: list[Future[R]] = [pool.submit(work, item) for item in items]
    done = 0
    try:
        try:
            for future in futures:
                result = future.result()
                done += 1
                yield result
        except KeyboardInterrupt:
            # ^C reaches the whole process group: the workers ignore it and finish what they
            # hold; what has not started never starts, and what finished is still reported.
            for future in futures:
                future.cancel()
            for future in futures[done:]:
                if future.cancelled():
                    break
                yield future.result()
            raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_sigint() -> None:
    """Workers leave ^C to the parent, which decides what still runs (`run_ordered`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
