"""The sandbox register over EDI (issue 14): read its mailbox, answer by mail.

The same `SandboxRegister` that answers on the AMQP peer judges each mail here: the
`edi` transport turns the mail back into an IncomingMessage (its X-Iplosctl-P-* headers
are the AMQP properties, Reply-To the sender's address), the register decides, and its
AppRec goes out signed and encrypted by SMTP to that address. Only then is the
register's answer remembered and the mail moved out of the inbox, so a crash in
between means the mail is answered again, never silence; a resend with the same
Message-ID (the MsgId) is a duplicate and gets nothing, as on AMQP (DOMAIN.md §5.8).

EDI has no error queue: an answer the register would put on `{herId}_error` is logged
and dropped here (a real EDI receiver would bounce the mail or send an ebXML
MessageError; UNVERIFIED which KPR does).

Behaviours (`--behaviour`, register.py `BEHAVIOUR_HELP`) are the register's own, so they
hold over EDI as on AMQP. A delay counts from when the mail server received the mail
(IMAP INTERNALDATE, `ediReceivedAt`): until then the mail is left unread in the inbox
(nothing decided, nothing remembered), and the first read after it is answered. The
due time thus lives on the server, not in this process: a restart, or `--once` run
again later, neither loses nor hurries a held answer.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iplosctl import plugins
from iplosctl.errors import TransportError
from iplosctl.plugins import IncomingMessage, TlsSettings, TransportSettings
from iplosctl.sandbox.register import SandboxRegister

log = logging.getLogger(__name__)

#: the property the edi transport sets to the mail's INTERNALDATE (kept in step with
#: iplosctl_transport_edi.RECEIVED_PROPERTY; the core does not import plugin modules)
RECEIVED_PROPERTY = "ediReceivedAt"


@dataclass(frozen=True)
class RegisterMailbox:
    """Where the sandbox register's EDI mailbox is and how it logs in."""

    address: str
    smtp: str
    imap: str
    username: str
    password: str = field(repr=False)
    ca_file: Path | None = None
    folder: str = "INBOX"
    timeout_seconds: float = 30.0

    def transport_settings(self, register: SandboxRegister) -> TransportSettings:
        return TransportSettings(
            url=self.smtp,
            username=self.username,
            password=self.password,
            tls=TlsSettings(ca_file=self.ca_file),
            timeout_seconds=self.timeout_seconds,
            options={
                "address": self.address,
                "imap": self.imap,
                "folders": {register.queue: self.folder},
            },
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def answer_mailbox(
    register: SandboxRegister,
    mailbox: RegisterMailbox,
    *,
    now: Callable[[], dt.datetime] = _now,
    transport: Any = None,
) -> list[str]:
    """Answer every mail in the register's inbox once; one outcome line per mail."""
    own = transport is None
    if own:
        transport = plugins.load("transport", "edi")(mailbox.transport_settings(register))
    outcomes: list[str] = []
    try:
        for delivery in transport.receive(register.queue, timeout=0):
            message = delivery.message
            at = now()
            due = _due(message, register.behaviour.delay_seconds)
            if due is not None and due > at:
                delivery.release()  # stays in the inbox, unread; answered once due
                outcomes.append(
                    f"{message.message_id}: held until {due:%Y-%m-%dT%H:%M:%SZ} "
                    f"(delay={register.behaviour.delay_seconds:g})"
                )
                continue
            answer = register.decide(message, at)
            try:
                for reply in answer.replies:
                    if "@" in reply.queue:
                        transport.send(reply.message)
                    else:
                        log.warning(
                            "message %s: %s, but EDI has no error queue: not sent",
                            message.message_id,
                            answer.outcome,
                        )
            except TransportError as exc:
                # not remembered, not moved: the next read answers it again (the
                # municipality takes a second copy of an AppRec as a duplicate)
                delivery.release()
                outcomes.append(
                    f"{message.message_id}: not answered ({exc.message}); "
                    "answered again on the next read"
                )
                continue
            register.remember(answer)
            delivery.accept()
            outcomes.append(f"{message.message_id}: {answer.outcome}")
    finally:
        if own:
            transport.close()
    return outcomes


def _due(message: IncomingMessage, delay_seconds: float) -> dt.datetime | None:
    """When a delayed answer to `message` may go: its arrival plus the delay (None: now)."""
    if not delay_seconds:
        return None
    arrived = message.application_properties.get(RECEIVED_PROPERTY)
    try:
        when = dt.datetime.fromisoformat(str(arrived).replace("Z", "+00:00"))
    except ValueError:
        log.warning(
            "message %s: the IMAP server gave no arrival time: answered without the delay",
            message.message_id,
        )
        return None
    return when.astimezone(dt.UTC) + dt.timedelta(seconds=delay_seconds)
