"""`receipts --wait` over EDI polls the IMAP mailbox (issue 14).

IMAP has no "wait for the next message" like an AMQP receive: receipts reads the
folder, sleeps, and reads it again on the same connection until every part is answered
or the budget is spent (exit 75, README "Exit codes"). The register here answers only
after receipts has read the empty mailbox at least once, so the AppRecs can only be
found by a later poll.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iplosctl_transport_edi import EdiTransport
from tests.test_transport_edi import Setup, _deliver, apply, edi_setup

pytestmark = pytest.mark.mail


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    yield from edi_setup(tmp_path, monkeypatch)


class ReadCounter:
    """Counts the reads of the municipality's receipt folder; tells when the first ended."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.first_read_done = threading.Event()
        real = EdiTransport.receive

        def counting(transport: EdiTransport, queue: str, *, timeout: float) -> Iterator[Any]:
            yield from real(transport, queue, timeout=timeout)
            if transport.folders.get(queue):
                self.reads += 1
                self.first_read_done.set()

        monkeypatch.setattr(EdiTransport, "receive", counting)


def test_receipts_wait_polls_until_the_late_apprecs_arrive(
    cli, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert apply(cli, setup).code == 0
    counter = ReadCounter(monkeypatch)
    answered: list[str] = []

    def late_register() -> None:
        if counter.first_read_done.wait(60):  # only after receipts found nothing
            answered.extend(setup.answer())

    register = threading.Thread(target=late_register, daemon=True)
    register.start()
    result = cli("receipts", "--wait", "60s", setup.manifest)
    register.join(60)
    assert len(answered) == 2 and all("apprec 1" in a for a in answered), answered
    assert result.code == 0, result.err
    assert counter.reads >= 2  # the first read saw nothing; a later poll found them
    assert [p.state for p in setup.parts()] == ["accepted", "accepted"]
    assert setup.mails("kommune") == []
    assert len(setup.mails("kommune", "iplosctl-processed")) == 2


def test_receipts_wait_runs_out_with_exit_75_and_leaves_the_mailbox_alone(
    cli, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert apply(cli, setup).code == 0
    # another party's mail in the shared mailbox, read at most once however often we poll
    epj_mail = b"From: fastlege@edi.test\r\nTo: kommune@edi.test\r\nSubject: x\r\n\r\nx\r\n"
    _deliver(setup, "kommune", epj_mail)
    counter = ReadCounter(monkeypatch)
    fetches: list[str] = []
    real_cmd = EdiTransport._imap_cmd

    def recording(transport: EdiTransport, what: str, typ: str, data: Any) -> Any:
        fetches.append(what)
        return real_cmd(transport, what, typ, data)

    monkeypatch.setattr(EdiTransport, "_imap_cmd", recording)
    result = cli("receipts", "--wait", "5s", setup.manifest)
    assert result.code == 75, result.err
    assert "still waiting for 2 receipt(s)" in result.out + result.err
    assert counter.reads >= 2
    assert fetches.count("FETCH") == 1  # the other party's mail: looked at once, never again
    assert [p.state for p in setup.parts()] == ["sent", "sent"]
    assert len(setup.mails("kommune")) == 1
