"""The EDI channel against real servers on loopback (issue 14).

aiosmtpd (STARTTLS + AUTH) delivers into Maildirs that dovecot serves over IMAPS and
IMAP+STARTTLS (tests/mailservers.py); apply sends through the `edi` transport, the
sandbox register reads its own mailbox and answers by mail (iplosctl/sandbox/edi.py),
and receipts reads the municipality's mailbox.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import mailbox
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iplosctl import lockfile as lf
from iplosctl import plugins
from iplosctl.formats import EXPORT_V1_XSD
from iplosctl.payload.cms import load_certificate, load_private_key
from iplosctl.payload.msghead import load_schemas, parse_msghead, validate_msghead
from iplosctl.sandbox.edi import RegisterMailbox, answer_mailbox
from iplosctl.sandbox.pki import PkiFiles, generate_pki
from iplosctl.sandbox.register import SandboxRegister
from iplosctl_transport_edi import parse_mime
from tests.conftest import DEMO_EXPORT
from tests.mailservers import USERS, MailServers, mail_servers, maildir
from tests.manifest_text import CERTIFICATES, submission_head
from tests.reference import XSD_DIR

pytestmark = pytest.mark.mail
TODAY = "2024-01-05"
REGISTER_HER_ID = 900001  # the 2023 profile's sandbox receiver
KOMMUNE = "kommune@edi.test"
KPR = "kpr@edi.test"


def manifest_text(
    servers: MailServers,
    *,
    imap: str = "imaps",
    ca: Path | None = None,
    imap_servers: MailServers | None = None,
    environment: str = "sandbox",
    verify_peer_name: bool = True,
) -> str:
    """The sandbox manifest for `servers`; `imap_servers` reads receipts from another pair."""
    reader = imap_servers or servers
    port = reader.imaps_port if imap == "imaps" else reader.imap_port
    tls = f"caFile: {ca or servers.tls.ca_file}"
    if not verify_peer_name:
        tls += ", verifyPeerName: false"
    agreement = "" if environment == "sandbox" else "\n  payloadFormatAgreement: iplosctl-export-v1"
    return (
        submission_head(environment=environment, her_id=7100001, service_her_id=7100002)
        + f"""  testPersons: {{names: ["Test Testesen"]}}{agreement}
  endpoint:
    transport: edi
    address: {KOMMUNE}
    registerAddress: {KPR}
    smtp: smtp://127.0.0.1:{servers.smtp_port}
    imap: {imap}://127.0.0.1:{port}
    username: kommune
    credential: edi-test
    maxMessageSizeBytes: 200000
    timeoutSeconds: 10
    tls: {{{tls}}}
"""
        + CERTIFICATES
    )


class Setup:
    def __init__(self, root: Path, servers: MailServers) -> None:
        self.root, self.servers = root, servers
        self.manifest = root / "manifests" / "kommune-2023.yaml"
        self.lockfile = root / "manifests" / "kommune-2023.lock.yaml"
        self.pki = root / "pki"
        self.register = SandboxRegister.from_pki(
            PkiFiles(self.pki), her_id=REGISTER_HER_ID, state_dir=root / "register"
        )
        self.mailbox = RegisterMailbox(
            address=KPR,
            smtp=f"smtp://127.0.0.1:{servers.smtp_port}",
            imap=f"imap://127.0.0.1:{servers.imap_port}",  # the register reads via STARTTLS
            username="kpr",
            password=USERS["kpr"],
            ca_file=servers.tls.ca_file,
            timeout_seconds=10,
        )

    def answer(self) -> list[str]:
        return answer_mailbox(self.register, self.mailbox)

    def mails(self, user: str, folder: str = "") -> list[bytes]:
        path = maildir(self.servers.root, user)
        if folder:
            path = path / f".{folder}"
        if not path.exists():
            return []
        box = mailbox.Maildir(str(path), create=False)
        return [box.get_bytes(key) for key in sorted(box.keys())]

    def parts(self) -> list[lf.Part]:
        lock = lf.load(self.lockfile)
        assert lock is not None
        return lock.attempts[-1].parts


def edi_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """The `setup` fixture's body, for the other test_edi_* modules' own fixtures."""
    monkeypatch.setenv("IPLOSCTL_SECRET_EDI_TEST", USERS["kommune"])
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with mail_servers() as servers:
        s = Setup.__new__(Setup)
        (tmp_path / "manifests").mkdir()
        (tmp_path / "exports").mkdir()
        shutil.copy(DEMO_EXPORT, tmp_path / "exports" / "kommune-2023.xml")
        generate_pki(tmp_path / "pki")
        s.__init__(tmp_path, servers)  # type: ignore[misc]
        s.manifest.write_text(manifest_text(servers))
        yield s


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    yield from edi_setup(tmp_path, monkeypatch)


def apply(cli, s: Setup):  # type: ignore[no-untyped-def]
    return cli("apply", "--auto-approve", "--today", TODAY, s.manifest)


def openssl(*args: str, data: bytes) -> bytes:
    proc = subprocess.run(["openssl", "cms", *args], input=data, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


# --- the happy path -------------------------------------------------------------------------


def test_round_trip_apply_apprec_receipts_over_edi(cli, setup: Setup) -> None:
    result = apply(cli, setup)
    assert result.code == 0, result.err
    assert [p.state for p in setup.parts()] == ["sent", "sent"]
    assert len(setup.mails("kpr")) == 2

    outcomes = setup.answer()
    assert len(outcomes) == 2 and all("apprec 1" in o for o in outcomes), outcomes
    assert setup.mails("kpr") == [] and len(setup.mails("kpr", "iplosctl-processed")) == 2

    got = cli("receipts", setup.manifest)
    assert got.code == 0, got.err
    assert [p.state for p in setup.parts()] == ["accepted", "accepted"]
    # moved only after the lockfile was written; nothing deleted
    assert setup.mails("kommune") == []
    assert len(setup.mails("kommune", "iplosctl-processed")) == 2
    again = cli("receipts", setup.manifest)
    assert again.code == 0 and "0 recorded" in again.out


def test_plan_shows_the_edi_route(cli, setup: Setup) -> None:
    result = cli("plan", "--today", TODAY, setup.manifest)
    assert result.code == 0, result.err
    assert f"to {KPR} (HER-id {REGISTER_HER_ID}) via edi smtp://127.0.0.1:" in result.out
    assert f"from {KOMMUNE}; receipts from imaps://127.0.0.1:" in result.out


def test_a_sent_mail_taken_apart_with_email_and_openssl(cli, setup: Setup) -> None:
    assert apply(cli, setup).code == 0
    schema = load_schemas(XSD_DIR, [EXPORT_V1_XSD])
    raws = setup.mails("kpr")
    assert len(raws) == 2
    for raw, part in zip(
        sorted(raws, key=lambda r: b"KPR_IPL" not in r.split(b"\r\n\r\n")[0]),
        setup.parts(),
        strict=True,
    ):
        mail = email.message_from_bytes(raw, policy=email.policy.default)
        assert mail.get_content_type() == "application/pkcs7-mime"
        assert mail.get_param("smime-type") == "enveloped-data"
        assert mail.get_filename() == "smime.p7m"
        assert mail["Content-Transfer-Encoding"] == "base64"
        assert mail["Message-ID"] == f"<{part.msg_id}@edi.test>"
        assert mail["From"] == KOMMUNE and mail["To"] == KPR and mail["Subject"] == part.type
        assert mail["X-Iplosctl-P-toHerId"] == str(REGISTER_HER_ID)
        body = mail.get_payload(decode=True)
        assert isinstance(body, bytes)
        signed = openssl(
            "-decrypt",
            "-inform",
            "DER",
            "-recip",
            str(setup.pki / "register-encryption.pem"),
            "-inkey",
            str(setup.pki / "register-encryption.key"),
            data=body,
        )
        msghead = openssl(
            "-verify",
            "-inform",
            "DER",
            "-binary",
            "-CAfile",
            str(setup.pki / "ca.pem"),
            "-purpose",
            "any",
            data=signed,
        )
        validate_msghead(msghead, schema)
        info = parse_msghead(msghead)
        assert info.msg_id == part.msg_id and info.msg_type == part.type


# --- SMTP failures ----------------------------------------------------------------------------


def _one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 1, result.err
    assert "Traceback" not in result.err
    assert len(lines) == 1, result.err
    return str(lines[0])


def test_smtp_refusing_the_recipient_sends_nothing(cli, setup: Setup) -> None:
    setup.servers.knobs.refuse_recipients.add(KPR)
    line = _one_line_error(apply(cli, setup))
    assert f"refused the recipient {KPR} (550" in line
    assert [p.state for p in setup.parts()] == ["journaled", "journaled"]
    assert setup.mails("kpr") == []


def test_auth_failure_is_one_line_and_nothing_is_sent(
    cli, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPLOSCTL_SECRET_EDI_TEST", "wrong-password")
    line = _one_line_error(apply(cli, setup))
    assert "refused the login for 'kommune'" in line and "wrong-password" not in line
    # apply may check the login before it journals (then there is no lockfile yet)
    lock = lf.load(setup.lockfile)
    states = [p.state for p in lock.attempts[-1].parts] if lock and lock.attempts else []
    assert states in ([], ["journaled", "journaled"])
    assert setup.mails("kpr") == []


def test_tls_failure_with_an_untrusted_server_certificate(cli, setup: Setup) -> None:
    setup.manifest.write_text(manifest_text(setup.servers, ca=setup.servers.tls.other_ca_file))
    line = _one_line_error(apply(cli, setup))
    assert "TLS with the SMTP server 127.0.0.1:" in line and "CERTIFICATE_VERIFY_FAILED" in line
    assert setup.mails("kpr") == []


def test_a_connection_cut_after_data_is_resent_with_the_same_message_id(cli, setup: Setup) -> None:
    setup.servers.knobs.cut_after_data = 1
    line = _one_line_error(apply(cli, setup))
    assert "may or may not have arrived" in line
    first = setup.parts()[0]
    assert first.state == "journaled"  # delivered, but no 250: never recorded as sent
    assert len(setup.mails("kpr")) == 1

    rerun = apply(cli, setup)
    assert rerun.code == 0, rerun.err
    raws = setup.mails("kpr")
    ids = [email.message_from_bytes(r)["Message-ID"] for r in raws]
    assert len(raws) == 3 and ids.count(f"<{first.msg_id}@edi.test>") == 2

    outcomes = setup.answer()
    assert sum("duplicate" in o for o in outcomes) == 1, outcomes
    assert sum("apprec 1" in o for o in outcomes) == 2, outcomes
    assert len(setup.mails("kommune")) == 2  # one AppRec per part: one submission recorded
    assert cli("receipts", setup.manifest).code == 0
    assert [p.state for p in setup.parts()] == ["accepted", "accepted"]


# --- IMAP: hostile mail -----------------------------------------------------------------------


def _deliver(setup: Setup, user: str, raw: bytes) -> None:
    box = mailbox.Maildir(str(maildir(setup.servers.root, user)), create=False)
    box.add(raw)
    from tests.mailservers import _chown_tree

    _chown_tree(maildir(setup.servers.root, user).parent)


def _impostor_apprec(setup: Setup, tmp: Path) -> bytes:
    """A well-formed AppRec for a real part, from the register's address, signed by a key
    of another PKI (not the register's signing certificate)."""
    other = PkiFiles(tmp / "other-pki")
    pki = PkiFiles(setup.pki)
    impostor = SandboxRegister(
        her_id=REGISTER_HER_ID,
        signing_cert=load_certificate(other.certificate("register-signing")),
        signing_key=load_private_key(other.key("register-signing"), None),
        encryption_cert=load_certificate(pki.certificate("register-encryption")),
        encryption_key=load_private_key(pki.key("register-encryption"), None),
        municipality_signing_certs=[load_certificate(pki.certificate("municipality-signing"))],
        trust_anchors=[load_certificate(pki.ca)],
        municipality_encryption=load_certificate(pki.certificate("municipality-encryption")),
    )
    incoming = parse_mime(setup.mails("kpr")[0], impostor.queue)
    answer = impostor.decide(incoming, __import__("datetime").datetime.now())
    (reply,) = answer.replies
    transport = plugins.load("transport", "edi")(setup.mailbox.transport_settings(impostor))
    try:
        transport.send(reply.message)  # through the real SMTP server, to the kommune
    finally:
        transport.close()
    return reply.message.body


def test_hostile_mail_is_quarantined_or_left_never_lost(cli, setup: Setup, tmp_path: Path) -> None:
    assert apply(cli, setup).code == 0
    generate_pki(tmp_path / "other-pki")
    _impostor_apprec(setup, tmp_path)  # 1: wrong signer
    headers = f"From: {KPR}\r\nTo: {KOMMUNE}\r\nMessage-ID: <{{}}@edi.test>\r\n"
    _deliver(
        setup, "kommune", (headers.format("no-cms") + "Subject: hei\r\n\r\nno CMS\r\n").encode()
    )
    huge = "X" * 400_000
    _deliver(
        setup,
        "kommune",
        (headers.format("huge") + "Content-Type: application/pkcs7-mime\r\n\r\n" + huge).encode(),
    )
    bomb = headers.format("bomb") + "MIME-Version: 1.0\r\n"
    depth = 2000
    for i in range(depth):
        bomb += f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
    bomb += "Content-Type: text/plain\r\n\r\nboom\r\n"
    for i in reversed(range(depth)):
        bomb += f"--b{i}--\r\n"
    _deliver(setup, "kommune", bomb.encode())
    _deliver(  # the EPJ's mail in the shared EDI mailbox: not ours to touch
        setup,
        "kommune",
        f"From: fastlege@edi.test\r\nTo: {KOMMUNE}\r\nSubject: epikrise\r\n\r\nx\r\n".encode(),
    )
    setup.answer()  # the real AppRecs

    result = cli("receipts", setup.manifest)
    assert "Traceback" not in result.err
    assert [p.state for p in setup.parts()] == ["accepted", "accepted"]
    assert "3 quarantined" in result.out and "1 refused as too large" in result.out
    quarantine = sorted((tmp_path / "state" / "quarantine" / "kommune-2023").glob("*.json"))
    assert len(quarantine) == 3
    reasons = " ".join(q.read_text() for q in quarantine)
    assert "MIME bomb: 2000 multipart boundaries" in reasons
    assert "0 application/pkcs7-mime parts, not one" in reasons
    assert "not registered for this sender" in reasons  # the impostor's AppRec
    # nothing lost: the huge mail and the EPJ's mail are still in the inbox, the rest moved
    left = setup.mails("kommune")
    assert len(left) == 2 and any(b"epikrise" in m for m in left)
    assert len(setup.mails("kommune", "iplosctl-processed")) == 5
    for line in result.out.splitlines() + result.err.splitlines():
        assert "\n" not in line and len(line) < 400


def test_sandbox_attach_edi_answers_from_the_command_line(
    cli, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert apply(cli, setup).code == 0
    monkeypatch.setenv("IPLOSCTL_SECRET_KPR_MAIL", USERS["kpr"])
    mb = setup.mailbox
    args = ["--smtp", mb.smtp, "--imap", mb.imap, "--address", KPR, "--username", "kpr"]
    args += ["--credential", "kpr-mail", "--pki", str(setup.pki), "--ca-file", str(mb.ca_file)]
    args += ["--state", str(setup.root / "register"), "--once"]
    result = cli("sandbox", "attach-edi", *args)
    assert result.code == 0, result.err
    assert result.err.count("apprec 1") == 2
    assert cli("receipts", setup.manifest).code == 0
    assert [p.state for p in setup.parts()] == ["accepted", "accepted"]


def test_imap_login_failure_is_one_line_and_moves_nothing(
    cli, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert apply(cli, setup).code == 0
    setup.answer()
    monkeypatch.setenv("IPLOSCTL_SECRET_EDI_TEST", "wrong-password")
    line = _one_line_error(cli("receipts", setup.manifest))
    assert "IMAP server 127.0.0.1:" in line and "refused the login for 'kommune'" in line
    assert [p.state for p in setup.parts()] == ["sent", "sent"]
    assert len(setup.mails("kommune")) == 2


def test_imap_starttls_with_an_untrusted_certificate_fails_in_one_line(cli, setup: Setup) -> None:
    assert apply(cli, setup).code == 0
    setup.answer()
    text = manifest_text(setup.servers, imap="imap")
    text = text.replace(
        f"smtp: smtp://127.0.0.1:{setup.servers.smtp_port}", "smtp: smtp://127.0.0.1:1"
    ).replace(str(setup.servers.tls.ca_file), str(setup.servers.tls.other_ca_file))
    setup.manifest.write_text(text)
    line = _one_line_error(cli("receipts", setup.manifest))
    assert "TLS with the IMAP server 127.0.0.1:" in line
    assert len(setup.mails("kommune")) == 2


@contextlib.contextmanager
def extra_smtp(servers: MailServers, *, implicit_tls: bool) -> Iterator[int]:
    """Another aiosmtpd into the same Maildirs: implicit TLS (smtps), or no TLS at all."""
    from aiosmtpd.controller import Controller

    from tests.mailservers import _authenticator, _free_port, _Handler

    port = _free_port()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(servers.tls.cert_file, servers.tls.key_file)
    options: dict[str, Any] = {"ssl_context": ctx} if implicit_tls else {}
    controller = Controller(
        _Handler(servers.root, servers.knobs),
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator,
        auth_required=False,
        auth_require_tls=False,
        ready_timeout=10,
        **options,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def test_smtps_with_implicit_tls_sends(cli, setup: Setup) -> None:
    with extra_smtp(setup.servers, implicit_tls=True) as port:
        text = manifest_text(setup.servers).replace(
            f"smtp://127.0.0.1:{setup.servers.smtp_port}", f"smtps://127.0.0.1:{port}"
        )
        setup.manifest.write_text(text)
        result = apply(cli, setup)
    assert result.code == 0, result.err
    assert [p.state for p in setup.parts()] == ["sent", "sent"]
    assert len(setup.mails("kpr")) == 2


def test_a_server_without_starttls_is_refused_before_the_login(cli, setup: Setup) -> None:
    with extra_smtp(setup.servers, implicit_tls=False) as port:
        text = manifest_text(setup.servers).replace(
            f"smtp://127.0.0.1:{setup.servers.smtp_port}", f"smtp://127.0.0.1:{port}"
        )
        setup.manifest.write_text(text)
        line = _one_line_error(apply(cli, setup))
    assert "does not offer STARTTLS: refusing to log in or send in clear" in line
    assert setup.mails("kpr") == []
