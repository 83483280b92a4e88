"""Credential lookup: environment variable first, then the OS keyring.

A manifest names secrets, never holds them. CI sets
`IPLOSCTL_SECRET_<NAME>`; a workstation keeps them in the keyring under the
service `iplosctl`. Values are returned to the caller only and never
formatted into messages.
"""

from __future__ import annotations

import os
import re

import keyring
import keyring.errors

from iplosctl.errors import SecretError

KEYRING_SERVICE = "iplosctl"


def env_var_name(name: str) -> str:
    """`amqp-password` → `IPLOSCTL_SECRET_AMQP_PASSWORD`."""
    return "IPLOSCTL_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _no_backend(name: str, action: str) -> SecretError:
    return SecretError(
        f"cannot {action} secret {name!r}: no keyring backend on this machine; set the "
        f"environment variable {env_var_name(name)} instead, or install a keyring backend "
        f"(e.g. run in a desktop session with Secret Service)"
    )


def get_secret(name: str) -> str:
    """The secret's value, or SecretError saying where it was looked for."""
    value = os.environ.get(env_var_name(name))
    if value:
        return value
    try:
        stored = keyring.get_password(KEYRING_SERVICE, name)
    except keyring.errors.NoKeyringError:
        raise _no_backend(name, "read") from None
    except keyring.errors.KeyringError as exc:
        raise SecretError(f"cannot read secret {name!r} from the keyring: {exc}") from None
    if not stored:
        raise SecretError(
            f"secret {name!r} is not set: run `iplosctl secrets set {name}` or set the "
            f"environment variable {env_var_name(name)}"
        )
    return stored


def set_secret(name: str, value: str) -> None:
    """Store a secret in the keyring (service `iplosctl`)."""
    if not value:
        raise SecretError(f"refusing to store an empty value for secret {name!r}")
    try:
        keyring.set_password(KEYRING_SERVICE, name, value)
    except keyring.errors.NoKeyringError:
        raise _no_backend(name, "store") from None
    except keyring.errors.KeyringError as exc:
        # A headless server usually has a keyring library but no unlocked keyring to use.
        raise SecretError(
            f"cannot store secret {name!r} in the keyring ({type(exc).__name__}): on a "
            f"server without a desktop session, set the environment variable "
            f"{env_var_name(name)} instead (e.g. from your CI's secret store)"
        ) from None


def delete_secret(name: str) -> None:
    """Remove a secret from the keyring."""
    try:
        keyring.delete_password(KEYRING_SERVICE, name)
    except keyring.errors.PasswordDeleteError:
        raise SecretError(f"secret {name!r} is not in the keyring") from None
    except keyring.errors.NoKeyringError:
        raise _no_backend(name, "delete") from None
    except keyring.errors.KeyringError as exc:
        raise SecretError(f"cannot delete secret {name!r} from the keyring: {exc}") from None
