"""`sandbox attach` against the real RabbitMQ test broker: the register consumes its queue
and answers through the broker, the municipality's side uses the AMQP transport.

Every test makes up its own HER-ids, so its queues are its own and are deleted after.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iplosctl import plugins
from iplosctl.errors import TransportError
from iplosctl.plugins import Delivery, TransportPlugin, TransportSettings
from iplosctl.sandbox.attach import AttachedRegister, attach_in_thread
from iplosctl.sandbox.pki import PkiFiles, generate_pki
from iplosctl.sandbox.register import Behaviour
from tests import broker
from tests.test_sandbox_register import BAD_ID, Municipality, open_apprec

pytestmark = pytest.mark.broker

#: generous: only reached when something is broken
RECEIVE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Parties:
    register: str
    org: str
    service: str

    @property
    def register_queue(self) -> str:
        return f"{self.register}_async"

    @property
    def reply_queue(self) -> str:
        return f"{self.service}_async"

    @property
    def error_queue(self) -> str:
        return f"{self.service}_error"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return generate_pki(tmp_path_factory.mktemp("pki"))  # valid now: the register checks now


@pytest.fixture
def parties() -> Iterator[Parties]:
    rng = random.SystemRandom()
    register, org, service = (str(n) for n in rng.sample(range(1_000_000, 10_000_000), 3))
    made = Parties(register, org, service)
    queues = [made.register_queue, made.reply_queue, made.error_queue]
    for queue in queues:
        broker.declare_queue(queue)
    yield made
    for queue in queues:
        broker.delete_queue(queue)


def settings() -> TransportSettings:
    return TransportSettings(
        url=broker.AMQP_URL, username=broker.USER, password=broker.PASSWORD, timeout_seconds=20
    )


def transport() -> TransportPlugin:
    return plugins.load("transport", "amqp")(settings())


def municipality(pki: PkiFiles, parties: Parties) -> Municipality:
    return Municipality(pki, parties.register, parties.org, parties.service)


def attached(pki: PkiFiles, parties: Parties, **options: object) -> AttachedRegister:
    return attach_in_thread(
        url=broker.AMQP_URL,
        username=broker.USER,
        password=broker.PASSWORD,
        pki_dir=pki.directory,
        register_her_id=parties.register,
        stop_after=None,
        **options,
    )


def first(t: TransportPlugin, queue: str) -> Delivery:
    for delivery in t.receive(queue, timeout=RECEIVE_TIMEOUT):
        return delivery
    raise AssertionError(f"nothing arrived on {queue}")


def test_round_trip_through_rabbitmq(pki: PkiFiles, parties: Parties, tmp_path: Path) -> None:
    sender = municipality(pki, parties)
    good = sender.outgoing(msg_type="KPR_IPL")
    bad = sender.outgoing([BAD_ID], msg_type="KPR_IDE")
    t = transport()
    try:
        with attached(pki, parties, state_dir=tmp_path) as register:
            t.send(good)
            # a resend after a crash: same MsgId, freshly encrypted; answered once
            t.send(sender.outgoing(msg_type="KPR_IPL", msg_id=good.message_id))
            t.send(bad)  # one consumer, in order: its receipt means the resend was seen
            receipts = {}
            for _ in range(2):
                delivery = first(t, parties.reply_queue)
                _xml, apprec = open_apprec(delivery.message.body, pki, dt.datetime.now(dt.UTC))
                assert delivery.message.correlation_id == apprec.original_msg_id
                receipts[apprec.original_msg_id] = apprec
                delivery.accept()
            stats = register.stop()
        assert receipts[good.message_id].status == "1"
        assert receipts[good.message_id].original_msg_type == "KPR_IPL"
        assert receipts[bad.message_id].status == "2"
        assert [e.code for e in receipts[bad.message_id].errors] == ["E31"]
        assert (stats.handled, stats.duplicates, stats.replies) == (3, 1, 2)
        assert list(t.receive(parties.reply_queue, timeout=0.3)) == []
    finally:
        t.close()


def test_an_undecryptable_message_goes_to_the_error_queue(pki: PkiFiles, parties: Parties) -> None:
    sent = municipality(pki, parties).outgoing(body=b"\x30\x03\x02\x01\x00")
    t = transport()
    try:
        with attached(pki, parties):
            t.send(sent)
            error = first(t, parties.error_queue)
            error.accept()
        props = error.message.application_properties
        assert error.message.body == b""
        assert error.message.subject == sent.subject
        assert props["originalMessageId"] == sent.message_id
        assert props["errorCondition"] == "transport:invalid-certificate"
        assert (props["fromHerId"], props["toHerId"]) == (parties.register, parties.service)
    finally:
        t.close()


def test_the_error_queue_behaviour(pki: PkiFiles, parties: Parties) -> None:
    sent = municipality(pki, parties).outgoing()
    t = transport()
    try:
        with attached(pki, parties, behaviour=Behaviour(error_queue_instead=True)):
            t.send(sent)
            error = first(t, parties.error_queue)
            error.accept()
        assert error.message.application_properties["errorCondition"] == (
            "transport:internal-error"
        )
    finally:
        t.close()


def test_a_message_is_accepted_only_after_its_replies_were_sent(
    pki: PkiFiles, parties: Parties
) -> None:
    broker.delete_queue(parties.reply_queue)  # the AppRec cannot be delivered
    sent = municipality(pki, parties).outgoing()
    t = transport()
    try:
        t.send(sent)
        register = attached(pki, parties)
        assert register.join(RECEIVE_TIMEOUT), "attach should stop on the missing queue"
        with pytest.raises(TransportError, match=parties.reply_queue):
            register.stop()

        broker.declare_queue(parties.reply_queue)
        with attached(pki, parties):  # the message is still there, and is answered now
            delivery = first(t, parties.reply_queue)
            _xml, apprec = open_apprec(delivery.message.body, pki, dt.datetime.now(dt.UTC))
            delivery.accept()
        assert apprec.original_msg_id == sent.message_id
    finally:
        t.close()
