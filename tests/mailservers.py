"""Real mail servers on loopback for the EDI transport's tests (issue 14).

* SMTP: `aiosmtpd` in this process on an ephemeral 127.0.0.1 port, STARTTLS required
  before AUTH (PLAIN/LOGIN), delivering each accepted message into the Maildir of the
  recipient's local part (`kommune@…` → `<root>/kommune/Maildir`). Knobs let a test
  refuse a recipient or cut the connection after DATA (the message is delivered, the 250
  never sent: the crash window the transport must survive).
* IMAP: Debian's `dovecot` (package dovecot-imapd, scripts/ensure-system-packages.sh) as a
  child process with its own configuration under `<root>`, serving those Maildirs over
  IMAPS and IMAP+STARTTLS on ephemeral 127.0.0.1 ports, users from a passwd-file.

Both use one test CA generated here (`cryptography`), with a server certificate for
127.0.0.1 and `localhost`. Nothing listens beyond loopback and nothing is written outside
`<root>`, so parallel test runs on the shared machine do not meet.

For the TLS refusal tests both servers can be started misconfigured on purpose:

* `old_tls=True`: they offer only TLS 1.0 and 1.1. OpenSSL 3 refuses those below
  security level 0 even on the server side, so the servers' cipher string carries
  `@SECLEVEL=0`: aiosmtpd's context directly; dovecot 2.3 has `ssl_min_protocol` but no
  maximum, so it gets `ssl_min_protocol = TLSv1`, `ssl_cipher_list = …@SECLEVEL=0` and an
  `OPENSSL_CONF` of its own (passed through `import_environment`) whose system default
  says `MaxProtocol = TLSv1.1`.
* `wrong_name=True`: they present a certificate from the same trusted test CA, but for
  `mail.elsewhere.test` only, so only the host-name check can refuse it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import mailbox
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
USERS = {"kommune": "kommune-password", "kpr": "kpr-password"}
DOMAIN = "edi.test"
#: the only name in the `wrong_name` servers' certificate
WRONG_NAME = "mail.elsewhere.test"
#: what the `old_tls` servers allow: below OpenSSL 3's default security level
OLD_TLS_CIPHERS = "DEFAULT:@SECLEVEL=0"


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class TestCa:
    ca_file: Path
    cert_file: Path
    key_file: Path
    #: a CA nobody trusts, for the TLS-failure test
    other_ca_file: Path
    #: issued by the trusted CA for another host (mail.elsewhere.test), not for loopback
    wrong_name_cert_file: Path
    wrong_name_key_file: Path


def make_tls(root: Path) -> TestCa:
    """A test CA and a server certificate for 127.0.0.1/localhost (and an unrelated CA)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=2)

    def ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cert, key

    ca_cert, ca_key = ca("iplosctl test mail CA")
    other_cert, _ = ca("iplosctl untrusted CA")

    def server(cn: str, names: Sequence[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        private = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(pem), private

    pem = serialization.Encoding.PEM
    out = TestCa(
        root / "ca.pem",
        root / "server.pem",
        root / "server.key",
        root / "other-ca.pem",
        root / "wrong-name.pem",
        root / "wrong-name.key",
    )
    out.ca_file.write_bytes(ca_cert.public_bytes(pem))
    out.other_ca_file.write_bytes(other_cert.public_bytes(pem))
    loopback = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
    for (cert_file, key_file), (cn, names) in (
        ((out.cert_file, out.key_file), ("localhost", loopback)),
        (
            (out.wrong_name_cert_file, out.wrong_name_key_file),
            (WRONG_NAME, [x509.DNSName(WRONG_NAME)]),
        ),
    ):
        cert_pem, key_pem = server(cn, names)
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)
    return out


def mail_owner() -> tuple[int, int]:
    """Who owns the Maildirs: the current user, or `mail` when root (dovecot refuses uid 0)."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam("mail")
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path) -> None:
    uid, gid = mail_owner()
    if os.getuid() != 0:
        return
    for folder, dirs, files in os.walk(path):
        os.chown(folder, uid, gid)
        for name in [*dirs, *files]:
            os.chown(os.path.join(folder, name), uid, gid)


def maildir(root: Path, user: str) -> Path:
    path = root / "mail" / user / "Maildir"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- SMTP ------------------------------------------------------------------------------


@dataclass
class SmtpKnobs:
    """What the test SMTP server does wrong on purpose."""

    refuse_recipients: set[str] = field(default_factory=set)
    #: deliver, then drop the connection instead of answering 250 (once per entry)
    cut_after_data: int = 0
    delivered: list[bytes] = field(default_factory=list)


class _Handler:
    def __init__(self, root: Path, knobs: SmtpKnobs) -> None:
        self.root = root
        self.knobs = knobs

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.lower() in self.knobs.refuse_recipients:
            return "550 5.1.1 no such mailbox here"
        user = address.split("@", 1)[0].lower()
        if user not in USERS:
            return "550 5.1.1 unknown user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        for rcpt in envelope.rcpt_tos:
            user = rcpt.split("@", 1)[0].lower()
            box = mailbox.Maildir(str(maildir(self.root, user)), create=True)
            box.add(data)
            _chown_tree(maildir(self.root, user).parent)
        self.knobs.delivered.append(data)
        if self.knobs.cut_after_data > 0:
            self.knobs.cut_after_data -= 1
            server.transport.abort()  # delivered, but the client never hears 250
            return "421 cut"
        return "250 Message accepted for delivery"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    if isinstance(auth_data, LoginPassword):
        user = auth_data.login.decode()
        if USERS.get(user) == auth_data.password.decode():
            return AuthResult(success=True)
    return AuthResult(success=False, handled=False)


@dataclass
class MailServers:
    root: Path
    tls: TestCa
    smtp_port: int
    imaps_port: int
    imap_port: int
    knobs: SmtpKnobs

    def inbox_count(self, user: str) -> int:
        return len(mailbox.Maildir(str(maildir(self.root, user)), create=True))


def _dovecot_conf(
    root: Path, tls: TestCa, imaps: int, imap: int, *, old_tls: bool, wrong_name: bool
) -> Path:
    me = pwd.getpwuid(os.getuid())
    owner = mail_owner()
    is_root = os.getuid() == 0
    internal = "dovecot" if is_root else me.pw_name
    login = "dovenull" if is_root else me.pw_name
    (root / "run").mkdir(exist_ok=True)
    (root / "run").chmod(0o755)
    users = root / "users"
    users.write_text(
        "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in USERS.items()), encoding="utf-8"
    )
    users.chmod(0o644)
    cert, key = (
        (tls.wrong_name_cert_file, tls.wrong_name_key_file)
        if wrong_name
        else (tls.cert_file, tls.key_file)
    )
    protocols = "ssl_min_protocol = TLSv1.2"
    if old_tls:  # the maximum comes from OPENSSL_CONF (_old_tls_openssl_conf)
        protocols = (
            f"ssl_min_protocol = TLSv1\nssl_cipher_list = {OLD_TLS_CIPHERS}\n"
            "import_environment = TZ OPENSSL_CONF"
        )
    conf = root / "dovecot.conf"
    conf.write_text(
        f"""# written by tests/mailservers.py: loopback only
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = iplosctl-test-{os.getpid()}
protocols = imap
listen = {LOOPBACK}
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 0
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
{protocols}
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%n/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}
}}
userdb {{
  driver = static
  args = uid={owner[0]} gid={owner[1]} home={root}/mail/%n
}}
service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {LOOPBACK}
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""",
        encoding="utf-8",
    )
    (root / "state").mkdir(exist_ok=True)
    return conf


def _wait_port(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            return True
        time.sleep(0.1)
    return False


def _old_tls_openssl_conf(root: Path) -> Path:
    """An OpenSSL configuration whose system default caps TLS at 1.1 (for dovecot)."""
    path = root / "openssl-old-tls.cnf"
    path.write_text(
        "openssl_conf = openssl_init\n"
        "[openssl_init]\nssl_conf = ssl_sect\n"
        "[ssl_sect]\nsystem_default = system_default_sect\n"
        "[system_default_sect]\nMinProtocol = TLSv1\nMaxProtocol = TLSv1.1\n"
        f"CipherString = {OLD_TLS_CIPHERS}\n",
        encoding="utf-8",
    )
    path.chmod(0o644)
    return path


def negotiated_tls_version(port: int, *, starttls: str | None = None) -> str | None:
    """The TLS version a client that allows 1.0 to 1.3 gets from the server on `port`.

    The refusal tests use it to show that the server really speaks (only) old TLS, so
    the refusal they see comes from iplosctl's minimum and not from something else.
    `starttls` is "smtp" or "imap" for a plain port that upgrades.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.set_ciphers(OLD_TLS_CIPHERS)
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        if starttls:
            stream = sock.makefile("rb")
            stream.readline()  # the greeting
            command = b"EHLO probe\r\n" if starttls == "smtp" else b""
            if command:
                sock.sendall(command)
                while stream.readline()[3:4] == b"-":
                    pass
            sock.sendall(b"STARTTLS\r\n" if starttls == "smtp" else b"a STARTTLS\r\n")
            stream.readline()
        try:
            with ctx.wrap_socket(sock) as tls:
                return tls.version()
        except ssl.SSLError:
            return None


@contextlib.contextmanager
def mail_servers(
    *, old_tls: bool = False, wrong_name: bool = False, tls: TestCa | None = None
) -> Iterator[MailServers]:
    """Start aiosmtpd and dovecot on loopback for the `with` block; stop both after.

    Their folder is a fresh one under the system temp folder, readable by dovecot's
    own users (pytest's tmp_path is not, when the tests run as root), removed after.
    `old_tls` and `wrong_name` misconfigure both servers (see the module docstring);
    `tls` reuses another pair's CA and certificates, so one caFile trusts both pairs.
    """
    root = Path(tempfile.mkdtemp(prefix="iplosctl-mail-"))
    try:
        root.chmod(0o755)
        with _servers(root, old_tls=old_tls, wrong_name=wrong_name, tls=tls) as servers:
            yield servers
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _servers(
    root: Path, *, old_tls: bool, wrong_name: bool, tls: TestCa | None
) -> Iterator[MailServers]:
    from aiosmtpd.controller import Controller

    # aiosmtpd warns about its own deprecated Session.login_data on every login
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    tls = tls or make_tls(root)
    for user in USERS:
        mailbox.Maildir(str(maildir(root, user)), create=True)
        _chown_tree(maildir(root, user).parent)
    knobs = SmtpKnobs()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if old_tls:
        with warnings.catch_warnings():  # old TLS on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            server_ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            server_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        server_ctx.set_ciphers(OLD_TLS_CIPHERS)
    if wrong_name:
        server_ctx.load_cert_chain(tls.wrong_name_cert_file, tls.wrong_name_key_file)
    else:
        server_ctx.load_cert_chain(tls.cert_file, tls.key_file)
    smtp_port = _free_port()
    controller = Controller(
        _Handler(root, knobs),
        hostname=LOOPBACK,
        port=smtp_port,
        tls_context=server_ctx,
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
        auth_require_tls=True,
        ready_timeout=10,
    )
    controller.start()
    imaps, imap = _free_port(), _free_port()
    conf = _dovecot_conf(root, tls, imaps, imap, old_tls=old_tls, wrong_name=wrong_name)
    binary = dovecot_binary()
    assert binary, "dovecot is not installed: run scripts/ensure-system-packages.sh"
    env = dict(os.environ)
    if old_tls:
        env["OPENSSL_CONF"] = str(_old_tls_openssl_conf(root))
    proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stderr=subprocess.PIPE, env=env)
    try:
        if not (_wait_port(imaps) and _wait_port(imap)):
            proc.kill()
            log = (
                (root / "dovecot.log").read_text(errors="replace")[-2000:]
                if (root / "dovecot.log").exists()
                else ""
            )
            raise RuntimeError(f"dovecot did not start: {proc.stderr.read()[-2000:]!r} {log}")  # type: ignore[union-attr]
        yield MailServers(root, tls, smtp_port, imaps, imap, knobs)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        controller.stop()
