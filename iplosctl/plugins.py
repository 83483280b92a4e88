"""Plugin kinds and their discovery through entry points.

First-party plugins under `plugins/` register exactly as a third party's
would, so the core never imports a plugin module by name. Like datasette,
`IPLOSCTL_LOAD_PLUGINS` pins the set (comma-separated names; empty means
none), and two plugins of one kind with the same name are fatal rather than
silently shadowing each other. The pin cannot unplug the built-in rule pack
(`BUILTIN`): pinning `xml,amqp` once dropped every pre-flight rule, and the
plan said SUBMIT for an export full of test users (issue 12).
"""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Protocol

from iplosctl.errors import PluginError
from iplosctl.records import ExportHeader, Recipient

#: kind → entry-point group
GROUPS: dict[str, str] = {
    "source": "iplosctl.sources",
    "transport": "iplosctl.transports",
    "rules": "iplosctl.rules",
    # a format profile YAML (a path, or a callable returning one); see README
    "format": "iplosctl.formats",
    # a register simulator `endpoint.connect` starts for the sandbox environment
    # (`endpoint.RegisterFactory`); the first-party one is `iplosctl.sandbox`
    "register": "iplosctl.registers",
}
LOAD_PLUGINS_ENV = "IPLOSCTL_LOAD_PLUGINS"
#: kind → {name: entry-point target} loaded whatever the pin says: the register's own
#: checks, and the sandbox register (a pin must not break `environment: sandbox`).
#: Matched by target too, so a third-party pack called `kpr` is not exempt.
BUILTIN: dict[str, dict[str, str]] = {
    "rules": {"kpr": "iplosctl.rules.kpr:rules"},
    "register": {"sandbox": "iplosctl.sandbox.embedded:embedded_register"},
}


# --- source plugins (entry point group iplosctl.sources) -----------------------


@dataclass(frozen=True)
class SourceSpec:
    """What the manifest says about the export (`spec.source`), paths resolved."""

    path: Path
    format: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class FieldCoverage:
    """Which mapped fields a source found values for, filled while recipients stream.

    Keys are `<item>.<field>` in the profile's spelling (`recipient.localId`,
    `service.hoursPerWeek`, `assessment.score`, `diagnosis.code`). `mapped` says
    where the profile or column mapping looks for the field (an XPath or a
    column name: never a value), `present` how many items had a value, `items`
    how many of each item kind were read, and `unread` names the columns or
    elements the export has that no mapping reads (names only, each once). The
    plan turns a mapped field that matched nothing into a blocking finding that
    points at the profile, and `unread` into one warning. `<item>.element`
    (`service.element`) in `mapped` is the item kind's own element: 0 in
    `items` means the profile's element for it matched nothing. `optional`
    names the mapped keys that may match nothing in a valid export (the
    profile says so): no finding for them.
    """

    mapped: dict[str, str] = field(default_factory=dict)
    present: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)
    unread: list[str] = field(default_factory=list)
    optional: set[str] = field(default_factory=set)


#: `PayloadSpec.mode` values: iplosctl's own format, or the export's bytes unchanged
EXPORT_V1_PAYLOAD = "iplosctl-export-v1"
PASSTHROUGH_PAYLOAD = "passthrough"


@dataclass(frozen=True)
class PayloadSpec:
    """What apply sends for an export, as its format profile says (`payload`).

    `iplosctl-export-v1`: the records re-written in iplosctl's own format, one
    payload per message part. `passthrough`: the export is already in the
    register's format; `parts` maps each message part type, in sending order, to
    `export` (the file the source read) or `file` (a file of its own, named in
    the manifest's `spec.source.parts`), and those bytes are sent unchanged.
    `schema` is the XSD of that format (the profile's), `origin` names the
    profile in messages.
    """

    mode: str = EXPORT_V1_PAYLOAD
    parts: tuple[tuple[str, str], ...] = ()
    schema: Path | None = None
    origin: str = ""

    @property
    def passthrough(self) -> bool:
        return self.mode == PASSTHROUGH_PAYLOAD


@dataclass
class Export:
    """An opened export: its header, then its recipients streamed in file order.

    `recipients` is a one-shot iterator; reading it to the end closes the
    file. Problems raise `SourceError` naming the file and line. A source that
    can say which mapped fields it found sets `coverage`; it is complete once
    `recipients` is exhausted. A source whose format profile says the export
    is already the register's own file sets `payload` (pass-through).
    """

    header: ExportHeader
    recipients: Iterator[Recipient]
    coverage: FieldCoverage | None = None
    #: what apply sends; None means iplosctl's own export format (PayloadSpec())
    payload: PayloadSpec | None = None


class SourcePlugin(Protocol):
    """Reads an EPJ export into the neutral record model (iplosctl.records)."""

    #: the name manifests use in `spec.source.plugin`
    name: str

    def read(self, spec: SourceSpec) -> Export:
        """Open the export; validate as it streams; never load it whole."""
        ...

    def profile_files(self, spec: SourceSpec) -> Sequence[Path]:
        """Optional: the files that decide how `spec` is read (a format profile and its XSD).

        Their bytes join the plan's cache key and its `profileDigest`, so editing
        one makes the next plan read the export again and a saved plan stale.
        """
        ...


def source_inputs(source: Any, spec: SourceSpec) -> list[Path]:
    """Files a source reads besides `spec.path` (the csv source's assessments and diagnoses).

    Optional for a source plugin: an `inputs(spec)` method. The plan digests
    these files with the export and its cache notices when one changes (so a
    saved plan goes stale). `validate` does not load source plugins (a cached
    plan needs none), so a missing one is the source's error when it reads.
    """
    inputs = getattr(source, "inputs", None)
    return list(inputs(spec)) if callable(inputs) else []


# --- transport plugins (entry point group iplosctl.transports) -----------------


@dataclass(frozen=True)
class TlsSettings:
    ca_file: Path | None = None
    verify_peer_name: bool = True
    client_certificate: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True)
class TransportSettings:
    """Where and how to connect, resolved from `spec.endpoint` and the profile.

    `url` is an amqp(s)://host:port URL without credentials for amqp, or a
    folder for directory. The password is resolved from the secret store
    before the plugin sees it and is never shown by `repr`.
    """

    url: str
    namespace: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings = TlsSettings()
    timeout_seconds: float = 30.0
    #: `amqp://` (no TLS) to a non-loopback host is allowed: only in the sandbox environment
    #: (iplosctl.transport_policy); a plugin must refuse it otherwise
    allow_plaintext: bool = False
    #: the largest message a receiving link accepts; None lets the plugin choose
    max_message_size: int | None = None
    #: transport-specific settings that fit none of the above (the `edi` transport's
    #: addresses, IMAP URL and folders: plugins/iplosctl_transport_edi)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutgoingMessage:
    """One protected message and its AMQP properties (DOMAIN.md §5.3).

    `to_queue` and `reply_to` are queue names (e.g. `122612_async`); the
    transport turns them into addresses. Application properties are strings.
    """

    message_id: str
    correlation_id: str
    subject: str
    body: bytes
    to_queue: str
    reply_to: str
    application_properties: Mapping[str, str]
    content_type: str = "application/pkcs7-mime; smime-type=signed-and-enveloped-data"


@dataclass(frozen=True)
class IncomingMessage:
    """A message read from one of the municipality's queues."""

    queue: str
    message_id: str | None
    correlation_id: str | None
    subject: str | None
    body: bytes
    application_properties: Mapping[str, str]
    #: where the sender wants answers (AMQP reply-to); the register's AppRecs go there
    reply_to: str | None = None


class Delivery(Protocol):
    """A received message that stays on the queue until settled."""

    message: IncomingMessage

    def accept(self) -> None:
        """Remove it from the queue: call only after its effect is recorded."""
        ...

    def release(self) -> None:
        """Give it back to the queue for a later run."""
        ...


class TransportPlugin(Protocol):
    """Moves protected messages to the register and receipts back."""

    name: str

    def send(self, message: OutgoingMessage) -> None:
        """Return only once the broker has ACCEPTED the message; raise TransportError."""
        ...

    def prepare(self, to_queue: str) -> None:
        """Optional: get ready to send to `to_queue` (connect, check the queue) now.

        apply calls it, when a plugin has it, while the first message is being signed
        and encrypted, so the two overlap; a plugin without it connects on first send.
        """
        ...

    def receive(self, queue: str, *, timeout: float) -> Iterator[Delivery]:
        """Yield deliveries from `queue` until it is empty for `timeout` seconds."""
        ...

    def find_accepted(self, queue: str, message_ids: Collection[str]) -> frozenset[str]:
        """Optional: which of `message_ids` the transport can see it handed over to `queue`
        (on the broker's queue, in the outbox), without taking or changing anything.

        `iplosctl attempt abandon --never-sent` asks it before recording that journaled
        parts never left (issue 13): a message found here was accepted, so the decision is
        refused. Raise TransportError when it cannot look (then the decision is refused
        too: nothing shows that the message was not accepted). A plugin without it
        cannot support `--never-sent` on a configured endpoint.
        """
        ...

    def close(self) -> None: ...


#: what an `iplosctl.transports` entry point names: a class or factory taking settings
TransportFactory = Callable[[TransportSettings], TransportPlugin]


@dataclass(frozen=True)
class PluginInfo:
    """One installed plugin, as `iplosctl plugins` lists it."""

    kind: str
    name: str
    target: str
    distribution: str
    version: str


def _pinned() -> set[str] | None:
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


@functools.lru_cache(maxsize=32)
def _group_entry_points(
    find: Callable[..., Any], group: str, _path: tuple[str, ...]
) -> tuple[EntryPoint, ...]:
    """`entry_points(group=…)` reads the metadata of every installed distribution (about
    5 ms here), and planning one submission asks six times: once per process, group and
    `sys.path` (a distribution added to the path is seen; so is a replaced `find`)."""
    return tuple(find(group=group))


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    if kind not in GROUPS:
        raise PluginError(f"unknown plugin kind {kind!r} (kinds: {', '.join(GROUPS)})")
    pinned = _pinned()
    builtin = BUILTIN.get(kind, {})
    found: dict[str, EntryPoint] = {}
    for ep in _group_entry_points(entry_points, GROUPS[kind], tuple(sys.path)):
        if pinned is not None and ep.name not in pinned and builtin.get(ep.name) != ep.value:
            continue
        if ep.name in found and found[ep.name].value != ep.value:
            raise PluginError(
                f"two {kind} plugins are named {ep.name!r} ({found[ep.name].value} and "
                f"{ep.value}): uninstall one of them"
            )
        found[ep.name] = ep
    return found


def installed(kind: str) -> dict[str, PluginInfo]:
    """Plugins of one kind by name, without importing them."""
    return {
        name: _info(kind, name, ep, ep.dist) for name, ep in sorted(_entry_points(kind).items())
    }


@functools.lru_cache(maxsize=256)
def _info(kind: str, name: str, ep: EntryPoint, dist: Any) -> PluginInfo:
    """Reading a distribution's name and version parses its METADATA file (3 ms): once per
    process for each entry point and distribution, not twice per manifest validated."""
    return PluginInfo(
        kind=kind,
        name=name,
        target=ep.value,
        distribution=dist.name if dist else "?",
        version=dist.version if dist else "?",
    )


def all_installed() -> list[PluginInfo]:
    """Every installed plugin of every kind."""
    return [info for kind in GROUPS for info in installed(kind).values()]


def load(kind: str, name: str) -> Any:
    """Import and return the object a plugin's entry point names."""
    eps = _entry_points(kind)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise PluginError(f"no {kind} plugin named {name!r} is installed (installed: {known})")
    try:
        return eps[name].load()
    except Exception as exc:  # a broken third-party plugin must not look like our bug
        raise PluginError(
            f"{kind} plugin {name!r} ({eps[name].value}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
