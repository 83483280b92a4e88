"""CMS sign-then-encrypt: interop with `openssl cms` both ways, and every refusal.

Certificates come from the sandbox PKI generated at a fixed instant, and every check
(ours and openssl's `-attime`) runs at that instant, so no test depends on the clock.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID

from iplosctl.errors import PayloadError
from iplosctl.payload import cms, cms_writer
from iplosctl.payload.cms import CmsError, Failure
from iplosctl.sandbox.pki import PkiFiles, generate_pki

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
CONTENT = b'<?xml version="1.0"?>\r\n<a>\n  <b>CRLF\r\nLF\nCR\r</b>\n</a>\n'


@dataclass(frozen=True)
class Party:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class Pki:
    files: PkiFiles
    ca: x509.Certificate
    ca_key: rsa.RSAPrivateKey
    muni_sign: Party
    muni_enc: Party
    reg_sign: Party
    reg_enc: Party


def _party(files: PkiFiles, stem: str) -> Party:
    key = cms.load_private_key(files.key(stem), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return Party(
        cms.load_certificate(files.certificate(stem)), key, files.certificate(stem), files.key(stem)
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    files = generate_pki(tmp_path_factory.mktemp("pki"), now=NOW)
    ca_key = serialization.load_pem_private_key((files.directory / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    return Pki(
        files,
        cms.load_certificate(files.ca),
        ca_key,
        _party(files, "municipality-signing"),
        _party(files, "municipality-encryption"),
        _party(files, "register-signing"),
        _party(files, "register-encryption"),
    )


def _leaf(
    pki: Pki,
    *,
    cn: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    key_usage: dict[str, bool] | None,
    key: cms.PrivateKey | None = None,
) -> tuple[x509.Certificate, cms.PrivateKey]:
    """A leaf from the sandbox CA with the given validity and key usages (None: no extension).

    The key is a new RSA key unless one is given.
    """
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(pki.ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if key_usage is not None:
        usages = dict.fromkeys(
            (
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
                "encipher_only",
                "decipher_only",
            ),
            False,
        )
        usages.update(key_usage)
        builder = builder.add_extension(x509.KeyUsage(**usages), critical=True)
    return builder.sign(pki.ca_key, hashes.SHA256()), key


SIGNING = {"digital_signature": True, "content_commitment": True}


def _openssl(*args: str | Path, data: bytes = b"") -> bytes:
    proc = subprocess.run(
        ["openssl", *map(str, args)], input=data, capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def _open(pki: Pki, blob: bytes, **overrides: object) -> bytes:
    kwargs: dict[str, object] = {
        "own_cert": pki.reg_enc.cert,
        "own_key": pki.reg_enc.key,
        "sender_certs": [pki.muni_sign.cert],
        "trust_anchors": [pki.ca],
        "now": NOW,
    }
    kwargs.update(overrides)
    return cms.decrypt_then_verify(blob, **kwargs)  # type: ignore[arg-type]


def _send(pki: Pki, content: bytes = CONTENT, signer: Party | None = None) -> bytes:
    signer = signer or pki.muni_sign
    return cms.sign_then_encrypt(
        content, signer_cert=signer.cert, signer_key=signer.key, recipient_cert=pki.reg_enc.cert
    )


def _refusal(reason: Failure, call: object, *args: object, **kwargs: object) -> str:
    assert callable(call)
    with pytest.raises(CmsError) as info:
        call(*args, **kwargs)
    assert info.value.reason is reason, info.value.message
    assert isinstance(info.value, PayloadError)
    assert "\n" not in info.value.message
    return info.value.message


# --- interop --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        CONTENT,
        b"\n" * 3 + b"\r\n\r\n",
        bytes(range(256)) * 40,
        bytes(range(256)) * 65_537,  # every DER length in four bytes: a 20 MB part's case
    ],
    ids=["xml-mixed-eol", "only-newlines", "all-bytes", "over-16-MiB"],
)
def test_openssl_opens_and_verifies_what_we_send(pki: Pki, tmp_path: Path, content: bytes) -> None:
    blob = cms.sign_then_encrypt(
        content,
        signer_cert=pki.muni_sign.cert,
        signer_key=pki.muni_sign.key,
        recipient_cert=pki.reg_enc.cert,
        now=NOW,
    )
    signed = _openssl(
        "cms", "-decrypt", "-inform", "DER",
        "-recip", pki.reg_enc.cert_path, "-inkey", pki.reg_enc.key_path,
        data=blob,
    )  # fmt: skip
    out = _openssl(
        "cms", "-verify", "-inform", "DER", "-binary", "-CAfile", pki.files.ca,
        "-purpose", "any", "-attime", str(int(NOW.timestamp())),
        data=signed,
    )  # fmt: skip
    assert out == content


def test_openssl_opens_a_compressed_msghead_that_still_validates(pki: Pki) -> None:
    """A large part goes as a compressed RefDoc (issue 13, item 10): openssl decrypts and
    verifies it, the MsgHead inside validates against the official XSD, and it reads back
    to the payload byte for byte."""
    from iplosctl.payload.compression import COMPRESSION_CODE, gzip_bytes
    from iplosctl.payload.msghead import (
        build_msghead,
        load_schemas,
        parse_msghead,
        validate_msghead,
    )
    from tests.reference import XSD_DIR

    repo = Path(__file__).resolve().parents[1]
    payload = (repo / "examples" / "exports" / "demo-2023.xml").read_bytes()
    msghead = build_msghead(
        msg_type="KPR_IPL",
        msg_type_dn="IPLOS-rapportering til KPR",
        msg_id="3f0b1c9e-8a55-5c0e-9d6f-0a1b2c3d4e5f",
        gen_date=NOW,
        sender_org_name="Demo kommune",
        sender_org_number="310000019",
        sender_her_id="900100",
        sender_service_name="Saksbehandling",
        sender_service_her_id="900101",
        receiver_name="KPR",
        receiver_her_id="8133973",
        payload=gzip_bytes(payload),
        compression=COMPRESSION_CODE,
    )
    blob = _send(pki, msghead)
    signed = _openssl(
        "cms", "-decrypt", "-inform", "DER",
        "-recip", pki.reg_enc.cert_path, "-inkey", pki.reg_enc.key_path,
        data=blob,
    )  # fmt: skip
    out = _openssl(
        "cms", "-verify", "-inform", "DER", "-binary", "-CAfile", pki.files.ca,
        "-purpose", "any", "-attime", str(int(NOW.timestamp())),
        data=signed,
    )  # fmt: skip
    assert out == msghead
    validate_msghead(out, load_schemas(XSD_DIR, [repo / "iplosctl/formats/iplos-export-v1.xsd"]))
    assert parse_msghead(out).payload == payload


def test_envelope_matches_the_nhn_profile(pki: Pki) -> None:
    """AES-256-CBC, RSA PKCS#1 v1.5 key transport, IssuerAndSerialNumber, SHA-256."""
    env = asn1_cms.ContentInfo.load(_send(pki))["content"]
    algorithm = env["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"]
    assert algorithm.dotted == "2.16.840.1.101.3.4.1.42"
    (recipient,) = list(env["recipient_infos"])
    assert recipient.chosen["rid"].name == "issuer_and_serial_number"
    assert recipient.chosen["rid"].chosen["serial_number"].native == pki.reg_enc.cert.serial_number
    assert recipient.chosen["key_encryption_algorithm"]["algorithm"].native == "rsaes_pkcs1v15"
    signed = pkcs7.pkcs7_decrypt_der(_send(pki), pki.reg_enc.cert, pki.reg_enc.key, [])
    sd = asn1_cms.ContentInfo.load(signed)["content"]
    (signer,) = list(sd["signer_infos"])
    assert signer["digest_algorithm"]["algorithm"].native == "sha256"
    assert signer["sid"].name == "issuer_and_serial_number"
    assert sd["encap_content_info"]["content"].native == CONTENT  # attached, bytes intact


def _without_randomness(signed_and_enveloped: bytes, pki: Pki) -> tuple[object, object]:
    """Envelope and SignedData as native values, minus what differs between two sends."""
    envelope = asn1_cms.ContentInfo.load(signed_and_enveloped)["content"].native
    recipient = envelope["recipient_infos"][0]
    recipient["encrypted_key"] = len(recipient["encrypted_key"])
    encrypted = envelope["encrypted_content_info"]
    encrypted["content_encryption_algorithm"]["parameters"] = None  # the IV
    encrypted["encrypted_content"] = len(encrypted["encrypted_content"])
    plain = pkcs7.pkcs7_decrypt_der(signed_and_enveloped, pki.reg_enc.cert, pki.reg_enc.key, [])
    signed = asn1_cms.ContentInfo.load(plain)["content"].native
    signer = signed["signer_infos"][0]
    signer["signed_attrs"] = [a for a in signer["signed_attrs"] if a["type"] != "signing_time"]
    signer["signature"] = len(signer["signature"])
    return envelope, signed


def test_layout_is_what_cryptographys_builders_wrote(pki: Pki) -> None:
    """cms_writer assembles by hand what cryptography's PKCS7 builders produced before."""
    content = bytes(range(256)) * 300
    reference = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(
            pkcs7.PKCS7SignatureBuilder()
            .set_data(content)
            .add_signer(pki.muni_sign.cert, pki.muni_sign.key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
        .add_recipient(pki.reg_enc.cert)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    ours = _send(pki, content)
    assert len(ours) == len(reference)
    assert _without_randomness(ours, pki) == _without_randomness(reference, pki)


def test_der_headers_at_every_length_boundary() -> None:
    for length in (0, 1, 127, 128, 255, 256, 65_535, 65_536, 2**24 - 1, 2**24):
        encoded = asn1_core.OctetString(bytes(length)).dump()
        assert cms_writer._header(0x04, length) == encoded[: len(encoded) - length]


def test_openssl_verifies_an_ecdsa_signature(pki: Pki) -> None:
    """An EC signing key has no fixed signature length: the digest comes first, same bytes."""
    cert, key = _leaf(
        pki,
        cn="EC signer",
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=9),
        key_usage=SIGNING,
        key=ec.generate_private_key(ec.SECP256R1()),
    )
    blob = cms.sign_then_encrypt(
        CONTENT, signer_cert=cert, signer_key=key, recipient_cert=pki.reg_enc.cert, now=NOW
    )
    signed = _openssl(
        "cms", "-decrypt", "-inform", "DER",
        "-recip", pki.reg_enc.cert_path, "-inkey", pki.reg_enc.key_path,
        data=blob,
    )  # fmt: skip
    out = _openssl(
        "cms", "-verify", "-inform", "DER", "-binary", "-CAfile", pki.files.ca,
        "-purpose", "any", "-attime", str(int(NOW.timestamp())),
        data=signed,
    )  # fmt: skip
    assert out == CONTENT
    assert _open(pki, blob, sender_certs=[cert]) == CONTENT


@pytest.mark.parametrize(
    "sign_options",
    [["-md", "sha256"], ["-md", "sha512", "-keyopt", "rsa_padding_mode:pss"]],
    ids=["pkcs1v15-sha256", "pss-sha512"],
)
def test_we_open_what_openssl_sends(pki: Pki, sign_options: list[str]) -> None:
    signed = _openssl(
        "cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
        "-signer", pki.muni_sign.cert_path, "-inkey", pki.muni_sign.key_path, *sign_options,
        data=CONTENT,
    )  # fmt: skip
    blob = _openssl(
        "cms", "-encrypt", "-binary", "-aes256", "-outform", "DER", pki.reg_enc.cert_path,
        data=signed,
    )  # fmt: skip
    assert _open(pki, blob) == CONTENT


def test_round_trip_keeps_every_byte_of_a_large_payload(pki: Pki) -> None:
    content = (b"<Recipient>\r\n  <LocalId>r-1</LocalId>\n</Recipient>\r" * 40_000)[:1_500_000]
    assert _open(pki, _send(pki, content)) == content


# --- decryption refusals --------------------------------------------------------------------


def test_message_for_someone_else_is_not_for_us(pki: Pki) -> None:
    message = _refusal(
        Failure.NOT_FOR_US,
        _open,
        pki,
        _send(pki),
        own_cert=pki.muni_enc.cert,
        own_key=pki.muni_enc.key,
    )
    assert "Demo kommune kryptering (TEST)" in message


def test_wrong_private_key_for_our_certificate(pki: Pki) -> None:
    _refusal(Failure.WRONG_KEY, _open, pki, _send(pki), own_key=pki.muni_enc.key)


def test_damaged_ciphertext_is_refused(pki: Pki) -> None:
    blob = bytearray(_send(pki))
    blob[-20] ^= 0x01  # inside the encrypted content, last CBC blocks (padding)
    with pytest.raises(PayloadError):
        _open(pki, bytes(blob))


def test_garbage_is_malformed(pki: Pki) -> None:
    _refusal(Failure.MALFORMED, _open, pki, b"<MsgHead>not cms</MsgHead>")


def test_encrypted_but_unsigned_is_malformed(pki: Pki) -> None:
    blob = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(CONTENT)
        .add_recipient(pki.reg_enc.cert)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    _refusal(Failure.MALFORMED, _open, pki, blob)


def test_triple_des_is_unsupported(pki: Pki) -> None:
    signed = _openssl(
        "cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
        "-signer", pki.muni_sign.cert_path, "-inkey", pki.muni_sign.key_path,
        data=CONTENT,
    )  # fmt: skip
    blob = _openssl(
        "cms", "-encrypt", "-binary", "-des3", "-outform", "DER", pki.reg_enc.cert_path,
        data=signed,
    )  # fmt: skip
    assert "AES-256-CBC" in _refusal(Failure.UNSUPPORTED, _open, pki, blob)


# --- signature refusals ---------------------------------------------------------------------


def _reencrypt(pki: Pki, signed: bytes) -> bytes:
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(signed)
        .add_recipient(pki.reg_enc.cert)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def test_flipped_content_byte_is_a_bad_signature(pki: Pki) -> None:
    signed = pkcs7.pkcs7_decrypt_der(_send(pki), pki.reg_enc.cert, pki.reg_enc.key, [])
    at = signed.index(b"CRLF")
    tampered = signed[:at] + b"X" + signed[at + 1 :]
    assert _open(pki, _reencrypt(pki, signed)) == CONTENT  # the re-encryption itself is fine
    _refusal(Failure.BAD_SIGNATURE, _open, pki, _reencrypt(pki, tampered))


def test_flipped_signature_byte_is_a_bad_signature(pki: Pki) -> None:
    signed = pkcs7.pkcs7_decrypt_der(_send(pki), pki.reg_enc.cert, pki.reg_enc.key, [])
    info = asn1_cms.ContentInfo.load(signed)
    signer = info["content"]["signer_infos"][0]
    signature = bytearray(signer["signature"].native)
    signature[10] ^= 0x40
    signer["signature"] = bytes(signature)
    _refusal(Failure.BAD_SIGNATURE, _open, pki, _reencrypt(pki, info.dump(force=True)))


def test_signer_not_among_the_senders_certificates(pki: Pki) -> None:
    message = _refusal(
        Failure.UNKNOWN_SIGNER, _open, pki, _send(pki), sender_certs=[pki.reg_sign.cert]
    )
    assert f"{pki.muni_sign.cert.serial_number:x}" in message


def test_signer_from_another_ca_is_untrusted(pki: Pki, tmp_path: Path) -> None:
    other = generate_pki(tmp_path / "other", now=NOW)
    _refusal(
        Failure.UNTRUSTED,
        _open,
        pki,
        _send(pki),
        trust_anchors=[cms.load_certificate(other.ca)],
    )


def test_expired_sender_certificate(pki: Pki) -> None:
    cert, key = _leaf(
        pki,
        cn="Old kommune signering",
        not_before=dt.datetime(2019, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        key_usage=SIGNING,
    )
    old = Party(cert, key, Path(), Path())
    message = _refusal(Failure.EXPIRED, _open, pki, _send(pki, signer=old), sender_certs=[cert])
    assert "2020-01-01" in message and "Old kommune signering" in message


def test_sender_certificate_without_non_repudiation(pki: Pki) -> None:
    message = _refusal(
        Failure.KEY_USAGE,
        _open,
        pki,
        _send(pki, signer=pki.muni_enc),
        sender_certs=[pki.muni_enc.cert],
    )
    assert "nonRepudiation" in message


# --- certificate checks before sending ------------------------------------------------------


def test_sandbox_certificates_pass_their_checks(pki: Pki) -> None:
    cms.check_signing_certificate(pki.muni_sign.cert, NOW)
    cms.check_encryption_certificate(pki.reg_enc.cert, NOW)


def test_encryption_certificate_cannot_sign(pki: Pki) -> None:
    message = _refusal(Failure.KEY_USAGE, cms.check_signing_certificate, pki.muni_enc.cert, NOW)
    assert "'Demo kommune kryptering (TEST)'" in message and "nonRepudiation" in message
    _refusal(
        Failure.KEY_USAGE,
        cms.sign_then_encrypt,
        CONTENT,
        signer_cert=pki.muni_enc.cert,
        signer_key=pki.muni_enc.key,
        recipient_cert=pki.reg_enc.cert,
        now=NOW,
    )


def test_signing_certificate_cannot_encrypt(pki: Pki) -> None:
    message = _refusal(Failure.KEY_USAGE, cms.check_encryption_certificate, pki.reg_sign.cert, NOW)
    assert "keyEncipherment" in message


def test_certificate_without_key_usage_extension(pki: Pki) -> None:
    cert, _ = _leaf(
        pki, cn="No usage", not_before=NOW, not_after=NOW + dt.timedelta(days=9), key_usage=None
    )
    _refusal(Failure.KEY_USAGE, cms.check_signing_certificate, cert, NOW)
    _refusal(Failure.KEY_USAGE, cms.check_encryption_certificate, cert, NOW)


def test_encryption_certificate_must_hold_an_rsa_key(pki: Pki) -> None:
    cert, _key = _leaf(
        pki,
        cn="EC receiver",
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=9),
        key_usage={"key_encipherment": True, "key_agreement": True},
        key=ec.generate_private_key(ec.SECP256R1()),
    )
    message = _refusal(Failure.UNSUPPORTED, cms.check_encryption_certificate, cert, NOW)
    assert "'EC receiver'" in message and "RSA only" in message
    for now in (NOW, None):
        _refusal(
            Failure.UNSUPPORTED,
            cms.sign_then_encrypt,
            CONTENT,
            signer_cert=pki.muni_sign.cert,
            signer_key=pki.muni_sign.key,
            recipient_cert=cert,
            now=now,
        )


def test_validity_window_is_checked_against_now(pki: Pki) -> None:
    cert = pki.muni_sign.cert
    later = cert.not_valid_after_utc + dt.timedelta(seconds=1)
    earlier = cert.not_valid_before_utc - dt.timedelta(seconds=1)
    _refusal(Failure.EXPIRED, cms.check_signing_certificate, cert, later)
    _refusal(Failure.NOT_YET_VALID, cms.check_signing_certificate, cert, earlier)
    cms.check_signing_certificate(cert, cert.not_valid_after_utc)  # last valid instant
    _refusal(Failure.EXPIRED, cms.check_encryption_certificate, pki.reg_enc.cert, later)


def test_signing_key_must_match_certificate(pki: Pki) -> None:
    _refusal(
        Failure.KEY_MISMATCH,
        cms.sign_then_encrypt,
        CONTENT,
        signer_cert=pki.muni_sign.cert,
        signer_key=pki.reg_sign.key,
        recipient_cert=pki.reg_enc.cert,
    )


# --- loading keys and certificates ----------------------------------------------------------


def test_pem_der_and_combined_files(pki: Pki, tmp_path: Path) -> None:
    der = tmp_path / "cert.cer"
    der.write_bytes(pki.muni_sign.cert.public_bytes(serialization.Encoding.DER))
    assert cms.load_certificate(der) == pki.muni_sign.cert
    combined = tmp_path / "both.pem"
    combined.write_bytes(pki.muni_sign.key_path.read_bytes() + pki.muni_sign.cert_path.read_bytes())
    assert cms.load_certificate(combined) == pki.muni_sign.cert
    key = cms.load_private_key(combined, None)
    assert key.private_numbers() == pki.muni_sign.key.private_numbers()  # type: ignore[union-attr]


def test_encrypted_pem_key(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "enc.key"
    path.write_bytes(
        pki.muni_sign.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"correct horse"),
        )
    )
    loaded = cms.load_private_key(path, "correct horse")
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert "correct horse" not in _refusal(
        Failure.WRONG_PASSPHRASE, cms.load_private_key, path, "battery staple"
    )
    _refusal(Failure.WRONG_PASSPHRASE, cms.load_private_key, path, None)
    # A passphrase for an unprotected key is ignored.
    assert isinstance(cms.load_private_key(pki.muni_sign.key_path, "unused"), rsa.RSAPrivateKey)


@pytest.mark.parametrize("suffix", [".p12", ".pfx", ".bin"])
def test_pkcs12_serves_as_certificate_and_key(pki: Pki, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"virksomhet{suffix}"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"demo",
            pki.muni_sign.key,
            pki.muni_sign.cert,
            [pki.ca],
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    assert cms.load_certificate(path, "s3cret") == pki.muni_sign.cert
    key = cms.load_private_key(path, "s3cret")
    assert isinstance(key, rsa.RSAPrivateKey)
    blob = cms.sign_then_encrypt(
        CONTENT,
        signer_cert=cms.load_certificate(path, "s3cret"),
        signer_key=key,
        recipient_cert=pki.reg_enc.cert,
    )
    assert _open(pki, blob) == CONTENT
    message = _refusal(Failure.WRONG_PASSPHRASE, cms.load_private_key, path, "wrong")
    assert "wrong passphrase" in message and "s3cret" not in message
    _refusal(Failure.WRONG_PASSPHRASE, cms.load_private_key, path, None)
    _refusal(Failure.WRONG_PASSPHRASE, cms.load_certificate, path, "wrong")


def test_wrong_files(pki: Pki, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    _refusal(Failure.WRONG_FORMAT, cms.load_certificate, text)
    _refusal(Failure.WRONG_FORMAT, cms.load_private_key, text, None)
    _refusal(Failure.WRONG_FORMAT, cms.load_private_key, pki.muni_sign.cert_path, None)
    _refusal(Failure.WRONG_FORMAT, cms.load_certificate, pki.muni_sign.key_path)
    fake_p12 = tmp_path / "fake.p12"
    fake_p12.write_bytes(b"\x30\x03\x02\x01\x03")
    _refusal(Failure.WRONG_FORMAT, cms.load_private_key, fake_p12, "x")
    _refusal(Failure.UNREADABLE, cms.load_certificate, tmp_path / "missing.pem")
