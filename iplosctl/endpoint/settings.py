"""What a transport plugin is opened with: URL, namespace, credential, TLS and limits.

From `spec.endpoint`, with the year profile's broker and namespace as defaults and the
password from the secret store; the `edi` transport's addresses go in `options`.
"""

from __future__ import annotations

import os
from pathlib import Path

from iplosctl import profiles
from iplosctl.errors import IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.plugins import TlsSettings, TransportSettings
from iplosctl.secrets import get_secret

from .routes import EDI_PROCESSED_FOLDER, addressing, register_edi_address


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
