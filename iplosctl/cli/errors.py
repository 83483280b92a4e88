"""Recognising typer's (click's) own errors without importing typer's private `_click`.

typer vendors click as `typer._click` and exports only `BadParameter`, `Abort` and `Exit`
of its exceptions. click documents `BadParameter` as a `UsageError`, itself a
`ClickException`, so both classes are reached through the public `typer.BadParameter`;
`NoArgsIsHelpError` (a `UsageError` whose message is the help text) is recognised by name,
as typer's own `rich_utils` does. `tests/test_cli.py` pins all three behaviours.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import typer


class ClickError(Protocol):
    """What `main` uses of a click exception."""

    exit_code: int

    def format_message(self) -> str: ...


def _base(name: str) -> type[Exception]:
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name:
            return cast(type[Exception], cls)
    raise ImportError(f"typer.BadParameter is no longer a click {name}")  # pragma: no cover


#: click's `ClickException` (every error click turns into an exit code)
ClickException: type[Exception] = _base("ClickException")
#: click's `UsageError` (a bad command line: exit 64 here)
ClickUsageError: type[Exception] = _base("UsageError")


def is_no_args_help(exc: BaseException) -> bool:
    """`iplosctl` or a group without a command: click raises its help text as an error."""
    return isinstance(exc, ClickUsageError) and type(exc).__name__ == "NoArgsIsHelpError"


def command_path(exc: Exception) -> str:
    """The command whose usage was wrong (`iplosctl plan`), for the `--help` hint."""
    ctx: Any = getattr(exc, "ctx", None)
    return str(ctx.command_path) if ctx is not None else "iplosctl"
