"""CMS protection of messages to and from KPR: sign, then encrypt (DOMAIN.md §5.4).

NHN's reference client wraps an attached SignedData (SHA-256, the sender's signing
certificate) in an EnvelopedData (AES-256-CBC, RSA key transport, recipient named by
issuer and serial number). `cms_writer` assembles both with asn1crypto and
`cryptography`'s primitives, so that hashing and encrypting a large part overlap (its
docstring says why cryptography's PKCS7 builders are not used). We decrypt with
`cryptography`, but it cannot verify SignedData (STACK.md §4.2), so verification parses
the structure with asn1crypto and does the maths and the path check with `cryptography`
(STACK.md §4.3).

Every failure is a `CmsError` (a `PayloadError`) with a stable `reason`, so that the
sandbox register can choose an AppRec or error-queue code without parsing messages.
Messages name certificates by subject CN and serial: those identify organisations,
never persons.

Key and certificate files are loaded by `key_files`, certificates judged by
`cert_checks`, SignedData verified by `cms_verify`, failures named in `cms_errors`;
this module re-exports their public
names so `from iplosctl.payload.cms import load_certificate` keeps working.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

from iplosctl.payload.cert_checks import (
    ENTERPRISE_CA_POLICY,
    as_utc,
    check_encryption_certificate,
    check_signing_certificate,
    describe,
    require_rsa,
    same_key,
    verify_chain,
)
from iplosctl.payload.cms_errors import CmsError, Failure
from iplosctl.payload.cms_verify import RevocationHook, identifier_is, ski, verify_signed_data
from iplosctl.payload.cms_writer import PrivateKey, signed_and_enveloped
from iplosctl.payload.key_files import load_certificate, load_private_key

__all__ = [
    "ENTERPRISE_CA_POLICY",
    "CmsError",
    "Failure",
    "PrivateKey",
    "RevocationHook",
    "check_encryption_certificate",
    "check_sending_keys",
    "check_signing_certificate",
    "decrypt_then_verify",
    "describe",
    "load_certificate",
    "load_private_key",
    "sign_then_encrypt",
    "verify_chain",
]

# cryptography decrypts only these (STACK.md §4.2); anything else gets a clear message.
_CONTENT_CIPHERS = frozenset({"aes128_cbc", "aes256_cbc"})


# --- sign, then encrypt ------------------------------------------------------------------


def check_sending_keys(
    signer_cert: x509.Certificate,
    signer_key: PrivateKey,
    recipient_cert: x509.Certificate,
    now: dt.datetime | None,
) -> None:
    """Everything `sign_then_encrypt` refuses, checked without touching any content.

    apply calls it once before connecting, so an expired certificate or a key that
    does not match is reported at once, not after the connection's retries. Given
    `now`, both certificates are checked as the reference client does before sending
    (DOMAIN.md §5.4).
    """
    if now is not None:
        check_signing_certificate(signer_cert, now)
        check_encryption_certificate(recipient_cert, now)
    if not same_key(signer_cert, signer_key):
        raise CmsError(
            Failure.KEY_MISMATCH,
            f"the signing key does not belong to signing certificate {describe(signer_cert)}; "
            "check that the manifest's certificate and key files are a pair",
        )
    require_rsa(recipient_cert)  # also without `now`: cryptography needs RSA here


def sign_then_encrypt(
    content: bytes,
    *,
    signer_cert: x509.Certificate,
    signer_key: PrivateKey,
    recipient_cert: x509.Certificate,
    now: dt.datetime | None = None,
) -> bytes:
    """DER EnvelopedData (AES-256-CBC) to `recipient_cert`, holding an attached SHA-256
    SignedData over `content` byte for byte.

    The content goes in as it is, line endings included (cryptography's builder needed
    its `Binary` option for that, STACK.md §4.2). `check_sending_keys` runs first; the
    bytes are assembled by `cms_writer`, which overlaps hashing with encrypting.
    """
    check_sending_keys(signer_cert, signer_key, recipient_cert, now)
    return signed_and_enveloped(
        content,
        signer_cert=signer_cert,
        signer_key=signer_key,
        recipient_cert=recipient_cert,
        signing_time=dt.datetime.now(dt.UTC),
    )


# --- decrypt, then verify ----------------------------------------------------------------


def decrypt_then_verify(
    blob: bytes,
    *,
    own_cert: x509.Certificate,
    own_key: PrivateKey,
    sender_certs: Sequence[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    previous: Sequence[tuple[x509.Certificate, PrivateKey]] = (),
    intermediates: Sequence[x509.Certificate] = (),
    revocation: RevocationHook | None = None,
) -> bytes:
    """The signed content of a sign-then-encrypt message, after every check passed.

    The signer must be one of `sender_certs` (the certificates Adresseregisteret/CPPA
    lists for the sender), matched by issuer and serial number: a certificate merely
    embedded in the message proves nothing. It must be valid at `now`, carry
    nonRepudiation and chain to one of `trust_anchors`, through the message's embedded
    certificates or `intermediates`; `revocation` then sees the verified chain.

    `previous` are earlier encryption certificates with their keys (rotation): a message
    encrypted to one of them is decrypted with it.
    """
    signed = _decrypt(blob, own_cert, own_key, previous)
    return verify_signed_data(
        signed, sender_certs, trust_anchors, as_utc(now), list(intermediates), revocation
    )


def _decrypt(
    blob: bytes,
    own_cert: x509.Certificate,
    own_key: PrivateKey,
    previous: Sequence[tuple[x509.Certificate, PrivateKey]] = (),
) -> bytes:
    pairs = [(own_cert, own_key), *previous]
    try:
        info = asn1_cms.ContentInfo.load(blob, strict=True)
        kind = info["content_type"].native
        if kind != "enveloped_data":
            raise CmsError(
                Failure.MALFORMED,
                f"message is CMS {kind}, not EnvelopedData; the sender must sign, then encrypt",
            )
        env = info["content"]
        eci = env["encrypted_content_info"]
        cipher = eci["content_encryption_algorithm"]["algorithm"]
        recipients = list(env["recipient_infos"])
        matched = next(
            (
                (cert, key, ri)
                for cert, key in pairs
                for ri in recipients
                if _recipient_is(ri, cert)
            ),
            None,
        )
        named = [_recipient_name(ri) for ri in recipients]
    except (ValueError, TypeError, KeyError):
        raise CmsError(
            Failure.MALFORMED,
            "message is not DER-encoded CMS; the sender must send sign-then-encrypt CMS "
            "(application/pkcs7-mime)",
        ) from None
    if matched is None:
        raise CmsError(Failure.NOT_FOR_US, _not_for_us_message(named, pairs))
    cert, key, ri = matched
    ktri_alg = ri.chosen["key_encryption_algorithm"]["algorithm"].native
    if cipher.native not in _CONTENT_CIPHERS:
        raise CmsError(
            Failure.UNSUPPORTED,
            f"message is encrypted with {cipher.native or cipher.dotted}; only AES-CBC is "
            "supported, ask the sender to use AES-256-CBC",
        )
    if ktri_alg != "rsaes_pkcs1v15":
        raise CmsError(
            Failure.UNSUPPORTED,
            f"message uses key transport {ktri_alg}; only RSA PKCS#1 v1.5 is supported",
        )
    if not isinstance(key, rsa.RSAPrivateKey) or not same_key(cert, key):
        raise CmsError(
            Failure.WRONG_KEY,
            f"the decryption key does not belong to encryption certificate "
            f"{describe(cert)}; check that the certificate and key files are a pair",
        )
    damaged = CmsError(
        Failure.WRONG_KEY,
        f"message names our certificate {describe(cert)} but cannot be decrypted "
        "with its key; it is damaged or was encrypted to another key, ask the sender "
        "to resend",
    )
    if ri.chosen["rid"].name == "subject_key_identifier":
        # cryptography's decrypt matches recipients by issuer and serial only
        try:
            return _decrypt_content(eci, ri.chosen["encrypted_key"].native, key)
        except (ValueError, TypeError, KeyError):
            raise damaged from None
    try:
        return pkcs7.pkcs7_decrypt_der(blob, cert, key, [])
    except (ValueError, UnsupportedAlgorithm):
        raise damaged from None


def _decrypt_content(
    eci: asn1_cms.EncryptedContentInfo, encrypted_key: bytes, key: rsa.RSAPrivateKey
) -> bytes:
    """RSA PKCS#1 v1.5 key transport, then AES-CBC with PKCS#7 padding (RFC 5652 §6)."""
    cek = key.decrypt(encrypted_key, padding.PKCS1v15())
    algorithm = eci["content_encryption_algorithm"]
    iv = algorithm["parameters"].native
    ciphertext = eci["encrypted_content"].native
    if len(cek) * 8 != {"aes128_cbc": 128, "aes256_cbc": 256}[algorithm["algorithm"].native]:
        raise ValueError("content key of the wrong length")
    if not isinstance(iv, bytes) or not isinstance(ciphertext, bytes) or len(iv) != 16:
        raise ValueError("no IV or content")
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    pad = padded[-1] if padded else 0
    if not 1 <= pad <= 16 or padded[-pad:] != bytes([pad]) * pad:
        raise ValueError("bad padding")
    return padded[:-pad]


def _recipient_name(ri: asn1_cms.RecipientInfo) -> str:
    """How a RecipientInfo names its recipient, for messages (organisation certificates)."""
    if ri.name != "ktri":
        return f"a {ri.name} recipient (only key transport is supported)"
    rid = ri.chosen["rid"]
    if rid.name == "subject_key_identifier":
        return f"key id {rid.chosen.native.hex()}"
    issuer = rid.chosen["issuer"].native.get("common_name", "?")
    return f"issuer '{issuer}' serial {rid.chosen['serial_number'].native:x}"


def _not_for_us_message(
    named: list[str], pairs: Sequence[tuple[x509.Certificate, PrivateKey]]
) -> str:
    ours = ", ".join(
        f"{describe(cert)}" + (f" key id {key_id.hex()}" if (key_id := ski(cert)) else "")
        for cert, _key in pairs
    )
    which = (
        "our current or previous encryption certificates"
        if len(pairs) > 1
        else ("our encryption certificate")
    )
    return (
        f"message is encrypted to {', '.join(named) or 'no recipient'}, not to {which} "
        f"({ours}); the sender must use our current certificate from "
        "Adresseregisteret/CPPA, or set certificates.encryptionPrevious for a rotated one"
    )


def _recipient_is(ri: asn1_cms.RecipientInfo, cert: x509.Certificate) -> bool:
    return ri.name == "ktri" and identifier_is(ri.chosen["rid"], cert)
