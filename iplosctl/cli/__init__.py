"""The command line: parse, call, render, turn IplosctlError into exit codes.

Thin on purpose: each command (one module per command group) parses its options, calls
one function of the core and renders what it returns. Exit codes (docs, "Exit codes"):
0 ok, 1 error or blocked, 2 changes present (with --detailed-exitcode), 3 internal
error, 64 usage, 75 receipts outstanding, 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys
from typing import cast

import typer

from iplosctl import output
from iplosctl.cli.app import app, state
from iplosctl.cli.errors import (
    ClickError,
    ClickException,
    ClickUsageError,
    command_path,
    is_no_args_help,
)
from iplosctl.crashlog import write_crash_log
from iplosctl.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, IplosctlError

__all__ = ["app", "main"]

#: the command modules, in the order `iplosctl --help` lists their commands: importing one
#: registers its commands on `app` (typer keeps the order of registration)
COMMAND_MODULES = (
    "validate",
    "plan",
    "apply",
    "receipts",
    "status",
    "init",
    "reference",
    "secrets",
    "sandbox",
    "decisions",
)
for _module in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_module}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run a command and map every outcome to an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    output.reset()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="iplosctl", standalone_mode=False)
    except ClickException as exc:
        error = cast(ClickError, exc)
        if is_no_args_help(exc):
            output.note(error.format_message())
            return EXIT_USAGE
        if isinstance(exc, ClickUsageError):
            output.error(f"usage error: {error.format_message()}")
            output.note(f"run `{command_path(exc)} --help` for usage")
            return EXIT_USAGE
        output.error(f"error: {error.format_message()}")
        return error.exit_code
    except typer.Abort:
        output.error("aborted")
        return 130
    except IplosctlError as exc:
        for line in exc.lines():
            output.error(f"error: {line}")
        return exc.exit_code
    except KeyboardInterrupt:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if state["debug"]:
            raise
        log = write_crash_log(exc, args)
        output.error(
            f"internal error ({type(exc).__name__}): this is a bug in iplosctl. "
            f"Details without personal data: {log}"
        )
        return EXIT_INTERNAL
    return result if isinstance(result, int) else EXIT_OK
