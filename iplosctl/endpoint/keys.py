"""The municipality's key pairs and the register's certificates, loaded for CMS.

Passphrases come from the secret store (`iplosctl.secrets`); certificate chains from the
certificate files themselves and `certificates.intermediates`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from iplosctl.errors import IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.payload.cms import PrivateKey, load_certificate, load_private_key
from iplosctl.secrets import get_secret


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
