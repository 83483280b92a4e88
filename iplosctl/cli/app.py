"""The typer application and its command groups, defined once for every command module.

Kept apart from `iplosctl.cli` (which imports the command modules and holds `main`) so a
command module can register itself without importing the package it is part of.
"""

from __future__ import annotations

from typing import Annotated

import typer

from iplosctl import __version__, output

app = typer.Typer(
    name="iplosctl",
    help="Declarative, reviewable IPLOS submissions to KPR: validate, plan, apply, receipts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Groups in the order `iplosctl --help` has always listed them (after the plain commands).
secrets_app = typer.Typer(
    help="Store or remove credentials in the OS keyring.", no_args_is_help=True
)
app.add_typer(secrets_app, name="secrets")
sandbox_app = typer.Typer(help="The local KPR simulator and its test data.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
format_app = typer.Typer(help="Write and test export format profiles.", no_args_is_help=True)
app.add_typer(format_app, name="format")
attempt_app = typer.Typer(
    help="Record an operator's decision about an attempt in the lockfile.", no_args_is_help=True
)
app.add_typer(attempt_app, name="attempt")
lock_app = typer.Typer(help="Inspect or clear a submission's apply lock.", no_args_is_help=True)
app.add_typer(lock_app, name="lock")

#: `--debug`, read by `main` when an internal error is caught
state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        output.out(f"iplosctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of internal errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state["debug"] = debug
