"""The typed manifest: frozen dataclasses built only from schema-valid data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iplosctl.errors import Location
from iplosctl.yamlio import position


@dataclass(frozen=True)
class Municipality:
    number: str
    name: str
    org_number: str


@dataclass(frozen=True)
class Sender:
    her_id: int
    service_her_id: int


@dataclass(frozen=True)
class Epj:
    system: str
    version: str


@dataclass(frozen=True)
class ServiceUnit:
    org_number: str
    name: str


@dataclass(frozen=True)
class Source:
    plugin: str
    path: Path
    format: str | None
    options: Mapping[str, Any]
    #: pass-through: message part type → the file sent unchanged as that part
    parts: Mapping[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class TestPersons:
    """Test users to exclude; their ids are never printed."""

    names: tuple[str, ...] = ()
    ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Tls:
    ca_file: Path | None = None
    verify_peer_name: bool = True
    client_certificate: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True)
class Endpoint:
    transport: str
    url: str | None = None
    namespace: str | None = None
    username: str | None = None
    credential: str | None = None
    cpa_id: str | None = None
    receiver_queue: str | None = None
    tls: Tls = Tls()
    timeout_seconds: float = 30.0
    #: own queues, when the service inherits its organisation's (default {serviceHerId}_…)
    reply_queue: str | None = None
    error_queue: str | None = None
    #: receiving links refuse larger messages (default: twice the message size limit)
    max_message_size_bytes: int | None = None
    #: the `edi` transport (issue 14): own EDI address, SMTP and IMAP servers, folders
    address: str | None = None
    smtp: str | None = None
    imap: str | None = None
    imap_folder: str | None = None
    processed_folder: str | None = None
    register_address: str | None = None
    envelope_agreement: str | None = None


@dataclass(frozen=True)
class KeyPair:
    certificate: Path
    key: Path
    passphrase_secret: str | None = None


@dataclass(frozen=True)
class RegisterCertificates:
    signing: Path
    encryption: Path
    trust_anchors: Path | None = None


@dataclass(frozen=True)
class Certificates:
    signing: KeyPair
    encryption: KeyPair
    register: RegisterCertificates
    encryption_previous: KeyPair | None = None
    crls: tuple[Path, ...] = ()
    intermediates: Path | None = None


@dataclass(frozen=True)
class Manifest:
    """One submission series, as declared by the municipality."""

    path: Path
    name: str
    reporting_year: int
    environment: str
    municipality: Municipality
    sender: Sender
    epj: Epj
    service_units: tuple[ServiceUnit, ...]
    source: Source
    test_persons: TestPersons
    endpoint: Endpoint | None
    certificates: Certificates | None
    rule_severities: Mapping[str, str]
    epj_minimum_versions: Mapping[str, str]
    schemas: Path | None
    message_size_limit_bytes: int | None
    digest: str
    description: str = ""
    owner: str = ""
    #: pass-through: the register format's XSD, a file name in `schemas`
    payload_schema: str | None = None
    #: "iplosctl-export-v1" when the receiver agreed to iplosctl's own format
    payload_format_agreement: str | None = None
    #: a reporting-year profile overlay named by `spec.profile`, resolved like other paths
    profile: Path | None = None
    #: the ruamel tree, kept to point later errors at lines
    node: Any = field(default=None, compare=False, repr=False)

    @property
    def lockfile_path(self) -> Path:
        """`manifests/oslo-2023.yaml` → `manifests/oslo-2023.lock.yaml` (DESIGN.md §3)."""
        return self.path.with_name(self.path.stem + ".lock.yaml")

    def locate(self, *path: str | int) -> Location:
        """Where `spec.x.y` is in the manifest file."""
        line, col = position(self.node, path)
        return Location(str(self.path), line, col)
