"""The EDI channel refuses weak TLS and a certificate for another host (issue 14).

Real servers on loopback, misconfigured on purpose (tests/mailservers.py): aiosmtpd and
dovecot offering only TLS 1.0/1.1, and both presenting a certificate from the trusted
test CA but for another host name. Each test first shows the server really is what it
claims to be (it speaks TLS 1.1 to a client that allows it; its certificate is accepted
once the name check is off), so the refusal seen comes from iplosctl's rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from tests.mailservers import WRONG_NAME, mail_servers, negotiated_tls_version
from tests.test_transport_edi import Setup, _one_line_error, apply, edi_setup, manifest_text

pytestmark = pytest.mark.mail


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    yield from edi_setup(tmp_path, monkeypatch)


def test_the_old_tls_servers_really_speak_only_tls_1_1() -> None:
    with mail_servers(old_tls=True) as old:
        assert negotiated_tls_version(old.smtp_port, starttls="smtp") == "TLSv1.1"
        assert negotiated_tls_version(old.imaps_port) == "TLSv1.1"
        assert negotiated_tls_version(old.imap_port, starttls="imap") == "TLSv1.1"
    with mail_servers() as modern:  # and the ordinary ones do not
        assert negotiated_tls_version(modern.imaps_port) in ("TLSv1.2", "TLSv1.3")


def test_smtp_offering_only_tls_1_1_is_refused_in_one_line(cli, setup: Setup) -> None:
    with mail_servers(old_tls=True, tls=setup.servers.tls) as old:
        setup.manifest.write_text(manifest_text(old))
        line = _one_line_error(apply(cli, setup))
        assert f"SMTP server 127.0.0.1:{old.smtp_port} offers only TLSv1.1: refused" in line
        assert "requires TLS 1.2 or newer" in line
        assert old.knobs.delivered == [] and old.inbox_count("kpr") == 0


@pytest.mark.parametrize("imap", ["imaps", "imap"])
def test_imap_offering_only_tls_1_1_is_refused_and_nothing_moves(
    cli, setup: Setup, imap: str
) -> None:
    assert apply(cli, setup).code == 0  # sent through the good servers
    with mail_servers(old_tls=True, tls=setup.servers.tls) as old:
        setup.manifest.write_text(manifest_text(setup.servers, imap=imap, imap_servers=old))
        line = _one_line_error(cli("receipts", setup.manifest))
        port = old.imaps_port if imap == "imaps" else old.imap_port
        assert f"IMAP server 127.0.0.1:{port} offers only TLSv1.1: refused" in line
    assert [p.state for p in setup.parts()] == ["sent", "sent"]


def test_a_certificate_for_another_host_is_refused(cli, setup: Setup) -> None:
    with mail_servers(wrong_name=True, tls=setup.servers.tls) as other:
        setup.manifest.write_text(manifest_text(other))
        line = _one_line_error(apply(cli, setup))
        assert f"TLS with the SMTP server 127.0.0.1:{other.smtp_port} failed" in line
        assert "its certificate is not issued for '127.0.0.1'" in line
        assert other.knobs.delivered == []

        # the same certificate with the name check off is taken (sandbox only): the
        # refusal above was the host name, nothing else
        setup.manifest.write_text(manifest_text(other, verify_peer_name=False))
        sent = apply(cli, setup)
        assert sent.code == 0, sent.err
        assert "verifyPeerName: false turns off" in sent.err
        assert other.inbox_count("kpr") == 2


@pytest.mark.parametrize("imap", ["imaps", "imap"])
def test_an_imap_certificate_for_another_host_is_refused(cli, setup: Setup, imap: str) -> None:
    assert apply(cli, setup).code == 0
    with mail_servers(wrong_name=True, tls=setup.servers.tls) as other:
        setup.manifest.write_text(manifest_text(setup.servers, imap=imap, imap_servers=other))
        line = _one_line_error(cli("receipts", setup.manifest))
        assert "TLS with the IMAP server 127.0.0.1:" in line
        assert "its certificate is not issued for '127.0.0.1'" in line
    assert [p.state for p in setup.parts()] == ["sent", "sent"]


@pytest.mark.parametrize("environment", ["production", "qa"])
def test_turning_the_name_check_off_is_refused_outside_the_sandbox(
    cli, setup: Setup, environment: str
) -> None:
    text = manifest_text(setup.servers, environment=environment, verify_peer_name=False)
    setup.manifest.write_text(text)
    result = cli("validate", setup.manifest)
    assert result.code == 1
    assert f"tls.verifyPeerName: false is refused in the {environment} environment" in result.err
    assert setup.mails("kpr") == [] and WRONG_NAME not in result.err


def test_a_certificate_for_another_host_is_refused_in_the_test_environment(
    cli, setup: Setup
) -> None:
    """Outside the sandbox the host name is checked the same way (and cannot be turned
    off in production and qa, above)."""
    with mail_servers(wrong_name=True, tls=setup.servers.tls) as other:
        text = manifest_text(other, environment="test")
        setup.manifest.write_text(text)
        line = _one_line_error(apply(cli, setup))
        assert "its certificate is not issued for '127.0.0.1'" in line
        assert other.knobs.delivered == []
    lock = lf.load(setup.lockfile)
    assert lock is None or all(p.state != "sent" for a in lock.attempts for p in a.parts)
