"""First-party plugin: the EDI channel (issue 14): S/MIME over SMTP out, IMAP back in.

KPR's letter gives two addresses: HER-id 134197 over AMQP and the EDI address
`kpr@edi.nhn.no` (the profile's `register.ediAddress`). This transport sends the very
same protected body the AMQP transport sends (MsgHead, CMS SignedData inside
EnvelopedData) as one MIME message, and reads the register's AppRecs from the
municipality's EDI mailbox.

Sources (see README "Choosing the channel"):

* NHN developer portal, EDI 2.0 "EbXml Standard" and "EDI" pages
  (utviklerportal.nhn.no/informasjonstjenester/meldingsutveksling/edi-20/...):
  EDI is SMTP between NHN's mail servers; messages with clinical content carry it
  encrypted in a MIME part of type `pkcs7-mime`; a receiver drops a message whose MIME
  `Message-ID` it has seen before (so a resend must reuse the Message-ID, which is why
  ours is derived from the MsgId); the whole message may be at most 51 200 000 bytes;
  `@edi.nhn.no` is production, `@testedi.nhn.no` test.
* RFC 8551 (S/MIME 4.0), sections 3.2 and 3.3: `application/pkcs7-mime; smime-type=enveloped-data;
  name=smime.p7m`, base64, attachment `smime.p7m`.

The ebXML question (DOMAIN.md §5.9): NHN's EDI pages and KPR's 2023 requirements
describe health messages over NHN EDI inside the HIS 1037:2011 ebXML envelope (signed
SOAP header, CPA id, Service/Action/Role, transport acknowledgements). This transport
does not build it: KPR's CPA/Service/Action/Role values, the standard's text and a
reference message are not in reach (README "Choosing the channel" lists what would
unblock it), so validate warns in production and qa. UNVERIFIED besides: whether KPR
wants a MIME entity inside the EnvelopedData (strict RFC 8551) rather than the MsgHead
SignedData directly (what AMQP carries, and what we send), and whether it reads the
Subject.

Mapping onto the queue-shaped TransportPlugin Protocol (iplosctl/plugins.py):

* `send` sends to `to_queue` when it is an e-mail address, else to
  `options["to"]` (the register's EDI address); From and Reply-To are
  `options["address"]`. `Message-ID: <MsgId@domain-of-From>`. The AMQP application
  properties travel as `X-Iplosctl-P-<name>` headers, the reply queue as
  `X-Iplosctl-Reply-Queue`. `send` returns when the server answered 250 to DATA.
* `receive(queue)` reads the IMAP folder `options["folders"][queue]` (other queues,
  e.g. the AMQP error queue, have no mailbox: nothing is yielded). Only mail From
  `options["accept_from"]` (when set) is looked at: the EDI mailbox is shared with the
  EPJ, whose messages we must not touch. Bodies are fetched with BODY.PEEK (nothing is
  marked \\Seen); larger than `max_message_size` is not fetched but reported once
  (`take_refusals`) and left in place.
* `Delivery.accept` MOVEs the message to `options["processed_folder"]`
  (`iplosctl-processed`, created on first use): receipts.py calls it only after the
  lockfile or the quarantine file was written. Nothing is ever expunged from the
  server outside that MOVE. `release` leaves the message where it is.

TLS is not optional: `smtp://` requires STARTTLS, `smtps://` is implicit TLS; `imap://`
requires STARTTLS, `imaps://` implicit TLS; TLS 1.2 minimum, the peer certificate
always verified and, unless `tls.verifyPeerName: false` (refused in production and
qa), its host name too. AUTH is never attempted in clear.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email
import email.parser
import email.policy
import imaplib
import re
import smtplib
import socket
import ssl
import time
import warnings
from collections.abc import Iterator, Mapping
from email.message import EmailMessage, Message
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import urlsplit

from iplosctl.errors import TransportError
from iplosctl.plugins import IncomingMessage, OutgoingMessage, TransportSettings

SMIME_TYPE = "application/pkcs7-mime"
SMIME_PARAMS = {"smime-type": "enveloped-data", "name": "smime.p7m"}
PROPERTY_HEADER = "X-Iplosctl-P-"
REPLY_QUEUE_HEADER = "X-Iplosctl-Reply-Queue"
CORRELATION_HEADER = "X-Iplosctl-Correlation-Id"
#: set on each mail read over IMAP: when the server received it (INTERNALDATE, UTC)
RECEIVED_PROPERTY = "ediReceivedAt"
DEFAULT_FOLDER = "INBOX"
PROCESSED_FOLDER = "iplosctl-processed"
#: NHN: the whole EDI message at most 51 200 000 bytes (EDI 2.0 "EDI" page)
NHN_MAX_MESSAGE = 51_200_000
#: MIME nesting we look into for the pkcs7 part; deeper is not a register's AppRec
MAX_DEPTH = 4
MAX_PARTS = 20
#: lines starting with "--" (part delimiters) beyond which a mail is not parsed at all
MAX_DELIMITER_LINES = 4 * MAX_PARTS
_ADDRESS = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$|^[^@\s]+@localhost$")


def valid_address(value: str) -> bool:
    """A bare addr-spec as EDI addresses are written (`kpr@edi.nhn.no`)."""
    return bool(_ADDRESS.match(value or ""))


def parse_server_url(url: str, kind: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an `smtp(s)://` or `imap(s)://` URL; TransportError if not."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise TransportError(f"{kind} URL {url!r} is not valid: {exc}") from None
    scheme = parts.scheme.lower()
    defaults = {"smtp": 587, "smtps": 465, "imap": 143, "imaps": 993}
    if scheme not in defaults or not scheme.startswith(kind):
        raise TransportError(
            f"{kind} URL {url!r} must start with {kind}:// (STARTTLS) or {kind}s:// (TLS)"
        )
    if not host:
        raise TransportError(f"{kind} URL {url!r} has no host")
    if parts.username or parts.password:
        raise TransportError(
            f"{kind} URL must not hold a user or password: use endpoint.username and credential"
        )
    return scheme, host, port or defaults[scheme]


def tls_context(settings: TransportSettings) -> ssl.SSLContext:
    """Verified TLS 1.2+ (the same rules as AMQP: iplosctl/transport_policy.py)."""
    tls = settings.tls
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.client_certificate:
            ctx.load_cert_chain(
                str(tls.client_certificate), str(tls.client_key) if tls.client_key else None
            )
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load the TLS files of the EDI endpoint: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = tls.verify_peer_name
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


#: OpenSSL's verify codes for a certificate that is not for the host we connected to
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def tls_failure(
    exc: ssl.SSLError, where: str, host: str, port: int, starttls: str | None
) -> TransportError:
    """One line an IT person can act on for a failed TLS handshake (nothing was sent).

    A certificate problem says which (untrusted, or not for this host name). Any other
    handshake failure may be a server that offers only TLS 1.0/1.1, which OpenSSL reports
    as anything from UNSUPPORTED_PROTOCOL to an EOF: `old_tls_version` asks the server
    once more, allowing only those versions, so the line can say so for certain.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _NAME_MISMATCH:
            return TransportError(
                f"TLS with the {where} failed (CERTIFICATE_VERIFY_FAILED: its certificate is "
                f"not issued for {host!r}): put the host name its certificate names in the "
                "URL; iplosctl always checks it (tls.verifyPeerName: false is refused in "
                "production and qa)"
            )
        return TransportError(
            f"TLS with the {where} failed (CERTIFICATE_VERIFY_FAILED: "
            f"{_text(exc.verify_message or exc.reason)}): check tls.caFile and that the URL "
            "names the host in the server's certificate"
        )
    old = old_tls_version(host, port, starttls)
    if old is not None:
        return TransportError(
            f"the {where} offers only {old}: refused, iplosctl requires TLS 1.2 or newer "
            "(as NHN does); nothing was sent or read: ask the mail server's operator to "
            "enable TLS 1.2 or 1.3"
        )
    return TransportError(
        f"TLS with the {where} failed ({_text(exc.reason or exc)}): check tls.caFile, that "
        "the URL names the host in the server's certificate and that it offers TLS 1.2 or 1.3"
    )


def old_tls_version(host: str, port: int, starttls: str | None, timeout: float = 10) -> str | None:
    """The version (TLSv1 or TLSv1.1) if the server completes a handshake capped at 1.1.

    Diagnosis only, after a failed handshake: nothing but the handshake crosses this
    connection (no login, no mail), and the certificate is not looked at. OpenSSL 3
    allows TLS 1.0/1.1 only at security level 0, hence the cipher string. `starttls` is
    "smtp" or "imap" when the port speaks plain text first.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():  # deprecated on purpose: this is the diagnosis
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        return None  # this OpenSSL cannot speak old TLS at all: nothing to learn
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if starttls and not _plain_starttls(sock, starttls):
                return None
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                version = tls.version()
    except (OSError, ValueError):
        return None
    return version if version in ("TLSv1", "TLSv1.1") else None


def _plain_starttls(sock: socket.socket, protocol: str) -> bool:
    """Bring a plain SMTP or IMAP connection to where the TLS handshake starts."""
    stream = sock.makefile("rb")
    try:
        stream.readline(4096)  # the greeting
        if protocol == "smtp":
            sock.sendall(b"EHLO iplosctl\r\n")
            for _ in range(100):
                line = stream.readline(4096)
                if line[3:4] != b"-":
                    break
            sock.sendall(b"STARTTLS\r\n")
            return stream.readline(4096).startswith(b"220")
        sock.sendall(b"t1 STARTTLS\r\n")
        for _ in range(100):
            line = stream.readline(4096)
            if not line or line.startswith(b"t1 "):
                return line.startswith(b"t1 OK")
        return False
    finally:
        stream.close()


def message_id_header(msg_id: str, from_address: str) -> str:
    """`<MsgId@domain>`: the same MsgId always gives the same Message-ID (resend = same mail)."""
    domain = from_address.rpartition("@")[2] or "iplosctl.invalid"
    return f"<{msg_id}@{domain}>"


def msg_id_from_header(value: str | None) -> str | None:
    if not value:
        return None
    return value.strip().strip("<>").rpartition("@")[0] or value.strip().strip("<>") or None


def build_mime(message: OutgoingMessage, *, from_address: str, to_address: str) -> bytes:
    """The S/MIME message for one protected body (see the module docstring for sources)."""
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = from_address
    mail["To"] = to_address
    mail["Reply-To"] = from_address
    mail["Subject"] = message.subject
    mail["Message-ID"] = message_id_header(message.message_id, from_address)
    stamp = message.application_properties.get("applicationTimeStamp")
    if stamp:
        with contextlib.suppress(ValueError):
            when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            mail["Date"] = format_datetime(when if when.tzinfo else when.replace(tzinfo=dt.UTC))
    mail[CORRELATION_HEADER] = message.correlation_id
    if message.reply_to:
        mail[REPLY_QUEUE_HEADER] = message.reply_to
    for name, value in sorted(message.application_properties.items()):
        mail[PROPERTY_HEADER + name] = value
    maintype, subtype = SMIME_TYPE.split("/")
    mail.set_content(
        message.body,
        maintype=maintype,
        subtype=subtype,
        disposition="attachment",
        filename="smime.p7m",
        params={"smime-type": SMIME_PARAMS["smime-type"]},
        cte="base64",
    )
    return mail.as_bytes(policy=email.policy.SMTP)


def _smime_part(mail: Message) -> tuple[bytes | None, str]:
    """The one pkcs7-mime part's bytes, or None and why (bounded walk: MIME bombs)."""
    found: list[bytes] = []
    seen = 0
    stack: list[tuple[Message, int]] = [(mail, 0)]
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > MAX_PARTS:
            return None, f"more than {MAX_PARTS} MIME parts"
        ctype = part.get_content_type()
        if part.is_multipart():
            if depth >= MAX_DEPTH:
                return None, f"MIME nested deeper than {MAX_DEPTH}"
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
            continue
        if ctype in (SMIME_TYPE, "application/x-pkcs7-mime"):
            data = part.get_payload(decode=True)
            if isinstance(data, bytes) and data:
                found.append(data)
    if len(found) != 1:
        return None, f"{len(found)} application/pkcs7-mime parts, not one"
    return found[0], ""


def parse_mime(raw: bytes, queue: str) -> IncomingMessage:
    """An IncomingMessage from one mail. Without exactly one pkcs7 part the body is the
    whole raw mail (so quarantine keeps all of it) and `ediProblem` says why."""
    properties: dict[str, str] = {}
    boundaries = raw.lower().count(b"boundary=")
    # every part starts with a "--boundary" line: counting them costs nothing, while the
    # email package would build the whole tree first (a 50 MB mail of tiny parts: a
    # minute and gigabytes) before the bounded walk below could stop at MAX_PARTS
    delimiters = raw.count(b"\n--")
    try:
        if boundaries > MAX_PARTS:  # a MIME bomb: read the headers only, never the tree
            mail = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
            body, problem = None, f"MIME bomb: {boundaries} multipart boundaries"
        elif delimiters > MAX_DELIMITER_LINES:
            mail = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
            body, problem = None, f"MIME bomb: {delimiters} lines that may start a part"
        else:
            mail = email.message_from_bytes(raw, policy=email.policy.compat32)
            body, problem = _smime_part(mail)
    except RecursionError:  # e.g. thousands of nested message/rfc822 parts
        return IncomingMessage(
            queue, None, None, None, raw, {"ediProblem": "MIME bomb: nested too deep to parse"}
        )
    except Exception as exc:  # a hostile mail must not stop the run
        return IncomingMessage(queue, None, None, None, raw, {"ediProblem": type(exc).__name__})
    for name, value in mail.items():
        if name.lower().startswith(PROPERTY_HEADER.lower()):
            properties[name[len(PROPERTY_HEADER) :]] = str(value).strip()
    properties["ediFrom"] = parseaddr(str(mail.get("From", "")))[1]
    if body is None:
        properties["ediProblem"] = problem
        body = raw
    reply_to = parseaddr(str(mail.get("Reply-To") or mail.get("From") or ""))[1] or None
    return IncomingMessage(
        queue=queue,
        message_id=msg_id_from_header(mail.get("Message-ID")),
        correlation_id=(str(mail.get(CORRELATION_HEADER) or "").strip() or None),
        subject=(str(mail.get("Subject") or "").strip() or None),
        body=body,
        application_properties=properties,
        reply_to=reply_to,
    )


class EdiDelivery:
    """One mail in the IMAP folder; `accept` moves it to the processed folder."""

    def __init__(self, transport: EdiTransport, uid: str, message: IncomingMessage) -> None:
        self._transport = transport
        self._uid = uid
        self.message = message
        self._settled: str | None = None

    def accept(self) -> None:
        if self._settled == "accepted":
            return
        self._transport._move(self._uid)
        self._settled = "accepted"

    def release(self) -> None:
        if self._settled != "accepted":
            self._settled = "released"


class EdiTransport:
    """S/MIME over SMTP (STARTTLS/TLS + AUTH) out; IMAP (STARTTLS/TLS) in."""

    name = "edi"

    def __init__(self, settings: TransportSettings) -> None:
        self.settings = settings
        options: Mapping[str, Any] = getattr(settings, "options", None) or {}
        self.from_address = str(options.get("address") or "")
        self.to_address = str(options.get("to") or "")
        self.imap_url = str(options.get("imap") or "")
        self.folders: dict[str, str] = dict(options.get("folders") or {})
        self.processed_folder = str(options.get("processed_folder") or PROCESSED_FOLDER)
        self.accept_from = str(options.get("accept_from") or "").lower()
        self.max_message_size = settings.max_message_size or NHN_MAX_MESSAGE
        if not valid_address(self.from_address):
            raise TransportError(
                f"the EDI transport needs the municipality's EDI address "
                f"(endpoint.address), got {self.from_address!r}"
            )
        parse_server_url(settings.url, "smtp")
        if self.imap_url:
            parse_server_url(self.imap_url, "imap")
        self._smtp: smtplib.SMTP | None = None
        self._imap: imaplib.IMAP4 | None = None
        self._selected: str | None = None
        self._refusals: list[str] = []
        self._processed_ready = False
        #: (folder, UIDVALIDITY, uid) of mails left in place on purpose (not ours, too big)
        self._passed: set[tuple[str, str, str]] = set()

    def __repr__(self) -> str:
        return f"EdiTransport({self.settings.url!r}, {self.imap_url!r})"

    def __enter__(self) -> EdiTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- SMTP ---------------------------------------------------------------------------

    def _smtp_connect(self) -> smtplib.SMTP:
        scheme, host, port = parse_server_url(self.settings.url, "smtp")
        where = f"SMTP server {host}:{port}"
        ctx = tls_context(self.settings)
        timeout = self.settings.timeout_seconds
        try:
            if scheme == "smtps":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ctx)
            else:
                smtp = smtplib.SMTP(host, port, timeout=timeout)
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    smtp.close()
                    raise TransportError(
                        f"{where} does not offer STARTTLS: refusing to log in or send in clear"
                    )
                smtp.starttls(context=ctx)
            smtp.ehlo()
            if self.settings.username:
                smtp.login(self.settings.username, self.settings.password or "")
        except ssl.SSLError as exc:
            starttls = None if scheme == "smtps" else "smtp"
            raise tls_failure(exc, where, host, port, starttls) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportError(
                f"the {where} refused the login for {self.settings.username!r} "
                f"({exc.smtp_code}): check endpoint.username and the credential's secret"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"cannot reach the {where}: {_why(exc)}") from None
        return smtp

    def prepare(self, to_queue: str) -> None:
        """Connect and log in now, so a wrong host or password fails before anything is sent."""
        if self._smtp is None:
            self._smtp = self._smtp_connect()

    def send(self, message: OutgoingMessage) -> None:
        """Return once the server answered 250 to DATA; anything else raises TransportError."""
        to = message.to_queue if "@" in message.to_queue else self.to_address
        if not valid_address(to):
            raise TransportError(f"no EDI address to send {message.subject} to (got {to!r})")
        raw = build_mime(message, from_address=self.from_address, to_address=to)
        if len(raw) > NHN_MAX_MESSAGE:
            raise TransportError(
                f"the EDI message for {message.message_id} is {len(raw):,} bytes, over NHN's "
                f"{NHN_MAX_MESSAGE:,} byte limit for EDI: send it over AMQP"
            )
        if self._smtp is not None and not _alive(self._smtp):
            _close_quietly(self._smtp)  # the server dropped an idle session: nothing sent yet
            self._smtp = None
        if self._smtp is None:
            self._smtp = self._smtp_connect()
        smtp, self._smtp = self._smtp, None  # a failed session is never reused
        where = f"the SMTP server {urlsplit(self.settings.url).hostname}"
        try:
            refused = smtp.sendmail(self.from_address, [to], raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (0, b""))
            _close_quietly(smtp)
            raise TransportError(
                f"{where} refused the recipient {to} ({code} {_text(text)}): nothing was "
                "sent; check the register's EDI address (profile register.ediAddress)"
            ) from None
        except smtplib.SMTPDataError as exc:
            _close_quietly(smtp)
            raise TransportError(
                f"{where} refused message {message.message_id} ({exc.smtp_code} "
                f"{_text(exc.smtp_error)}): not sent; run iplosctl apply again later"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            _close_quietly(smtp)
            raise TransportError(
                f"the connection to {where} failed while sending {message.message_id} "
                f"({_why(exc)}): it may or may not have arrived; the part stays journaled "
                "and the next apply sends it again with the same Message-ID, which the "
                "receiver takes as a duplicate"
            ) from None
        if refused:
            _close_quietly(smtp)
            raise TransportError(f"{where} refused {', '.join(refused)}")
        self._smtp = smtp

    # --- IMAP ---------------------------------------------------------------------------

    def _imap_connect(self) -> imaplib.IMAP4:
        if not self.imap_url:
            raise TransportError("the EDI endpoint has no imap URL: receipts cannot be read")
        scheme, host, port = parse_server_url(self.imap_url, "imap")
        where = f"IMAP server {host}:{port}"
        ctx = tls_context(self.settings)
        timeout = self.settings.timeout_seconds
        try:
            if scheme == "imaps":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    host, port, ssl_context=ctx, timeout=timeout
                )
            else:
                imap = imaplib.IMAP4(host, port, timeout=timeout)
                if "STARTTLS" not in imap.capabilities:
                    imap.shutdown()
                    raise TransportError(
                        f"{where} does not offer STARTTLS: refusing to log in in clear"
                    )
                imap.starttls(ssl_context=ctx)
            imap.login(self.settings.username or "", self.settings.password or "")
            # what a server offers before login is not all it offers (MOVE, UIDPLUS)
            typ, data = imap.capability()
            if typ == "OK" and data and data[-1]:
                imap.capabilities = tuple(data[-1].decode("ascii", "replace").upper().split())
        except ssl.SSLError as exc:
            starttls = None if scheme == "imaps" else "imap"
            raise tls_failure(exc, where, host, port, starttls) from None
        except imaplib.IMAP4.error as exc:
            raise TransportError(
                f"the {where} refused the login for {self.settings.username!r} ({_text(exc)}): "
                "check endpoint.username and the credential's secret"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot reach the {where}: {_why(exc)}") from None
        return imap

    def _imap_cmd(self, what: str, typ: str, data: Any) -> Any:
        if typ != "OK":
            raise TransportError(f"IMAP {what} failed: {_text(data)}")
        return data

    def receive(self, queue: str, *, timeout: float) -> Iterator[EdiDelivery]:
        """Yield the mails in `queue`'s folder now (IMAP has no wait: `timeout` is unused).

        `receipts --wait` calls this again every few seconds on the same connection
        (polling; SELECT shows what arrived since). So what one call decided about a
        mail that stays in the folder is remembered for the next: another party's mail
        is not fetched again, and a mail over the size limit is reported once.
        """
        folder = self.folders.get(queue)
        if folder is None:
            return
        imap, validity = self._selected_folder(folder)
        try:
            data = self._imap_cmd("SEARCH", *imap.uid("SEARCH", "UNDELETED"))
            uids = [u.decode("ascii") for u in (data[0] or b"").split()]
            for uid in uids:
                key = (folder, validity, uid)
                if key in self._passed:
                    continue
                header = self._imap_cmd(
                    "FETCH",
                    *imap.uid(
                        "FETCH", uid, "(RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM)])"
                    ),
                )
                size, sender, arrived = _size_from_and_date(header)
                if self.accept_from and sender.lower() != self.accept_from:
                    self._passed.add(key)
                    continue  # another party's message in a shared EDI mailbox: not ours
                if size > self.max_message_size:
                    self._passed.add(key)
                    self._refusals.append(
                        f"mail {uid} in {folder} ({size:,} bytes) is over the "
                        f"{self.max_message_size:,} byte receive limit: left in the mailbox "
                        "unread; raise endpoint.maxMessageSizeBytes or remove it by hand"
                    )
                    continue
                fetched = self._imap_cmd("FETCH", *imap.uid("FETCH", uid, "(BODY.PEEK[])"))
                raw = _literal(fetched)
                if raw is None:  # expunged by another client since the SEARCH: not there
                    continue
                message = parse_mime(raw, queue)
                if arrived is not None:
                    properties = {**message.application_properties, RECEIVED_PROPERTY: arrived}
                    message = dataclasses.replace(message, application_properties=properties)
                yield EdiDelivery(self, uid, message)
        except (imaplib.IMAP4.error, OSError) as exc:
            self._drop_imap()
            raise TransportError(f"reading the EDI mailbox failed: {_why(exc)}") from None

    def _selected_folder(self, folder: str) -> tuple[imaplib.IMAP4, str]:
        """The connection with `folder` selected, and the folder's UIDVALIDITY.

        A connection kept from an earlier poll may have been dropped meanwhile (a server's
        idle timeout, RFC 9051 allows 30 minutes; a NAT's, often less): a long
        `receipts --wait` then opens a new one once, instead of ending on it.
        """
        if self._imap is not None:
            try:
                return self._select(self._imap, folder)
            except (imaplib.IMAP4.abort, OSError):
                self._drop_imap()  # gone while idle: once more on a new connection
            except imaplib.IMAP4.error as exc:
                self._drop_imap()
                raise TransportError(f"reading the EDI mailbox failed: {_why(exc)}") from None
        self._imap = self._imap_connect()
        try:
            return self._select(self._imap, folder)
        except (imaplib.IMAP4.error, OSError) as exc:
            self._drop_imap()
            raise TransportError(f"reading the EDI mailbox failed: {_why(exc)}") from None

    def _select(self, imap: imaplib.IMAP4, folder: str) -> tuple[imaplib.IMAP4, str]:
        self._imap_cmd(f"SELECT {folder}", *imap.select(_quote(folder)))
        self._selected = folder
        return imap, _text(imap.response("UIDVALIDITY")[1])

    def _move(self, uid: str) -> None:
        imap = self._imap
        if imap is None:
            raise TransportError("the IMAP connection is gone: the message stays in the mailbox")
        try:
            if not self._processed_ready:
                imap.create(_quote(self.processed_folder))  # NO when it exists: fine
                self._processed_ready = True
            if "MOVE" in imap.capabilities:
                self._imap_cmd("MOVE", *imap.uid("MOVE", uid, _quote(self.processed_folder)))
            else:
                self._imap_cmd("COPY", *imap.uid("COPY", uid, _quote(self.processed_folder)))
                self._imap_cmd("STORE", *imap.uid("STORE", uid, "+FLAGS", "(\\Deleted)"))
                if "UIDPLUS" in imap.capabilities:
                    imap.uid("EXPUNGE", uid)
        except (imaplib.IMAP4.error, OSError) as exc:
            self._drop_imap()
            raise TransportError(
                f"cannot move the mail to {self.processed_folder} ({_why(exc)}): it stays in "
                "the mailbox and the next receipts run sees it as a duplicate"
            ) from None

    def take_refusals(self) -> list[str]:
        out, self._refusals = self._refusals, []
        return out

    def _drop_imap(self) -> None:
        imap, self._imap = self._imap, None
        if imap is not None:
            with contextlib.suppress(Exception):
                imap.shutdown()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(Exception):
                smtp.quit()
        imap = self._imap
        if imap is not None:
            with contextlib.suppress(Exception):
                imap.logout()
        self._imap = None


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _size_from_and_date(data: Any) -> tuple[int, str, str | None]:
    """RFC822.SIZE, the From address and INTERNALDATE (ISO 8601 UTC) of a FETCH answer."""
    size, sender, arrived = 0, "", None
    for item in data:
        meta = item[0] if isinstance(item, tuple) else item
        if not isinstance(meta, bytes):
            continue
        match = re.search(rb"RFC822\.SIZE (\d+)", meta)
        if match:
            size = int(match.group(1))
        when = imaplib.Internaldate2tuple(meta)
        if when is not None:
            stamp = dt.datetime.fromtimestamp(time.mktime(when), dt.UTC)
            arrived = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(item, tuple) and isinstance(item[1], bytes):
            sender = parseaddr(item[1].decode("utf-8", "replace").partition(":")[2].strip())[1]
    return size, sender, arrived


def _literal(data: Any) -> bytes | None:
    """The message of a `FETCH (BODY.PEEK[])` answer; None when the server sent none.

    An empty message may come back as the quoted string `""` instead of a literal.
    """
    for item in data:
        if isinstance(item, tuple) and len(item) > 1:
            return bytes(item[1])
        if isinstance(item, bytes) and re.search(rb'BODY\[\] ""', item):
            return b""
    return None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        value = " ".join(_text(v) for v in value)
    return " ".join(str(value).split())[:200]


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return _text(getattr(exc, "strerror", None) or exc) or type(exc).__name__


def _alive(smtp: smtplib.SMTP) -> bool:
    """NOOP answered 250: the session `prepare` (or the last part) opened is still usable.

    Protecting a large part can outlast a server's idle timeout; without this check the
    next MAIL FROM would fail and the part be reported as "may or may not have arrived"
    when it certainly was not sent.
    """
    try:
        return smtp.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _close_quietly(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        smtp.close()
