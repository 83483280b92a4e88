"""Where and how a submission talks to the register: addressing, certificates, transport.

One place turns a manifest (and its year's profile) into the things apply and
receipts need, so both address the same queues with the same keys. In the
`sandbox` environment nothing is configured: the built-in register is started
in-process on a loopback port, with certificates generated once under the
state folder, and the real AMQP transport talks to it.

The register is a plugin (entry-point group `iplosctl.registers`, name `sandbox`),
looked up by `plugins.load` like a transport: the core never imports
`iplosctl.sandbox`, which imports this module for `Addressing` and `Keys`
(tests/test_import_graph.py holds both to it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from iplosctl import plugins, profiles
from iplosctl.manifest import Manifest
from iplosctl.plugins import TransportPlugin, TransportSettings

from .keys import (
    Keys,
    OwnKeys,
    extra_certificates,
    intermediates,
    load_keys,
    load_own_keys,
    load_pem_certificates,
)
from .routes import (
    EDI_DEFAULT_FOLDER,
    EDI_PROCESSED_FOLDER,
    SERVICE_NAME,
    Addressing,
    EdiRoute,
    Route,
    addressing,
    edi_route_text,
    register_edi_address,
    route,
)
from .settings import edi_transport_settings, receive_limit, transport_settings
from .state import STATE_FOLDER, repository_root, state_dir

__all__ = [
    "EDI_DEFAULT_FOLDER",
    "EDI_PROCESSED_FOLDER",
    "SANDBOX_REGISTER",
    "SERVICE_NAME",
    "STATE_FOLDER",
    "Addressing",
    "Connection",
    "EdiRoute",
    "Keys",
    "OwnKeys",
    "RegisterFactory",
    "Route",
    "RunningRegister",
    "addressing",
    "connect",
    "edi_route_text",
    "edi_transport_settings",
    "extra_certificates",
    "intermediates",
    "load_keys",
    "load_own_keys",
    "load_pem_certificates",
    "receive_limit",
    "register_edi_address",
    "repository_root",
    "route",
    "state_dir",
    "transport_settings",
]

#: the `iplosctl.registers` entry point `connect` starts for the sandbox environment
SANDBOX_REGISTER = "sandbox"


class RunningRegister(Protocol):
    """A register started for one `connect`: where the transport goes, and with which keys."""

    @property
    def transport_settings(self) -> TransportSettings: ...

    def municipality_keys(self) -> Keys:
        """The municipality's side of the keys: what apply signs and receipts decrypt with."""
        ...


class RegisterFactory(Protocol):
    """What an `iplosctl.registers` entry point names: run a register for a `with` block.

    `state_dir` is the register's own folder under the local state (DESIGN.md §8); `own` holds the
    manifest's key pairs when it names certificates (rehearse with the real ones).
    """

    def __call__(
        self, state_dir: Path, address: Addressing, *, own: OwnKeys | None = None
    ) -> contextlib.AbstractContextManager[RunningRegister]: ...


@dataclass
class Connection:
    """What apply and receipts work with: an open transport, keys and addresses."""

    transport: TransportPlugin
    keys: Keys
    addressing: Addressing
    sandbox: bool = False


@contextlib.contextmanager
def connect(manifest: Manifest) -> Iterator[Connection]:
    """Open the manifest's transport; in the sandbox, start the built-in register first."""
    profile = profiles.profile_for(manifest)
    env = profile.environments[manifest.environment]
    address = addressing(manifest)
    if env.sandbox and manifest.endpoint is None:
        start_register: RegisterFactory = plugins.load("register", SANDBOX_REGISTER)
        # The manifest's own certificates when it names them (rehearse with the real ones);
        # the register side is always the sandbox's: nobody has KPR's private keys.
        own = load_own_keys(manifest) if manifest.certificates is not None else None
        with start_register(state_dir(manifest) / "sandbox", address, own=own) as register:
            transport = plugins.load("transport", "amqp")(register.transport_settings)
            try:
                yield Connection(transport, register.municipality_keys(), address, sandbox=True)
            finally:
                transport.close()
        return
    keys = load_keys(manifest)
    transport = plugins.load("transport", manifest.endpoint.transport)(  # type: ignore[union-attr]
        transport_settings(manifest)
    )
    try:
        yield Connection(transport, keys, address)
    finally:
        transport.close()
