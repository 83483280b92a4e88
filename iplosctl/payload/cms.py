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
`cert_checks`, failures named in `cms_errors`; this module re-exports their public
names so `from iplosctl.payload.cms import load_certificate` keeps working.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

from iplosctl.payload.cert_checks import (
    ENTERPRISE_CA_POLICY,
    as_utc,
    check_chain,
    check_encryption_certificate,
    check_signing_certificate,
    check_validity,
    describe,
    has_key_usage,
    require_rsa,
    same_key,
    verify_chain,
)
from iplosctl.payload.cms_errors import CmsError, Failure
from iplosctl.payload.cms_writer import PrivateKey, asn1_certificate, signed_and_enveloped
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

# SHA-1 and MD5 are refused on purpose: NHN's profile is SHA-256 (DOMAIN.md §5.4).
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# cryptography decrypts only these (STACK.md §4.2); anything else gets a clear message.
_CONTENT_CIPHERS = frozenset({"aes128_cbc", "aes256_cbc"})

#: checks a verified chain (leaf first, anchor last) for revocation; raises CmsError to refuse
RevocationHook = Callable[[Sequence[x509.Certificate]], None]


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
    return _verify(
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
        return bool(
            ias["serial_number"].native == cert.serial_number
            and ias["issuer"] == asn1_certificate(cert).issuer
        )
    if sid.name == "subject_key_identifier":
        return bool(sid.chosen.native == _ski(cert))
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
    check_validity(
        signer,
        now,
        "sender's signing certificate",
        "the sender must renew it and publish the new one in Adresseregisteret",
    )
    if not has_key_usage(signer, "content_commitment"):
        raise CmsError(
            Failure.KEY_USAGE,
            f"sender's signing certificate {describe(signer)} lacks the nonRepudiation key "
            "usage; the sender must sign with its signing certificate",
        )
    chain = check_chain(
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
    return b"\x31" + bytes(raw_attrs.dump())[1:]


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
