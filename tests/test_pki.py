from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
from pathlib import Path

import pytest
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


def test_keys_and_the_state_folder_are_private_from_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: keys were written 0644 and chmodded afterwards, the state folder was 0755.
    With every chmod a no-op, what is left is the mode each file and folder was created with."""
    from iplosctl.receipts import _write_quarantine
    from iplosctl.sandbox.embedded import prepare_state_dir
    from iplosctl.sandbox.pki import generate_pki

    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    old = os.umask(0o022)
    try:
        state = tmp_path / "work" / ".iplosctl"
        pki = generate_pki(prepare_state_dir(state / "sandbox") / "pki")
        quarantine = state / "quarantine" / "demo-2023"
        _write_quarantine(quarantine, "demo-2023", _quarantined(), dt.datetime.now(dt.UTC))
    finally:
        os.umask(old)
    for folder in (tmp_path / "work", state, state / "sandbox", pki.directory, quarantine):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for stem in ("ca", *LEAVES):
        assert stat.S_IMODE(pki.key(stem).stat().st_mode) == 0o600, stem
    for path in quarantine.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _quarantined():  # type: ignore[no-untyped-def]
    from iplosctl.plugins import IncomingMessage
    from iplosctl.receipts import MALFORMED, _Quarantine

    message = IncomingMessage("1_async", "m-1", "m-1", "APPREC", b"body", {})
    return _Quarantine(message, MALFORMED, "not an AppRec")
