from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509

from iplosctl.sandbox.pki import LEAVES


def test_sandbox_pki_key_usages_and_openssl_chain(cli, tmp_path: Path) -> None:
    result = cli("sandbox", "pki", "--out", tmp_path / "pki")
    assert result.code == 0, result.all
    for stem, (_, role) in LEAVES.items():
        pem = tmp_path / "pki" / f"{stem}.pem"
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if role == "signing":
            assert usage.content_commitment and usage.digital_signature  # nonRepudiation
            assert not usage.key_encipherment
        else:
            assert usage.key_encipherment and not usage.content_commitment
        proc = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / "pki" / "ca.pem"), str(pem)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (tmp_path / "pki" / f"{stem}.key").stat().st_mode & 0o077 == 0
