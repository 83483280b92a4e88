"""The sandbox register's behaviours over EDI (issue 14): a delay holds the answer.

A delay counts from the mail's arrival at the register's IMAP server (INTERNALDATE).
The register's clock is injected (`answer_mailbox(now=…)`), so the tests step past the
delay instead of sleeping through it; the mail servers are the real ones on loopback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from iplosctl.sandbox.edi import answer_mailbox
from iplosctl.sandbox.pki import PkiFiles
from iplosctl.sandbox.register import SandboxRegister, parse_behaviour
from tests.mailservers import USERS
from tests.test_transport_edi import REGISTER_HER_ID, Setup, apply, edi_setup

pytestmark = pytest.mark.mail
HOUR = 3600


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    yield from edi_setup(tmp_path, monkeypatch)


def _register(setup: Setup, behaviour: str) -> SandboxRegister:
    return SandboxRegister.from_pki(
        PkiFiles(setup.pki),
        her_id=REGISTER_HER_ID,
        behaviour=parse_behaviour(behaviour),
        state_dir=setup.root / "register",
    )


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def test_a_delayed_register_holds_its_answer_until_due(cli, setup: Setup) -> None:
    assert apply(cli, setup).code == 0
    register = _register(setup, f"delay={HOUR}")
    start = _utc_now()

    held = answer_mailbox(register, setup.mailbox, now=lambda: start)
    assert len(held) == 2 and all("held until" in o and f"delay={HOUR}" in o for o in held)
    # nothing decided, nothing sent, the mails left unread where they were
    assert len(setup.mails("kpr")) == 2 and setup.mails("kommune") == []
    assert not any(register.answered(p.msg_id) for p in setup.parts())
    assert cli("receipts", setup.manifest).code == 0
    assert [p.state for p in setup.parts()] == ["sent", "sent"]

    # a new register process (a restart) an hour later: the delay is over
    later = _register(setup, f"delay={HOUR}")
    answered = answer_mailbox(
        later, setup.mailbox, now=lambda: start + dt.timedelta(hours=1, minutes=1)
    )
    assert len(answered) == 2 and all("apprec 1" in o for o in answered), answered
    assert setup.mails("kpr") == [] and len(setup.mails("kommune")) == 2
    assert cli("receipts", setup.manifest).code == 0
    assert [p.state for p in setup.parts()] == ["accepted", "accepted"]


def test_without_a_delay_the_same_mail_is_answered_at_once(cli, setup: Setup) -> None:
    """The control for the test above: the hold comes from the behaviour."""
    assert apply(cli, setup).code == 0
    outcomes = answer_mailbox(_register(setup, "normal"), setup.mailbox, now=_utc_now)
    assert len(outcomes) == 2 and all("apprec 1" in o for o in outcomes), outcomes


def test_never_answer_over_edi_takes_the_mail_and_sends_nothing(cli, setup: Setup) -> None:
    assert apply(cli, setup).code == 0
    outcomes = answer_mailbox(_register(setup, "never-answer"), setup.mailbox, now=_utc_now)
    assert len(outcomes) == 2 and all("never-answer: not sent" in o for o in outcomes)
    assert setup.mails("kpr") == [] and setup.mails("kommune") == []


def test_attach_edi_once_with_a_delay_says_what_it_holds(
    cli, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert apply(cli, setup).code == 0
    monkeypatch.setenv("IPLOSCTL_SECRET_KPR_MAIL", USERS["kpr"])
    mb = setup.mailbox
    args = ["--smtp", mb.smtp, "--imap", mb.imap, "--address", mb.address, "--username", "kpr"]
    args += ["--credential", "kpr-mail", "--pki", str(setup.pki), "--ca-file", str(mb.ca_file)]
    args += ["--state", str(setup.root / "register"), "--once", "--behaviour", f"delay={HOUR}"]
    result = cli("sandbox", "attach-edi", *args)
    assert result.code == 0, result.err
    assert result.err.count(f"(delay={HOUR})") == 2 and "apprec" not in result.err
    assert len(setup.mails("kpr")) == 2 and setup.mails("kommune") == []


def test_a_reply_cut_after_data_is_sent_again_and_taken_once(cli, setup: Setup) -> None:
    """The register's own SMTP session is cut after DATA: the AppRec was delivered but
    the register cannot know. It keeps the mail, answers it again on the next read,
    and the municipality records the part once (the second AppRec is a duplicate)."""
    assert apply(cli, setup).code == 0
    setup.servers.knobs.cut_after_data = 1
    first = setup.answer()
    assert sum("not answered" in o and "answered again on the next read" in o for o in first) == 1
    assert sum("apprec 1" in o for o in first) == 1, first
    assert len(setup.mails("kpr")) == 1  # the unanswered mail stays in the inbox
    second = setup.answer()
    assert len(second) == 1 and "apprec 1" in second[0], second
    assert len(setup.mails("kommune")) == 3  # two AppRecs for one part
    result = cli("receipts", setup.manifest)
    assert result.code == 0, result.err
    assert [p.state for p in setup.parts()] == ["accepted", "accepted"]
    assert len(setup.mails("kommune", "iplosctl-processed")) == 3
    assert not list((setup.root / "state" / "quarantine").glob("*/*.json"))
