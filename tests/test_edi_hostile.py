"""More hostile mail in the municipality's EDI mailbox (issue 14): each is quarantined
with the whole raw mail kept, or left in place, and the run goes on."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iplosctl import endpoint
from iplosctl.errors import TransportError
from iplosctl.manifest import load_manifest
from iplosctl_transport_edi import EdiTransport
from tests.test_edi_endpoint import _outgoing
from tests.test_transport_edi import KOMMUNE, KPR, Setup, _deliver, apply, edi_setup

pytestmark = pytest.mark.mail


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    yield from edi_setup(tmp_path, monkeypatch)


def _headers(name: str) -> bytes:
    return f"From: {KPR}\r\nTo: {KOMMUNE}\r\nMessage-ID: <{name}@edi.test>\r\n".encode()


def test_wide_and_deep_mime_bombs_an_empty_mail_and_a_bounce(
    cli, setup: Setup, tmp_path: Path
) -> None:
    assert apply(cli, setup).code == 0
    parts = 4000  # under the 200,000-byte receive limit, so it is fetched and parsed
    wide = (
        _headers("wide")
        + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * parts
        + b"--b--\r\n"
    )
    deep = _headers("deep") + b"Content-Type: message/rfc822\r\n\r\n" * 3000 + b"\r\nhi\r\n"
    bounce = (
        _headers("bounce")
        + b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        + b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        + b"--r\r\nContent-Type: text/plain\r\n\r\nno such user\r\n"
        + b"--r\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 5.1.1\r\n--r--\r\n"
    )
    for raw in (wide, deep, bounce, b""):
        _deliver(setup, "kommune", raw)
    setup.answer()  # and the register's real AppRecs

    result = cli("receipts", setup.manifest)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert [p.state for p in setup.parts()] == ["accepted", "accepted"]
    quarantine = sorted((tmp_path / "state" / "quarantine" / "kommune-2023").glob("*.json"))
    reasons = " ".join(q.read_text() for q in quarantine)
    assert f"MIME bomb: {parts + 1} lines that may start a part" in reasons
    assert "MIME bomb: nested too deep to parse" in reasons
    assert "0 application/pkcs7-mime parts, not one" in reasons  # the bounce
    assert len(quarantine) == 3, reasons
    # the raw mails are kept whole beside their entries: nothing lost
    kept = sorted(f.read_bytes() for f in quarantine[0].parent.glob("*.p7m"))
    assert kept == sorted([wide, deep, bounce])
    # the empty mail has no From: not the register's, so left alone in the inbox
    assert setup.mails("kommune") == [b""]
    assert len(setup.mails("kommune", "iplosctl-processed")) == 5


def test_an_smtp_session_the_server_dropped_while_idle_is_reopened(setup: Setup) -> None:
    """Protecting a large part can outlast the server's idle timeout: the next send must
    open a new session, not report a part that was never sent as "may have arrived"."""
    settings = setup.mailbox.transport_settings(setup.register)
    transport = EdiTransport(settings)
    try:
        transport.prepare(KOMMUNE)
        session = transport._smtp
        assert session is not None and session.sock is not None
        session.sock.shutdown(socket.SHUT_RDWR)  # as a server's idle timeout leaves it
        transport.send(dataclasses.replace(_outgoing(), to_queue=KOMMUNE))
    finally:
        transport.close()
    assert len(setup.mails("kommune")) == 1


def test_an_imap_session_the_server_dropped_while_idle_is_reopened(setup: Setup) -> None:
    """`receipts --wait` polls on one IMAP connection; a server's or a NAT's idle timeout
    may drop it between two polls, and the next poll must open a new one, not end the wait."""
    manifest = load_manifest(setup.manifest)
    transport = EdiTransport(endpoint.transport_settings(manifest))
    queue = endpoint.addressing(manifest).reply_queue
    try:
        assert list(transport.receive(queue, timeout=0)) == []  # connected, nothing yet
        session = transport._imap
        assert session is not None and session.sock is not None
        session.sock.shutdown(socket.SHUT_RDWR)  # as an idle timeout leaves it
        _deliver(setup, "kommune", _headers("late") + b"\r\nnot yet a receipt\r\n")
        got = list(transport.receive(queue, timeout=0))
        assert transport._imap is not None and transport._imap is not session
    finally:
        transport.close()
    assert [d.message.message_id for d in got] == ["late"], got


def test_an_imap_server_that_drops_every_new_session_still_fails_in_one_line(
    setup: Setup,
) -> None:
    """One new connection per poll, not a loop: a fresh session that fails is reported."""
    manifest = load_manifest(setup.manifest)
    transport = EdiTransport(endpoint.transport_settings(manifest))
    queue = endpoint.addressing(manifest).reply_queue
    original = transport._imap_connect

    def connect_then_drop() -> Any:
        imap = original()
        imap.sock.shutdown(socket.SHUT_RDWR)
        return imap

    try:
        assert list(transport.receive(queue, timeout=0)) == []
        transport._imap.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        transport._imap_connect = connect_then_drop  # type: ignore[method-assign]
        with pytest.raises(TransportError, match="reading the EDI mailbox failed"):
            list(transport.receive(queue, timeout=0))
    finally:
        transport.close()
