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
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509 import verification as xv
from cryptography.x509.oid import NameOID

from iplosctl.errors import PayloadError
from iplosctl.payload.cms_writer import PrivateKey, asn1_certificate, signed_and_enveloped

_PKCS12_SUFFIXES = frozenset({".p12", ".pfx"})
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----\s*", re.DOTALL)
_PEM_KEY_LABELS = frozenset(
    {b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
)
# SHA-1 and MD5 are refused on purpose: NHN's profile is SHA-256 (DOMAIN.md §5.4).
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# cryptography decrypts only these (STACK.md §4.2); anything else gets a clear message.
_CONTENT_CIPHERS = frozenset({"aes128_cbc", "aes256_cbc"})

#: Enterprise CA chains (Buypass, Commfides) may restrict an intermediate's extended key
#: usage to emailProtection, or leave it out: the web-PKI CA rules apply, except that the
#: EKU of a CA is not required to allow clientAuth. The leaf is a CMS signing or
#: encryption certificate, not a TLS client, so no EKU/SAN rules apply to it either.
ENTERPRISE_CA_POLICY = xv.ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.ExtendedKeyUsage, xv.Criticality.AGNOSTIC, None
)

#: checks a verified chain (leaf first, anchor last) for revocation; raises CmsError to refuse
RevocationHook = Callable[[Sequence[x509.Certificate]], None]


class Failure(StrEnum):
    """Why a CMS operation failed; stable values for code and tests."""

    UNREADABLE = "unreadable"
    WRONG_PASSPHRASE = "wrong-passphrase"
    WRONG_FORMAT = "wrong-format"
    KEY_MISMATCH = "key-mismatch"
    MALFORMED = "malformed"
    UNSUPPORTED = "unsupported"
    NOT_FOR_US = "not-for-us"
    WRONG_KEY = "wrong-key"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_SIGNER = "unknown-signer"
    UNTRUSTED = "untrusted-chain"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    KEY_USAGE = "key-usage"
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation-unknown"


class CmsError(PayloadError):
    """A PayloadError that also says which `Failure` happened."""

    def __init__(self, reason: Failure, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- loading -------------------------------------------------------------------------------


def load_certificate(path: Path, passphrase: str | None = None) -> x509.Certificate:
    """The first certificate in a PEM, DER or PKCS#12 (.p12/.pfx) file.

    A PKCS#12 file gives the certificate that belongs to its key; `passphrase` is only
    needed for PKCS#12 files, whose certificate bag is usually encrypted too.
    """
    path = Path(path)
    data = _read(path, "certificate")
    if _is_pem(data):
        blocks = [b for label, b in _pem_blocks(data) if label == b"CERTIFICATE"]
        if not blocks:
            raise CmsError(
                Failure.WRONG_FORMAT,
                f"{path} holds no PEM CERTIFICATE block; export the certificate as PEM, "
                "DER or PKCS#12",
            )
        try:
            return x509.load_pem_x509_certificate(blocks[0])
        except ValueError:
            raise CmsError(
                Failure.WRONG_FORMAT, f"{path} holds a damaged PEM certificate; export it again"
            ) from None
    if path.suffix.lower() not in _PKCS12_SUFFIXES:
        try:
            return x509.load_der_x509_certificate(data)
        except ValueError:
            if not _looks_like_pkcs12(data):
                raise CmsError(
                    Failure.WRONG_FORMAT,
                    f"{path} is not a certificate in PEM, DER or PKCS#12 format; "
                    "check that the manifest points at the right file",
                ) from None
    _key, cert = _load_pkcs12(path, data, passphrase)
    if cert is None:
        raise CmsError(
            Failure.WRONG_FORMAT,
            f"{path} holds no certificate for its key; export the PKCS#12 file with the "
            "certificate included",
        )
    return cert


def load_private_key(path: Path, passphrase: str | None) -> PrivateKey:
    """The private key in a PEM, DER or PKCS#12 (.p12/.pfx) file.

    A PKCS#12 file can serve as both certificate and key file. A passphrase given for
    an unencrypted key is ignored, so rotating to an unprotected key needs no config change.
    """
    path = Path(path)
    data = _read(path, "private key")
    password = passphrase.encode() if passphrase is not None else None
    if _is_pem(data):
        blocks = [b for label, b in _pem_blocks(data) if label in _PEM_KEY_LABELS]
        if not blocks:
            raise CmsError(
                Failure.WRONG_FORMAT,
                f"{path} holds no PEM private key block; point the manifest at the key file "
                "(PEM, DER or PKCS#12)",
            )
        key = _load_key(path, blocks[0], password, serialization.load_pem_private_key)
    elif path.suffix.lower() in _PKCS12_SUFFIXES or _looks_like_pkcs12(data):
        key, _cert = _load_pkcs12(path, data, passphrase)
        if key is None:
            raise CmsError(
                Failure.WRONG_FORMAT,
                f"{path} holds no private key; export the PKCS#12 file with its private key",
            )
    else:
        key = _load_key(path, data, password, serialization.load_der_private_key)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CmsError(
            Failure.UNSUPPORTED,
            f"{path} holds a {type(key).__name__}; NHN certificates use RSA keys",
        )
    return key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CmsError(
            Failure.UNREADABLE,
            f"cannot read {what} file {path}: {exc.strerror}; check the path and permissions",
        ) from None


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


def _pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(label, block) for each PEM block, so a combined cert+key file works for both."""
    return [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]


def _looks_like_pkcs12(data: bytes) -> bool:
    """Whether `data` parses as a PKCS#12 PFX, to tell a wrong passphrase from a wrong file."""
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        return pfx["version"].native == "v3" and pfx["auth_safe"]["content_type"].native in (
            "data",
            "signed_data",
        )
    except (ValueError, TypeError, KeyError):
        return False


def _load_pkcs12(
    path: Path, data: bytes, passphrase: str | None
) -> tuple[object | None, x509.Certificate | None]:
    password = passphrase.encode() if passphrase is not None else None
    # Unprotected exports differ (no password vs empty password); a passphrase given for
    # one is ignored, as for PEM keys.
    for attempt in dict.fromkeys([password, None, b""]):
        try:
            key, cert, _extra = pkcs12.load_key_and_certificates(data, attempt)
            return key, cert
        except ValueError:
            continue
        except UnsupportedAlgorithm:
            raise CmsError(
                Failure.UNSUPPORTED,
                f"{path} uses a PKCS#12 encryption this system cannot open; re-export it "
                "with AES-256 (openssl pkcs12 -export -keypbe AES-256-CBC -certpbe AES-256-CBC)",
            ) from None
    if not _looks_like_pkcs12(data):
        raise CmsError(
            Failure.WRONG_FORMAT,
            f"{path} is not a PKCS#12 file; use a .p12/.pfx export, or PEM files",
        )
    if passphrase is None:
        raise CmsError(
            Failure.WRONG_PASSPHRASE,
            f"{path} is protected by a passphrase; provide it through the manifest's "
            "passphrase secret",
        )
    raise CmsError(
        Failure.WRONG_PASSPHRASE,
        f"wrong passphrase for {path}; check the passphrase secret configured for this file",
    )


def _load_key(
    path: Path, data: bytes, password: bytes | None, loader: Callable[[bytes, bytes | None], object]
) -> object:
    encrypted = b"ENCRYPTED" in data[:256]
    try:
        return loader(data, password)
    except TypeError:
        # cryptography says TypeError for "encrypted but no password" and for
        # "password given but key not encrypted"; the second is harmless.
        if password is None:
            raise CmsError(
                Failure.WRONG_PASSPHRASE,
                f"private key {path} is encrypted; provide its passphrase through the "
                "manifest's passphrase secret",
            ) from None
        try:
            return loader(data, None)
        except (TypeError, ValueError):
            pass
    except ValueError:
        if encrypted and password is not None:
            raise CmsError(
                Failure.WRONG_PASSPHRASE,
                f"wrong passphrase for private key {path}; check the passphrase secret",
            ) from None
    except UnsupportedAlgorithm:
        raise CmsError(
            Failure.UNSUPPORTED,
            f"private key {path} uses an algorithm this system cannot read; export it as "
            "PKCS#8 with AES-256",
        ) from None
    raise CmsError(
        Failure.WRONG_FORMAT,
        f"{path} is not a private key in PEM, DER or PKCS#12 format; check that the "
        "manifest points at the key file",
    )


# --- certificate checks -------------------------------------------------------------------


def describe(cert: x509.Certificate) -> str:
    """`'CN' (serial 1a2b…)`: how messages name a certificate without personal data."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cns[0].value) if cns else cert.subject.rfc4514_string()
    return f"'{name}' (serial {cert.serial_number:x})"


def check_signing_certificate(cert: x509.Certificate, now: dt.datetime) -> None:
    """Refuse to sign with a certificate KPR would reject (DOMAIN.md §5.4: nonRepudiation)."""
    _check_validity(
        cert,
        now,
        "signing certificate",
        "order a new signing certificate and point the manifest at it",
    )
    if not _has_key_usage(cert, "content_commitment"):
        raise CmsError(
            Failure.KEY_USAGE,
            f"signing certificate {describe(cert)} lacks the nonRepudiation key usage NHN "
            "requires; use the municipality's signing certificate, not the encryption one",
        )


def check_encryption_certificate(cert: x509.Certificate, now: dt.datetime) -> None:
    """Refuse to encrypt to a certificate the receiver cannot use (keyEncipherment)."""
    _check_validity(
        cert,
        now,
        "encryption certificate",
        "fetch the receiver's current encryption certificate from Adresseregisteret/CPPA",
    )
    if not _has_key_usage(cert, "key_encipherment"):
        raise CmsError(
            Failure.KEY_USAGE,
            f"encryption certificate {describe(cert)} lacks the keyEncipherment key usage "
            "NHN requires; use the receiver's encryption certificate, not its signing one",
        )
    _require_rsa(cert)


def _require_rsa(cert: x509.Certificate) -> None:
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise CmsError(
            Failure.UNSUPPORTED,
            f"encryption certificate {describe(cert)} has no RSA key; NHN encrypts to RSA only",
        )


def _utc(now: dt.datetime) -> dt.datetime:
    """Naive datetimes are taken as UTC, which is what certificates use."""
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


def _check_validity(cert: x509.Certificate, now: dt.datetime, label: str, remedy: str) -> None:
    now = _utc(now)
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


def _has_key_usage(cert: x509.Certificate, usage: str) -> bool:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(getattr(ku, usage))


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, fmt) == key.public_key().public_bytes(der, fmt)


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
    if not _same_key(signer_cert, signer_key):
        raise CmsError(
            Failure.KEY_MISMATCH,
            f"the signing key does not belong to signing certificate {describe(signer_cert)}; "
            "check that the manifest's certificate and key files are a pair",
        )
    _require_rsa(recipient_cert)  # also without `now`: cryptography needs RSA here


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
    return _verify(signed, sender_certs, trust_anchors, _utc(now), list(intermediates), revocation)


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
    if not isinstance(key, rsa.RSAPrivateKey) or not _same_key(cert, key):
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
        f"{describe(cert)}" + (f" key id {ski.hex()}" if (ski := _ski(cert)) else "")
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


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _identifier_is(sid: asn1_core.Choice, cert: x509.Certificate) -> bool:
    """Whether a CMS SignerIdentifier/RecipientIdentifier names `cert`."""
    if sid.name == "issuer_and_serial_number":
        ias = sid.chosen
        return (
            ias["serial_number"].native == cert.serial_number
            and ias["issuer"] == asn1_certificate(cert).issuer
        )
    if sid.name == "subject_key_identifier":
        return sid.chosen.native == _ski(cert)
    return False


def _recipient_is(ri: asn1_cms.RecipientInfo, cert: x509.Certificate) -> bool:
    return ri.name == "ktri" and _identifier_is(ri.chosen["rid"], cert)


def _verify(
    der: bytes,
    sender_certs: Sequence[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    intermediates: list[x509.Certificate] | None = None,
    revocation: RevocationHook | None = None,
) -> bytes:
    malformed = CmsError(
        Failure.MALFORMED,
        "decrypted content is not a CMS SignedData; the sender must sign before encrypting",
    )
    try:
        info = asn1_cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise malformed
        sd = info["content"]
        encap = sd["encap_content_info"]
        content = encap["content"].native
        encap_type = encap["content_type"].dotted
        signer_infos = list(sd["signer_infos"])
        certs = sd["certificates"]
        embedded = (
            []
            if isinstance(certs, asn1_core.Void)
            else [x509.load_der_x509_certificate(c.chosen.dump()) for c in certs]
        )
        if len(signer_infos) != 1:
            raise CmsError(
                Failure.MALFORMED,
                f"message has {len(signer_infos)} signatures; exactly one is expected",
            )
        si = signer_infos[0]
        sid = si["sid"]
        digest_name = si["digest_algorithm"]["algorithm"].native
        sig_alg = si["signature_algorithm"]
        signature = si["signature"].native
        raw_attrs = si["signed_attrs"]
        attrs = (
            None
            if isinstance(raw_attrs, asn1_core.Void)
            else [(a["type"].dotted, a["type"].native, list(a["values"])) for a in raw_attrs]
        )
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError):
        raise malformed from None
    if not isinstance(content, bytes):
        raise CmsError(
            Failure.MALFORMED,
            "message signature is detached; the signed content must be inside the SignedData",
        )
    signer = next((c for c in sender_certs if _identifier_is(sid, c)), None)
    if signer is None:
        raise CmsError(Failure.UNKNOWN_SIGNER, _unknown_signer_message(sid))
    digest_cls = _DIGESTS.get(str(digest_name))
    if digest_cls is None:
        raise CmsError(
            Failure.UNSUPPORTED,
            f"message is signed with digest {digest_name}; only SHA-2 digests are accepted",
        )
    if attrs is None:  # no signed attributes: the signature covers the content itself
        to_verify = content
    else:
        to_verify = _check_signed_attrs(attrs, raw_attrs, content, encap_type, digest_cls())
    _check_signature(signer, sig_alg, signature, to_verify, digest_cls())
    _check_validity(
        signer,
        now,
        "sender's signing certificate",
        "the sender must renew it and publish the new one in Adresseregisteret",
    )
    if not _has_key_usage(signer, "content_commitment"):
        raise CmsError(
            Failure.KEY_USAGE,
            f"sender's signing certificate {describe(signer)} lacks the nonRepudiation key "
            "usage; the sender must sign with its signing certificate",
        )
    chain = _check_chain(
        signer, [c for c in [*embedded, *(intermediates or [])] if c != signer], trust_anchors, now
    )
    if revocation is not None:
        revocation(chain)
    return content


def _unknown_signer_message(sid: asn1_core.Choice) -> str:
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"].native.get("common_name", "?")
        who = f"issuer '{issuer}', serial {sid.chosen['serial_number'].native:x}"
    else:
        who = f"key id {sid.chosen.native.hex()}"
    return (
        f"message is signed by a certificate not registered for this sender ({who}); if the "
        "sender renewed its signing certificate, refresh it from Adresseregisteret/CPPA"
    )


def _check_signed_attrs(
    attrs: list[tuple[str, str, list[object]]],
    raw_attrs: asn1_cms.CMSAttributes,
    content: bytes,
    encap_type: str,
    digest: hashes.HashAlgorithm,
) -> bytes:
    """Check contentType and messageDigest (RFC 5652 §5.3) and return the signed bytes."""
    by_name: dict[str, list[list[object]]] = {}
    for _dotted, name, values in attrs:
        by_name.setdefault(name, []).append(values)
    for needed in ("content_type", "message_digest"):
        if len(by_name.get(needed, [])) != 1 or len(by_name[needed][0]) != 1:
            raise CmsError(
                Failure.BAD_SIGNATURE,
                f"signature lacks a single {needed.replace('_', ' ')} attribute; "
                "the sender's CMS signing is not standard",
            )
    content_type = by_name["content_type"][0][0]
    if getattr(content_type, "dotted", None) != encap_type:
        raise CmsError(
            Failure.BAD_SIGNATURE,
            "signed content type attribute does not match the content; ask the sender to resend",
        )
    h = hashes.Hash(digest)
    h.update(content)
    expected = getattr(by_name["message_digest"][0][0], "native", None)
    if expected != h.finalize():
        raise CmsError(
            Failure.BAD_SIGNATURE,
            "signature check failed: the content was changed after it was signed; "
            "ask the sender to resend, and report it if it happens again",
        )
    # The signature covers the attributes as a DER SET OF, not as the [0] IMPLICIT field.
    return b"\x31" + raw_attrs.dump()[1:]


def _check_signature(
    signer: x509.Certificate,
    sig_alg: asn1_cms.SignedDigestAlgorithm,
    signature: bytes,
    data: bytes,
    digest: hashes.HashAlgorithm,
) -> None:
    key = signer.public_key()
    try:
        algo = sig_alg.signature_algo
    except ValueError:
        algo = str(sig_alg["algorithm"].native)
    try:
        if isinstance(key, rsa.RSAPublicKey) and algo == "rsassa_pss":
            params = sig_alg["parameters"]
            pss_hash = _DIGESTS.get(str(params["hash_algorithm"]["algorithm"].native))
            mgf_hash = _DIGESTS.get(
                str(params["mask_gen_algorithm"]["parameters"]["algorithm"].native)
            )
            if pss_hash is None or mgf_hash is None:
                raise CmsError(
                    Failure.UNSUPPORTED, "message uses RSA-PSS with a non-SHA-2 hash; refused"
                )
            pad = padding.PSS(
                mgf=padding.MGF1(mgf_hash()), salt_length=params["salt_length"].native
            )
            key.verify(signature, data, pad, pss_hash())
        elif isinstance(key, rsa.RSAPublicKey) and algo == "rsassa_pkcs1v15":
            key.verify(signature, data, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algo == "ecdsa":
            key.verify(signature, data, ec.ECDSA(digest))
        else:
            raise CmsError(
                Failure.UNSUPPORTED,
                f"message is signed with {algo} by a {type(key).__name__}; expected RSA",
            )
    except InvalidSignature:
        raise CmsError(
            Failure.BAD_SIGNATURE,
            f"signature check failed for sender's certificate {describe(signer)}: the "
            "message was changed or signed with another key; ask the sender to resend",
        ) from None


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
        .time(_utc(now))
        .extension_policies(
            ca_policy=ENTERPRISE_CA_POLICY, ee_policy=xv.ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    return list(verifier.verify(cert, list(intermediates)).chain)


def _check_chain(
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
