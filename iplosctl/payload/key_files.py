"""key_files: certificates and private keys from the files a manifest names.

PEM, DER or PKCS#12 (.p12/.pfx); a combined cert+key PEM serves as both. What it
settles is the operator's side of key files: which file holds what, whether a
passphrase is needed, wrong or superfluous (a passphrase given for an unencrypted key
is ignored, so rotating to an unprotected key needs no config change), and a message
that names the fix for each. Warnings about where a key lives (in git, readable by
all, unencrypted) are `manifest.keyfiles`'; using the keys is `cms`'.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from iplosctl.payload.cms_errors import CmsError, Failure
from iplosctl.payload.cms_writer import PrivateKey

_PKCS12_SUFFIXES = frozenset({".p12", ".pfx"})
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----\s*", re.DOTALL)
_PEM_KEY_LABELS = frozenset(
    {b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
)


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
