"""cert_checks: whether a certificate may be used for what a message asks of it.

Validity at a moment, the key usage NHN requires (nonRepudiation to sign,
keyEncipherment to encrypt, DOMAIN.md §5.4), RSA for encryption, a key that belongs to
its certificate, and the path to a trust anchor under the enterprise CA policy. Used
before sending (`cms.check_sending_keys`), when verifying (`cms.decrypt_then_verify`)
and by `certificates` for the expiry report. Messages name certificates by subject CN
and serial: those identify organisations, never persons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import verification as xv
from cryptography.x509.oid import NameOID

from iplosctl.payload.cms_errors import CmsError, Failure
from iplosctl.payload.cms_writer import PrivateKey

#: Enterprise CA chains (Buypass, Commfides) may restrict an intermediate's extended key
#: usage to emailProtection, or leave it out: the web-PKI CA rules apply, except that the
#: EKU of a CA is not required to allow clientAuth. The leaf is a CMS signing or
#: encryption certificate, not a TLS client, so no EKU/SAN rules apply to it either.
ENTERPRISE_CA_POLICY = xv.ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.ExtendedKeyUsage, xv.Criticality.AGNOSTIC, None
)


def describe(cert: x509.Certificate) -> str:
    """`'CN' (serial 1a2b…)`: how messages name a certificate without personal data."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cns[0].value) if cns else cert.subject.rfc4514_string()
    return f"'{name}' (serial {cert.serial_number:x})"


def check_signing_certificate(cert: x509.Certificate, now: dt.datetime) -> None:
    """Refuse to sign with a certificate KPR would reject (DOMAIN.md §5.4: nonRepudiation)."""
    check_validity(
        cert,
        now,
        "signing certificate",
        "order a new signing certificate and point the manifest at it",
    )
    if not has_key_usage(cert, "content_commitment"):
        raise CmsError(
            Failure.KEY_USAGE,
            f"signing certificate {describe(cert)} lacks the nonRepudiation key usage NHN "
            "requires; use the municipality's signing certificate, not the encryption one",
        )


def check_encryption_certificate(cert: x509.Certificate, now: dt.datetime) -> None:
    """Refuse to encrypt to a certificate the receiver cannot use (keyEncipherment)."""
    check_validity(
        cert,
        now,
        "encryption certificate",
        "fetch the receiver's current encryption certificate from Adresseregisteret/CPPA",
    )
    if not has_key_usage(cert, "key_encipherment"):
        raise CmsError(
            Failure.KEY_USAGE,
            f"encryption certificate {describe(cert)} lacks the keyEncipherment key usage "
            "NHN requires; use the receiver's encryption certificate, not its signing one",
        )
    require_rsa(cert)


def require_rsa(cert: x509.Certificate) -> None:
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise CmsError(
            Failure.UNSUPPORTED,
            f"encryption certificate {describe(cert)} has no RSA key; NHN encrypts to RSA only",
        )


def as_utc(now: dt.datetime) -> dt.datetime:
    """Naive datetimes are taken as UTC, which is what certificates use."""
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


def check_validity(cert: x509.Certificate, now: dt.datetime, label: str, remedy: str) -> None:
    now = as_utc(now)
    if now > cert.not_valid_after_utc:
        raise CmsError(
            Failure.EXPIRED,
            f"{label} {describe(cert)} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; {remedy}",
        )
    if now < cert.not_valid_before_utc:
        raise CmsError(
            Failure.NOT_YET_VALID,
            f"{label} {describe(cert)} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check this computer's clock "
            "or use the certificate that is valid now",
        )


def has_key_usage(cert: x509.Certificate, usage: str) -> bool:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(getattr(ku, usage))


def same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, fmt) == key.public_key().public_bytes(der, fmt)


def verify_chain(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> list[x509.Certificate]:
    """The chain (leaf first, anchor last) from `cert` to one of `trust_anchors`.

    The policy accepts enterprise CA chains (`ENTERPRISE_CA_POLICY`); raises a
    `VerificationError` or `ValueError` with cryptography's reason otherwise.
    """
    verifier = (
        xv.PolicyBuilder()
        .store(xv.Store(list(trust_anchors)))
        .time(as_utc(now))
        .extension_policies(
            ca_policy=ENTERPRISE_CA_POLICY, ee_policy=xv.ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    return list(verifier.verify(cert, list(intermediates)).chain)


def check_chain(
    signer: x509.Certificate,
    intermediates: list[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> list[x509.Certificate]:
    if not trust_anchors:
        raise CmsError(
            Failure.UNTRUSTED,
            "no trusted CA certificates are configured; set the CA file for this environment",
        )
    try:
        return verify_chain(signer, intermediates, trust_anchors, now)
    except (xv.VerificationError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CmsError(
            Failure.UNTRUSTED,
            f"sender's signing certificate {describe(signer)} does not chain to a trusted "
            f"CA ({reason}); check the CA file configured for this environment",
        ) from None
