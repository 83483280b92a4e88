"""All terminal output goes through here.

Results go to stdout, diagnostics to stderr, so `--format json > plan.json`
stays clean. Colour follows the terminal, `NO_COLOR` and `FORCE_COLOR`
(rich reads both).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

#: what a reader's eye must find first in plan and status text: blocked and failing red,
#: waiting and warnings yellow, changes green (on a terminal only; NO_COLOR turns it off)
HIGHLIGHTS = (
    (r"\b(BLOCKED|error|rejected|transport-error)\b", "bold red"),
    (r"\b(WAIT|warning|journaled|sent)\b", "yellow"),
    (r"\b(SUBMIT|RECOVER|CORRECT|RESUBMIT|accepted)\b", "green"),
    (r"(?m)^Plan: .*$", "bold"),
)


@functools.cache
def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


@functools.cache
def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def reset() -> None:
    """Forget cached consoles (tests swap sys.stdout/sys.stderr between runs)."""
    _stdout.cache_clear()
    _stderr.cache_clear()


def out(text: str = "", *, style: str | None = None) -> None:
    """A line of the command's result, on stdout. Not markup: user text is printed as is."""
    _stdout().print(text, style=style, markup=False)


def out_highlighted(text: str) -> None:
    """Plan or status text on stdout, its states coloured on a terminal (see HIGHLIGHTS).

    rich decides whether colour is used at all: a terminal, `NO_COLOR` and `FORCE_COLOR`.
    """
    styled = Text(text)
    for pattern, style in HIGHLIGHTS:
        styled.highlight_regex(pattern, style)
    _stdout().print(styled)


def raw(text: str) -> None:
    """Machine-readable output (JSON, schema) on stdout, untouched."""
    _stdout().file.write(text if text.endswith("\n") else text + "\n")
    _stdout().file.flush()


def note(text: str, *, style: str | None = None) -> None:
    """Progress and explanations on stderr."""
    _stderr().print(text, style=style, markup=False)


def error(text: str) -> None:
    """One error line on stderr."""
    _stderr().print(text, style="red", markup=False)


def is_terminal() -> bool:
    return _stderr().is_terminal


@contextlib.contextmanager
def step_progress(label: str, *, total: int) -> Iterator[Callable[[str, bool], None]]:
    """A rich progress bar on a terminal; silent elsewhere (CI logs get result lines).

    Yields `advance(description, done)`: update the bar's text, and move it
    one step when `done`.
    """
    if not is_terminal():
        yield lambda description, done: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=_stderr(),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)

        def advance(description: str, done: bool) -> None:
            progress.update(task, description=f"{label}: {description}", advance=1 if done else 0)

        yield advance


@contextlib.contextmanager
def lazy_progress(label: str, *, total: int) -> Iterator[Callable[[str, bool], None]]:
    """`step_progress` that starts drawing only at the first update.

    A command that may still ask a question (apply's "Send …? [y/N]") must not draw a
    live bar before it is answered: rich redraws the bar's line over the prompt.
    """
    with contextlib.ExitStack() as stack:
        started: list[Callable[[str, bool], None]] = []

        def advance(description: str, done: bool) -> None:
            if not started:
                started.append(stack.enter_context(step_progress(label, total=total)))
            started[0](description, done)

        yield advance
