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
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from iplosctl import plugins, profiles
from iplosctl.errors import IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.payload.cms import PrivateKey, load_certificate, load_private_key
from iplosctl.plugins import TlsSettings, TransportPlugin, TransportSettings
from iplosctl.secrets import get_secret

#: the `iplosctl.registers` entry point `connect` starts for the sandbox environment
SANDBOX_REGISTER = "sandbox"

#: the service whose queues receive receipts (service-based addressing, KPR-2023)
SERVICE_NAME = "Saksbehandling"


STATE_FOLDER = ".iplosctl"


def state_dir(manifest: Manifest | None = None) -> Path:
    """Local, git-ignored state (sandbox certificates and queues, quarantine).

    `IPLOSCTL_STATE_DIR` when set; else `.iplosctl/` at the root of the repository that
    holds the manifest (the nearest folder above it with `.git`), or beside the manifest
    outside a repository. It follows the manifest, not the current folder: `apply` run
    from the repository root and `receipts` run from `manifests/` must see the same
    sandbox queues and quarantine. Without a manifest (`sandbox serve`), the current folder.
    """
    override = os.environ.get("IPLOSCTL_STATE_DIR")
    if override:
        return Path(override)
    if manifest is None:
        return Path(STATE_FOLDER)
    return repository_root(manifest.path) / STATE_FOLDER


def repository_root(path: Path) -> Path:
    """The nearest folder above `path` holding `.git` (a folder, or a file in a worktree),
    else the folder of `path`."""
    folder = path.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


@dataclass(frozen=True)
class Addressing:
    """Queues and HER-ids for one submission (DOMAIN.md §5.2)."""

    receiver_her_id: int
    receiver_name: str
    sender_her_id: int
    service_her_id: int
    cpa_id: str | None = None
    receiver_queue_override: str | None = None
    #: `endpoint.replyQueue` / `errorQueue`: NHN recommends that a service may inherit its
    #: organisation's queues (DOMAIN.md §5.1), and then `{serviceHerId}_…` is never read
    reply_queue_override: str | None = None
    error_queue_override: str | None = None

    @property
    def to_queue(self) -> str:
        return self.receiver_queue_override or f"{self.receiver_her_id}_async"

    @property
    def reply_queue(self) -> str:
        return self.reply_queue_override or f"{self.service_her_id}_async"

    @property
    def error_queue(self) -> str:
        return self.error_queue_override or f"{self.service_her_id}_error"


@dataclass(frozen=True)
class Keys:
    """Own keys and the register's certificates, loaded and ready for CMS."""

    signing_cert: x509.Certificate
    signing_key: PrivateKey
    encryption_cert: x509.Certificate
    encryption_key: PrivateKey
    register_signing_cert: x509.Certificate
    register_encryption_cert: x509.Certificate
    trust_anchors: tuple[x509.Certificate, ...]
    #: earlier encryption certificates with their keys (`certificates.encryptionPrevious`)
    encryption_previous: tuple[tuple[x509.Certificate, PrivateKey], ...] = ()
    #: intermediate CAs: extra certificates in the certificate files, `certificates.intermediates`
    intermediates: tuple[x509.Certificate, ...] = ()
    #: `certificates.crls`, for revocation checks without network access
    crl_files: tuple[Path, ...] = ()


def addressing(manifest: Manifest) -> Addressing:
    profile = profiles.profile_for(manifest)
    env = profile.environments[manifest.environment]
    endpoint = manifest.endpoint
    return Addressing(
        receiver_her_id=env.receiver_her_id,
        receiver_name=profile.register_name,
        sender_her_id=manifest.sender.her_id,
        service_her_id=manifest.sender.service_her_id,
        cpa_id=endpoint.cpa_id if endpoint else None,
        receiver_queue_override=endpoint.receiver_queue if endpoint else None,
        reply_queue_override=endpoint.reply_queue if endpoint else None,
        error_queue_override=endpoint.error_queue if endpoint else None,
    )


@dataclass(frozen=True)
class Route:
    """Where a submission goes and where its answers come from, as a reviewer must see it.

    No credentials: the broker URL never holds one (the schema refuses it) and the user
    name is not shown.
    """

    receiver_her_id: int
    to_queue: str
    reply_queue: str
    error_queue: str
    transport: str
    broker: str
    namespace: str | None
    #: the `edi` transport (issue 14): addresses and mail servers, else None
    edi: EdiRoute | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "receiverHerId": self.receiver_her_id,
            "toQueue": self.to_queue,
            "replyQueue": self.reply_queue,
            "errorQueue": self.error_queue,
            "transport": self.transport,
            "broker": self.broker,
            "namespace": self.namespace,
        }
        if self.edi is not None:
            out["edi"] = self.edi.as_dict()
        return out

    def text(self) -> str:
        if self.edi is not None:
            return self.edi.text(self.receiver_her_id)
        ns = f", namespace {self.namespace}" if self.namespace else ""
        return (
            f"to HER-id {self.receiver_her_id} queue {self.to_queue} via {self.transport} "
            f"{self.broker}{ns}; receipts from {self.reply_queue}, errors from {self.error_queue}"
        )


@dataclass(frozen=True)
class EdiRoute:
    """The EDI channel's addresses and servers (no credentials: the URLs cannot hold any)."""

    to_address: str
    from_address: str
    smtp: str
    imap: str
    folder: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "toAddress": self.to_address,
            "fromAddress": self.from_address,
            "smtp": self.smtp,
            "imap": self.imap,
            "folder": self.folder,
        }

    def text(self, receiver_her_id: int) -> str:
        return edi_route_text(receiver_her_id, self.as_dict())


def edi_route_text(receiver_her_id: int, edi: dict[str, Any]) -> str:
    """One line for plan and status: `to kpr@edi.nhn.no (HER-id …) via edi smtp://…`."""
    return (
        f"to {edi['toAddress']} (HER-id {receiver_her_id}) via edi {edi['smtp']} from "
        f"{edi['fromAddress']}; receipts from {edi['imap']} folder {edi['folder']}"
    )


EDI_DEFAULT_FOLDER = "INBOX"
EDI_PROCESSED_FOLDER = "iplosctl-processed"


def register_edi_address(manifest: Manifest) -> str | None:
    """`endpoint.registerAddress`, else the year profile's `register.ediAddress`."""
    endpoint = manifest.endpoint
    if endpoint is not None and endpoint.register_address:
        return endpoint.register_address
    return profiles.profile_for(manifest).edi_address


def _edi_route(manifest: Manifest) -> EdiRoute:
    e = manifest.endpoint
    assert e is not None
    return EdiRoute(
        to_address=register_edi_address(manifest) or "(not set)",
        from_address=e.address or "(not set)",
        smtp=_without_credentials(e.smtp or "(not set)"),
        imap=_without_credentials(e.imap or "(not set)"),
        folder=e.imap_folder or EDI_DEFAULT_FOLDER,
    )


def route(manifest: Manifest) -> Route:
    """The resolved receiver, queues, broker and namespace (for plan and status)."""
    address = addressing(manifest)
    env = profiles.profile_for(manifest).environments[manifest.environment]
    endpoint = manifest.endpoint
    if endpoint is None:
        transport, broker, namespace = "amqp", "built-in sandbox register (loopback)", None
    else:
        transport = endpoint.transport
        broker = _without_credentials(endpoint.url or env.broker_url or "(not set)")
        namespace = endpoint.namespace or (env.namespace if not endpoint.url else None)
    edi = None
    if endpoint is not None and endpoint.transport == "edi":
        edi = _edi_route(manifest)
        broker, namespace = edi.smtp, None
    return Route(
        receiver_her_id=address.receiver_her_id,
        to_queue=address.to_queue,
        reply_queue=address.reply_queue,
        error_queue=address.error_queue,
        transport=transport,
        broker=broker,
        namespace=namespace,
        edi=edi,
    )


def _without_credentials(url: str) -> str:
    """`url` with anything before an `@` in its authority dropped (belt and braces)."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def _trust_anchors(path: Path | None) -> tuple[x509.Certificate, ...]:
    if path is None:
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(path.read_bytes()))
    except (OSError, ValueError) as exc:
        raise IplosctlError(
            f"{path}: cannot read the trust anchors (PEM certificates): {exc}"
        ) from None


def extra_certificates(path: Path | None) -> tuple[x509.Certificate, ...]:
    """Every certificate after the first in a PEM file (the chain some exports include)."""
    if path is None:
        return ()
    try:
        data = path.read_bytes()
    except OSError:
        return ()  # load_certificate reports the unreadable file
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(data)[1:])
    except ValueError:
        return ()


def intermediates(manifest: Manifest) -> tuple[x509.Certificate, ...]:
    """Intermediate CAs from the certificate files and `certificates.intermediates`."""
    c = manifest.certificates
    if c is None:
        return ()
    files = [c.signing.certificate, c.encryption.certificate, c.register.signing]
    files.append(c.register.encryption)
    found = [cert for f in files for cert in extra_certificates(f)]
    found.extend(_trust_anchors(c.intermediates))
    return tuple(dict.fromkeys(found))


def load_pem_certificates(path: Path | None) -> tuple[x509.Certificate, ...]:
    """Every certificate of a PEM bundle (trust anchors, intermediates); none for None."""
    return _trust_anchors(path)


@dataclass(frozen=True)
class OwnKeys:
    """The municipality's own two key pairs, loaded."""

    signing_cert: x509.Certificate
    signing_key: PrivateKey
    encryption_cert: x509.Certificate
    encryption_key: PrivateKey


def load_own_keys(manifest: Manifest) -> OwnKeys:
    """The manifest's signing and encryption key pairs; passphrases from the secret store."""
    c = manifest.certificates
    if c is None:
        raise IplosctlError(f"{manifest.path}: spec.certificates is required outside the sandbox")

    def passphrase(name: str | None) -> str | None:
        return get_secret(name) if name else None

    signing_pass = passphrase(c.signing.passphrase_secret)
    encryption_pass = passphrase(c.encryption.passphrase_secret)
    return OwnKeys(
        signing_cert=load_certificate(c.signing.certificate, signing_pass),
        signing_key=load_private_key(c.signing.key, signing_pass),
        encryption_cert=load_certificate(c.encryption.certificate, encryption_pass),
        encryption_key=load_private_key(c.encryption.key, encryption_pass),
    )


def load_keys(manifest: Manifest) -> Keys:
    """The manifest's certificates; passphrases come from the secret store."""
    own = load_own_keys(manifest)
    c = manifest.certificates
    assert c is not None  # load_own_keys refused otherwise
    return Keys(
        signing_cert=own.signing_cert,
        signing_key=own.signing_key,
        encryption_cert=own.encryption_cert,
        encryption_key=own.encryption_key,
        register_signing_cert=load_certificate(c.register.signing),
        register_encryption_cert=load_certificate(c.register.encryption),
        trust_anchors=_trust_anchors(c.register.trust_anchors),
        encryption_previous=_previous_encryption(manifest),
        intermediates=intermediates(manifest),
        crl_files=c.crls,
    )


def _previous_encryption(manifest: Manifest) -> tuple[tuple[x509.Certificate, PrivateKey], ...]:
    """`certificates.encryptionPrevious` loaded, or nothing (certificate rotation)."""
    c = manifest.certificates
    if c is None or c.encryption_previous is None:
        return ()
    pair = c.encryption_previous
    secret = get_secret(pair.passphrase_secret) if pair.passphrase_secret else None
    return ((load_certificate(pair.certificate, secret), load_private_key(pair.key, secret)),)


def transport_settings(manifest: Manifest) -> TransportSettings:
    """TransportSettings from `spec.endpoint`, the profile's broker as default, the secret."""
    endpoint = manifest.endpoint
    if endpoint is None:
        raise IplosctlError(f"{manifest.path}: spec.endpoint is required outside the sandbox")
    env = profiles.profile_for(manifest).environments[manifest.environment]
    if endpoint.transport == "edi":
        return edi_transport_settings(manifest)
    url = endpoint.url or env.broker_url
    if not url:
        raise IplosctlError(
            f"{manifest.path}: spec.endpoint.url is not set and the "
            f"{manifest.environment} environment has no default broker"
        )
    if "://" not in url and not Path(url).is_absolute():
        url = os.path.normpath(manifest.path.parent / url)  # a folder, as the manifest's paths
    tls = endpoint.tls
    return TransportSettings(
        url=url,
        # The profile's namespace belongs to the profile's broker: another URL needs its own.
        namespace=endpoint.namespace or (env.namespace if not endpoint.url else None),
        username=endpoint.username,
        password=get_secret(endpoint.credential) if endpoint.credential else None,
        tls=TlsSettings(tls.ca_file, tls.verify_peer_name, tls.client_certificate, tls.client_key),
        timeout_seconds=endpoint.timeout_seconds,
        allow_plaintext=env.sandbox,  # amqp:// beyond loopback: sandbox only (transport_policy)
        max_message_size=receive_limit(manifest),
    )


def edi_transport_settings(manifest: Manifest) -> TransportSettings:
    """Settings for the `edi` transport: SMTP URL, IMAP URL and addresses in `options`.

    Receipts are read from `imapFolder` for the reply queue only: EDI has no error
    queue (a transport error comes back as a bounce, which lands in the same folder and
    is quarantined as unreadable).
    """
    endpoint = manifest.endpoint
    assert endpoint is not None
    missing = [k for k in ("address", "smtp", "imap") if not getattr(endpoint, k)]
    if missing:
        raise IplosctlError(
            f"{manifest.path}: the edi transport needs spec.endpoint.{', '.join(missing)} "
            "(the municipality's EDI address, its SMTP and its IMAP server)"
        )
    to = register_edi_address(manifest)
    if not to:
        raise IplosctlError(
            f"{manifest.path}: the {manifest.reporting_year} profile has no register EDI "
            "address: set spec.endpoint.registerAddress"
        )
    env = profiles.profile_for(manifest).environments[manifest.environment]
    tls = endpoint.tls
    return TransportSettings(
        url=endpoint.smtp,  # type: ignore[arg-type]
        username=endpoint.username,
        password=get_secret(endpoint.credential) if endpoint.credential else None,
        tls=TlsSettings(tls.ca_file, tls.verify_peer_name, tls.client_certificate, tls.client_key),
        timeout_seconds=endpoint.timeout_seconds,
        allow_plaintext=False,  # the edi transport never logs in or sends in clear
        max_message_size=receive_limit(manifest),
        options={
            "address": endpoint.address,
            "to": to,
            "imap": endpoint.imap,
            "folders": {addressing(manifest).reply_queue: endpoint.imap_folder or "INBOX"},
            "processed_folder": endpoint.processed_folder or EDI_PROCESSED_FOLDER,
            "accept_from": to,
            "sandbox": env.sandbox,
        },
    )


def receive_limit(manifest: Manifest) -> int:
    """The largest message receipts reads: `endpoint.maxMessageSizeBytes`, else twice the
    message size limit (the manifest's agreed one, else the profile's)."""
    endpoint = manifest.endpoint
    if endpoint is not None and endpoint.max_message_size_bytes:
        return endpoint.max_message_size_bytes
    profile = profiles.profile_for(manifest)
    return 2 * (manifest.message_size_limit_bytes or profile.message_limit_bytes)


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
