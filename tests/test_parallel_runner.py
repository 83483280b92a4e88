"""`run_ordered` itself, with real `spawn` workers: order, who does the work, failures.

The workers here run the functions below (a spawned child imports this module); which
process did an item is told by the pid each returns. Nothing waits on a clock: where
the test needs a worker to have taken part, the caller's first item waits for a file a
worker writes (and fails after a minute if no worker ever comes up).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest

from iplosctl.parallel import run_ordered


def _pid_of(item: int) -> tuple[int, int]:
    return item, os.getpid()


def _caller_waits_for_a_worker(item: int, *, parent: int, marker: str) -> tuple[int, int]:
    """The caller's first item waits until a worker has done one (so both took part)."""
    if os.getpid() != parent:
        Path(marker).touch()
    elif item == 0:
        deadline = time.monotonic() + 60
        while not Path(marker).exists():
            assert time.monotonic() < deadline, "no worker took an item within a minute"
            time.sleep(0.01)
    return item, os.getpid()


def _fails_at(item: int, *, bad: int) -> int:
    if item == bad:
        raise ValueError(f"item {item} is bad")
    return item


def _dies_at(item: int, *, bad: int) -> int:
    if item == bad:
        os._exit(3)  # as the OOM killer would end it: no exception, no answer
    return item


def test_workers_alone_do_every_item_and_results_keep_the_input_order() -> None:
    results = list(run_ordered(_pid_of, list(range(12)), jobs=2))
    assert [item for item, _ in results] == list(range(12))
    assert os.getpid() not in {pid for _, pid in results}
    assert len({pid for _, pid in results}) >= 1


def test_the_caller_works_from_the_front_and_a_worker_from_the_back(tmp_path: Path) -> None:
    work = functools.partial(
        _caller_waits_for_a_worker, parent=os.getpid(), marker=str(tmp_path / "worker-was-here")
    )
    results = list(run_ordered(work, list(range(8)), jobs=2, caller_works=True))
    assert [item for item, _ in results] == list(range(8))
    by = [pid == os.getpid() for _, pid in results]
    assert by[0] and not by[-1], by
    # the caller's items are a prefix, the worker's the rest: front and back never cross
    assert by == sorted(by, reverse=True), by


def test_quick_items_with_caller_works_give_every_result_in_order() -> None:
    items = list(range(200))
    assert [i for i, _ in run_ordered(_pid_of, items, jobs=3, caller_works=True)] == items


@pytest.mark.parametrize("caller_works", [False, True])
def test_a_failing_item_raises_after_the_items_before_it(caller_works: bool) -> None:
    got: list[int] = []
    with pytest.raises(ValueError, match="item 5 is bad"):
        for item in run_ordered(
            functools.partial(_fails_at, bad=5), list(range(9)), jobs=2, caller_works=caller_works
        ):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_a_worker_that_dies_fails_the_run_instead_of_hanging() -> None:
    got: list[int] = []
    with pytest.raises(RuntimeError, match="worker process ended unexpectedly"):
        for item in run_ordered(functools.partial(_dies_at, bad=4), list(range(8)), jobs=2):
            got.append(item)
    assert got == [0, 1, 2, 3]


def _always_dies(item: int) -> int:
    os._exit(3)


def test_when_every_worker_died_the_items_nobody_took_fail_too() -> None:
    with pytest.raises(RuntimeError, match=r"ended unexpectedly \(exit code 3\)"):
        list(run_ordered(_always_dies, list(range(8)), jobs=2))
