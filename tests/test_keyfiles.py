"""validate warns about private keys a manifest names: in git, readable by all, unencrypted."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from iplosctl.sandbox.pki import generate_pki
from tests.conftest import DEMO_EXPORT, REPO
from tests.test_apply import manifest_text


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A municipality's repository: git, a manifest, its export, keys 0600 and untracked."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "exports").mkdir()
    shutil.copy(DEMO_EXPORT, tmp_path / "exports" / "kommune-2023.xml")
    generate_pki(tmp_path / "pki")
    return tmp_path


def _manifest(repo: Path, environment: str) -> Path:
    path = repo / "manifests" / "kommune-2023.yaml"
    text = manifest_text("kpr-test-q", 7_100_001)
    path.write_text(text.replace("environment: test", f"environment: {environment}"))
    return path


def _warnings(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [ln for ln in result.err.splitlines() if ln.startswith("warning: ")]


def test_a_private_key_that_is_safe_gets_no_warning(cli, repo: Path) -> None:
    result = cli("validate", _manifest(repo, "test"))
    assert result.code == 0, result.all
    assert _warnings(result) == []


def test_tracked_world_readable_and_unencrypted_keys_are_warned_about(cli, repo: Path) -> None:
    manifest = _manifest(repo, "production")
    key = repo / "pki" / "municipality-signing.key"
    subprocess.run(["git", "-C", str(repo), "add", "pki/municipality-signing.key"], check=True)
    os.chmod(key, 0o644)
    # (the sandbox CA has no CRL: revocation is waived here, it is not what this tests)
    result = cli("validate", "--offline-revocation", manifest)
    assert result.code == 0, result.all  # warnings, not errors
    warned = _warnings(result)
    signing = [w for w in warned if "spec.certificates.signing.key" in w]
    encryption = [w for w in warned if "spec.certificates.encryption.key" in w]
    assert len(signing) == 3 and len(encryption) == 1, warned
    assert all(w.startswith(f"warning: {manifest}:") for w in warned)
    assert any("municipality-signing.key is tracked by git" in w for w in signing)
    assert any("readable by every user of this machine: chmod 600 it" in w for w in signing)
    assert any("has no passphrase, in production" in w for w in signing)
    assert "has no passphrase, in production" in encryption[0]
    assert "BEGIN" not in result.all  # never the key itself
    # --no-files (pre-commit, PR runners) reads no key file at all
    assert not [
        w
        for w in _warnings(cli("validate", "--offline-revocation", "--no-files", manifest))
        if "private key" in w
    ]


@pytest.mark.parametrize("environment", ["qa", "test"])
def test_an_encrypted_key_is_fine_and_test_keys_may_be_unencrypted(
    cli, repo: Path, monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    manifest = _manifest(repo, environment)
    for stem in ("municipality-signing", "municipality-encryption"):
        path = repo / "pki" / f"{stem}.key"
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"example passphrase"),
            )
        )
    manifest.write_text(
        manifest.read_text().replace(
            "key: ../pki/municipality-signing.key}",
            "key: ../pki/municipality-signing.key, passphraseSecret: kommune-signing}",
        )
    )
    monkeypatch.setenv("IPLOSCTL_SECRET_KOMMUNE_SIGNING", "example passphrase")
    result = cli("validate", "--offline-revocation", manifest)
    assert result.code == 0, result.all
    assert not [w for w in _warnings(result) if "private key" in w], result.all


EXAMPLE = REPO / "examples" / "fjordvik"
EXAMPLE_PASSPHRASE = "fjordvik-example-only"  # published in certs/README.md: example keys only


def test_the_example_commits_only_encrypted_keys_marked_example_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12: the example committed unencrypted private keys beside its manifest."""
    from iplosctl import endpoint
    from iplosctl.errors import IplosctlError
    from iplosctl.manifest import load_manifest
    from iplosctl.payload.cms import load_private_key

    keys = sorted(EXAMPLE.rglob("*.key"))
    assert [k.name for k in keys] == [
        "municipality-encryption.example-only.key",
        "municipality-signing.example-only.key",
    ]
    for key in keys:
        assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
        with pytest.raises(IplosctlError):
            load_private_key(key, None)
    assert f"`{EXAMPLE_PASSPHRASE}`" in (EXAMPLE / "certs" / "README.md").read_text()
    # the manifest names the passphrase by secret; with the secrets set, the keys load
    # and belong to the example's certificates
    monkeypatch.setenv("IPLOSCTL_SECRET_FJORDVIK_SIGNING", EXAMPLE_PASSPHRASE)
    monkeypatch.setenv("IPLOSCTL_SECRET_FJORDVIK_ENCRYPTION", EXAMPLE_PASSPHRASE)
    loaded = endpoint.load_keys(load_manifest(EXAMPLE / "manifests" / "fjordvik-2023.yaml"))
    assert loaded.signing_key.public_key() == loaded.signing_cert.public_key()
    assert loaded.encryption_key.public_key() == loaded.encryption_cert.public_key()


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        ("certs/signing.key", True),
        ("certs/virksomhet.p12", True),
        ("certs/virksomhet.pfx", True),
        ("certs/tls-key.pem", True),
        ("keys/signing.key", True),
        ("certs/municipality-signing.example-only.key", False),
        ("certs/municipality-signing.pem", False),
    ],
)
def test_the_example_gitignore_ignores_key_files(name: str, ignored: bool) -> None:
    proc = subprocess.run(
        ["git", "-C", str(EXAMPLE), "check-ignore", "--no-index", "-q", name],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == (0 if ignored else 1), proc.stderr
