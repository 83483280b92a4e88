"""A throw-away PKI for rehearsals: a test CA, and signing and encryption
certificates for a municipality and for the register, with the key usages
NHN requires (signing: nonRepudiation; encryption: keyEncipherment;
DOMAIN.md §5.4). Nothing here is fit for production.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iplosctl.atomic import write_atomic
from iplosctl.private_files import private_dir

#: file stem → (common name, role)
LEAVES: dict[str, tuple[str, str]] = {
    "municipality-signing": ("Demo kommune signering (TEST)", "signing"),
    "municipality-encryption": ("Demo kommune kryptering (TEST)", "encryption"),
    "register-signing": ("KPR sandbox signering (TEST)", "signing"),
    "register-encryption": ("KPR sandbox kryptering (TEST)", "encryption"),
}


@dataclass(frozen=True)
class PkiFiles:
    """Where `generate_pki` wrote things: `ca.pem`, and `<stem>.pem` / `<stem>.key` per leaf."""

    directory: Path

    def certificate(self, stem: str) -> Path:
        return self.directory / f"{stem}.pem"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iplosctl sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """0600 from creation (a temp file made 0600, renamed over any old key): written 0644
    and chmodded afterwards, another user could open it in between (issue 12)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(path, data, mode=0o600)


def generate_pki(directory: Path, *, days: int = 825, now: dt.datetime | None = None) -> PkiFiles:
    """Create the CA and the four leaf certificates in `directory` (overwriting); a folder
    this creates is 0700, keys are 0600."""
    private_dir(directory)
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=1)
    end = start + dt.timedelta(days=days)
    ca_key = _key()
    ca_name = _name("iplosctl sandbox CA (TEST)")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    files = PkiFiles(directory)
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(directory / "ca.key", ca_key)
    for stem, (cn, role) in LEAVES.items():
        key = _key()
        signing = role == "signing"
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=signing,
                    content_commitment=signing,
                    key_encipherment=not signing,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        files.certificate(stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(files.key(stem), key)
    return files
