"""The bytes of a sign-then-encrypt message, assembled so hashing and encrypting overlap.

`cms.sign_then_encrypt` checks the keys and then calls `signed_and_enveloped` here. The
result has the structure cryptography's PKCS7 builders produced before (test_cms.py
holds it to that, and `openssl cms` opens and verifies it): an EnvelopedData (AES-256-CBC,
RSA PKCS#1 v1.5 key transport, recipient by issuer and serial) around the DER of an
attached SignedData (SHA-256; signed attributes contentType, signingTime, messageDigest,
smimeCapabilities; the signer's certificate).

Why not the builders: they hash the content, then encrypt the SignedData, one after the
other. For a 20 MB part that is 0.065 s of SHA-256 and then 0.060 s of AES on this
machine, more than a third of what sending it costs. Both release the GIL, and the
SignedData is laid out as header + content + signer: with an RSA signature, whose length
is the key's, every length in the headers is known before the digest is. So the content
is hashed on one thread while the header and content are encrypted on this one, and only
the small signer part waits for the digest. The small structures are built and encoded
by asn1crypto; only the nested headers around the content are written here (`_header`).
An ECDSA signature's length varies, so with an EC signing key the digest comes first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeAlias

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: Keys we can sign with. Decryption needs RSA: cryptography only does RSA key transport.
PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_SIGNED_DATA: bytes = asn1_cms.ContentType("signed_data").dump()
_ENVELOPED_DATA: bytes = asn1_cms.ContentType("enveloped_data").dump()
_DATA: bytes = asn1_cms.ContentType("data").dump()
_VERSION_0: bytes = asn1_core.Integer(0).dump()
_VERSION_1: bytes = asn1_core.Integer(1).dump()
_DIGEST_ALGORITHMS: bytes = asn1_cms.DigestAlgorithms([{"algorithm": "sha256"}]).dump()
#: what cryptography's builder announced, strongest first
_CAPABILITIES = ("aes256_cbc", "aes192_cbc", "aes128_cbc")
_AES_BLOCK = 16


def signed_and_enveloped(
    content: bytes,
    *,
    signer_cert: x509.Certificate,
    signer_key: PrivateKey,
    recipient_cert: x509.Certificate,
    signing_time: dt.datetime,
) -> bytes:
    """DER EnvelopedData to `recipient_cert` around an attached SignedData over `content`.

    The caller has checked the keys (`cms.check_sending_keys`): the recipient's is RSA.
    """
    signer = _Signer(signer_cert, signer_key, signing_time)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cms-sha256") as hashing:
        digest = hashing.submit(_sha256, content)
        tail: bytes | None = None
        if signer.signature_length is None:  # ECDSA: the tail's length needs the signature
            tail = signer.tail(digest.result())
            tail_length = len(tail)
        else:
            tail_length = signer.tail_length()
        prefix = _signed_data_prefix(len(content), tail_length)
        key, iv = os.urandom(32), os.urandom(16)
        aes = Cipher(algorithms.AES256(key), modes.CBC(iv)).encryptor()
        encrypted = [aes.update(prefix), aes.update(content)]  # RSA: while hashing runs
        if tail is None:
            tail = signer.tail(digest.result())
    if len(tail) != tail_length:  # a bug, never bad input: refuse to send broken DER
        raise RuntimeError(f"CMS signer part is {len(tail)} bytes, laid out for {tail_length}")
    plain_length = len(prefix) + len(content) + len(tail)
    pad = _AES_BLOCK - plain_length % _AES_BLOCK  # PKCS#7: always 1 to 16 bytes
    encrypted += [aes.update(tail + bytes([pad]) * pad), aes.finalize()]
    envelope = _enveloped_data_prefix(recipient_cert, key, iv, plain_length + pad)
    return b"".join([envelope, *encrypted])


def _sha256(content: bytes) -> bytes:
    """hashlib releases the GIL for inputs this large, so this runs beside the AES."""
    return hashlib.sha256(content).digest()


class _Signer:
    """The SignedData's tail: the signer's certificate and its SignerInfo."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey, signing_time: dt.datetime) -> None:
        self._cert = asn1_certificate(cert)
        self._signing_time = signing_time.astimezone(dt.UTC).replace(microsecond=0)
        self._sign: Callable[[bytes], bytes]
        if isinstance(key, rsa.RSAPrivateKey):
            self.signature_length: int | None = (key.key_size + 7) // 8
            self._algorithm = "rsassa_pkcs1v15"  # rsaEncryption, as cryptography's builder wrote
            self._sign = lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            self.signature_length = None  # DER-encoded ECDSA: its length varies
            self._algorithm = "sha256_ecdsa"
            self._sign = lambda data: key.sign(data, ec.ECDSA(hashes.SHA256()))

    def tail_length(self) -> int:
        """The tail's length before the digest is known (RSA only: a fixed-size signature)."""
        assert self.signature_length is not None
        return len(self._tail(self._signed_attributes(bytes(32)), bytes(self.signature_length)))

    def tail(self, digest: bytes) -> bytes:
        attributes = self._signed_attributes(digest)
        # the signature covers the attributes encoded as a SET OF, not as the [0] field
        return self._tail(attributes, self._sign(attributes.dump()))

    def _signed_attributes(self, digest: bytes) -> asn1_cms.CMSAttributes:
        # every value is built afresh: asn1crypto will not put one object in two parents
        attributes = [
            asn1_cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            asn1_cms.CMSAttribute(
                {
                    "type": "signing_time",
                    "values": [asn1_cms.Time({"utc_time": self._signing_time})],
                }
            ),
            asn1_cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
            asn1_cms.CMSAttribute(
                {
                    "type": "smime_capabilities",
                    "values": [[{"capability_id": name} for name in _CAPABILITIES]],
                }
            ),
        ]
        # DER orders a SET OF by encoding (X.690 §11.6), shorter ones padded with zeros;
        # verifiers such as OpenSSL re-encode the attributes before checking the signature
        width = max(len(a.dump()) for a in attributes)
        return asn1_cms.CMSAttributes(
            sorted(attributes, key=lambda a: a.dump().ljust(width, b"\x00"))
        )

    def _tail(self, attributes: asn1_cms.CMSAttributes, signature: bytes) -> bytes:
        info = asn1_cms.SignerInfo(
            {
                "version": "v1",
                "sid": asn1_cms.SignerIdentifier(
                    name="issuer_and_serial_number", value=_issuer_and_serial(self._cert)
                ),
                "digest_algorithm": {"algorithm": "sha256"},
                "signed_attrs": attributes,
                # asn1crypto writes the NULL parameters RSA needs and ECDSA must not have
                "signature_algorithm": {"algorithm": self._algorithm},
                "signature": signature,
            }
        )
        certificates = asn1_cms.CertificateSet(
            [asn1_cms.CertificateChoices(name="certificate", value=self._cert)]
        ).retag("implicit", 0)
        tail: bytes = certificates.dump() + asn1_cms.SignerInfos([info]).dump()
        return tail


def _signed_data_prefix(content_length: int, tail_length: int) -> bytes:
    """ContentInfo(signedData) up to the content: every header, with the right lengths."""
    octets = _header(0x04, content_length)
    e_content = _header(0xA0, len(octets) + content_length)
    encap_length = len(_DATA) + len(e_content) + len(octets) + content_length
    encap = _header(0x30, encap_length) + _DATA + e_content + octets
    body_length = len(_VERSION_1) + len(_DIGEST_ALGORITHMS) + len(encap) + content_length
    body_length += tail_length
    return _content_info_header(_SIGNED_DATA, body_length) + _VERSION_1 + _DIGEST_ALGORITHMS + encap


def _enveloped_data_prefix(
    recipient: x509.Certificate, key: bytes, iv: bytes, ciphertext_length: int
) -> bytes:
    """ContentInfo(envelopedData) up to the ciphertext, which is its last field."""
    public_key = recipient.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)  # cms.check_sending_keys made sure
    recipient_info = asn1_cms.RecipientInfo(
        name="ktri",
        value=asn1_cms.KeyTransRecipientInfo(
            {
                "version": "v0",
                "rid": asn1_cms.RecipientIdentifier(
                    name="issuer_and_serial_number",
                    value=_issuer_and_serial(asn1_certificate(recipient)),
                ),
                "key_encryption_algorithm": {
                    "algorithm": "rsaes_pkcs1v15",
                    "parameters": asn1_core.Null(),
                },
                "encrypted_key": public_key.encrypt(key, padding.PKCS1v15()),
            }
        ),
    )
    recipients: bytes = asn1_cms.RecipientInfos([recipient_info]).dump()
    algorithm: bytes = asn1_cms.EncryptionAlgorithm(
        {"algorithm": "aes256_cbc", "parameters": iv}
    ).dump()
    ciphertext = _header(0x80, ciphertext_length)  # [0] IMPLICIT OCTET STRING
    content_info_length = len(_DATA) + len(algorithm) + len(ciphertext) + ciphertext_length
    encrypted_content_info = _header(0x30, content_info_length) + _DATA + algorithm + ciphertext
    body_length = len(_VERSION_0) + len(recipients) + len(encrypted_content_info)
    body_length += ciphertext_length
    return (
        _content_info_header(_ENVELOPED_DATA, body_length)
        + _VERSION_0
        + recipients
        + encrypted_content_info
    )


def _content_info_header(content_type: bytes, body_length: int) -> bytes:
    """ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT SEQUENCE { body } }, up to body."""
    inner = _header(0x30, body_length)
    explicit = _header(0xA0, len(inner) + body_length)
    outer = _header(0x30, len(content_type) + len(explicit) + len(inner) + body_length)
    return outer + content_type + explicit + inner


def asn1_certificate(cert: x509.Certificate) -> asn1_x509.Certificate:
    """The same certificate as asn1crypto sees it (cms.py matches signers with it too)."""
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _issuer_and_serial(cert: asn1_x509.Certificate) -> asn1_cms.IssuerAndSerialNumber:
    return asn1_cms.IssuerAndSerialNumber(
        {"issuer": cert.issuer, "serial_number": cert.serial_number}
    )


def _header(tag: int, length: int) -> bytes:
    """A DER tag and definite length (X.690 §8.1.3): short form below 128, else long."""
    if length < 0x80:
        return bytes((tag, length))
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big")
