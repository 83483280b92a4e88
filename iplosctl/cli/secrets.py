"""`iplosctl secrets set|delete`: credentials in the OS keyring, never in a manifest."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from iplosctl import output
from iplosctl import secrets as secret_store
from iplosctl.cli.app import secrets_app
from iplosctl.errors import EXIT_OK, IplosctlError


@secrets_app.command("set")
def secrets_set(name: Annotated[str, typer.Argument(help="Secret name used in manifests.")]) -> int:
    """Store a secret; reads it from a hidden prompt, or from stdin when piped."""
    if sys.stdin.isatty():
        value = getpass.getpass(f"value for {name}: ")
        if getpass.getpass("again: ") != value:
            raise IplosctlError("the two entries differ; nothing stored")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    secret_store.set_secret(name, value)
    output.note(f"stored secret {name!r} in the keyring (service {secret_store.KEYRING_SERVICE!r})")
    return EXIT_OK


@secrets_app.command("delete")
def secrets_delete(name: Annotated[str, typer.Argument(help="Secret name.")]) -> int:
    """Remove a secret from the keyring."""
    secret_store.delete_secret(name)
    output.note(f"deleted secret {name!r}")
    return EXIT_OK
