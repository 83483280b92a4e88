"""`run_ordered` itself, with real `spawn` workers: order, who does the work, failures.

The workers here run the functions below (a spawned child imports this module); which
process did an item is told by the pid each returns. Nothing waits on a clock: where
the test needs a worker to have taken part, the caller's first item waits for a file a
worker writes (and fails after a minute if no worker ever comes up).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def test_the_caller_and_a_worker_share_the_items(tmp_path: Path) -> None:
    work = functools.partial(
        _caller_waits_for_a_worker, parent=os.getpid(), marker=str(tmp_path / "worker-was-here")
    )
    results = list(run_ordered(work, list(range(8)), jobs=2, caller_works=True))
    assert [item for item, _ in results] == list(range(8))
    by_caller = [pid == os.getpid() for _, pid in results]
    assert by_caller[0] and not all(by_caller), by_caller


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


_INTERRUPTED_RUN = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from iplosctl.parallel import run_ordered
from tests.test_parallel_runner import _slow_pid_of

got = []
try:
    caller_works = sys.argv[2] == "caller-works"
    for result in run_ordered(_slow_pid_of, list(range(200)), jobs=2, caller_works=caller_works):
        got.append(result)
        if len(got) == 1:
            print("first", flush=True)
except KeyboardInterrupt:
    print(json.dumps(got), flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


def _slow_pid_of(item: int) -> tuple[int, int]:
    """Sleeps a little, and leaves its process's pid in $PIDS_DIR (each process that ran one)."""
    (Path(os.environ["PIDS_DIR"]) / str(os.getpid())).touch()
    time.sleep(0.2)
    return item, os.getpid()


@pytest.mark.parametrize("mode", ["workers-alone", "caller-works"])
def test_ctrl_c_yields_what_finished_in_order_then_stops_every_worker(
    mode: str, tmp_path: Path
) -> None:
    """^C to the whole process group, as a terminal sends it: the workers ignore it and
    finish the item they hold, nothing new starts, and no worker outlives the run."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_RUN, str(repo), mode],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
        env={**os.environ, "PIDS_DIR": str(tmp_path)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "first\n"
    deadline = time.monotonic() + 60
    while not {int(p.name) for p in tmp_path.iterdir()} - {proc.pid}:
        assert time.monotonic() < deadline, "no worker took an item within a minute"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 130, rest
    done = json.loads(rest.splitlines()[-1])
    assert [item for item, _pid in done] == list(range(len(done)))
    assert 1 <= len(done) < 200, "^C stopped nothing"
    for pid in {int(p.name) for p in tmp_path.iterdir()}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_work_that_cannot_reach_a_worker_fails_at_once_and_leaves_no_process() -> None:
    def local(item: int) -> int:  # spawn pickles the work by name: a local function cannot go
        return item

    with pytest.raises(Exception, match=r"local|pickle"):
        list(run_ordered(local, list(range(4)), jobs=3))
    assert multiprocessing.active_children() == []


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("this item cannot be pickled")


def _identity(item: object) -> object:
    return item


def test_an_item_that_cannot_reach_a_worker_fails_in_its_turn() -> None:
    """Its feeding thread reports it (nothing waits for ever) and every worker still ends."""
    items: list[object] = [0, 1, _Unpicklable(), 3, 4, 5]
    got: list[object] = []
    with pytest.raises(TypeError, match="cannot be pickled"):
        for item in run_ordered(_identity, items, jobs=2):
            got.append(item)
    assert got == [0, 1]
    assert multiprocessing.active_children() == []
