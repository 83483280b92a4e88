"""cms_verify: check a decrypted SignedData and return its content (STACK.md §4.3).

`cryptography` cannot verify SignedData (STACK.md §4.2), so the structure is parsed
with asn1crypto and the maths and the path check are `cryptography`'s: exactly one
signer, named by issuer and serial (or key id) among the certificates registered for
the sender, a SHA-2 digest, contentType and messageDigest attributes that match, a
valid signature, a signing certificate valid at the moment with nonRepudiation, and a
chain to a trust anchor, which the revocation hook then sees. `cms.decrypt_then_verify`
calls it after decrypting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from iplosctl.payload.cert_checks import check_chain, check_validity, describe, has_key_usage
from iplosctl.payload.cms_errors import CmsError, Failure
from iplosctl.payload.cms_writer import asn1_certificate

# SHA-1 and MD5 are refused on purpose: NHN's profile is SHA-256 (DOMAIN.md §5.4).
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

#: checks a verified chain (leaf first, anchor last) for revocation; raises CmsError to refuse
RevocationHook = Callable[[Sequence[x509.Certificate]], None]


def ski(cert: x509.Certificate) -> bytes | None:
    """The certificate's subject key identifier: how a CMS recipient or signer may name it."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def identifier_is(sid: asn1_core.Choice, cert: x509.Certificate) -> bool:
    """Whether a CMS SignerIdentifier/RecipientIdentifier names `cert`."""
    if sid.name == "issuer_and_serial_number":
        ias = sid.chosen
        return bool(
            ias["serial_number"].native == cert.serial_number
            and ias["issuer"] == asn1_certificate(cert).issuer
        )
    if sid.name == "subject_key_identifier":
        return bool(sid.chosen.native == ski(cert))
    return False


def verify_signed_data(
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
    signer = next((c for c in sender_certs if identifier_is(sid, c)), None)
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
