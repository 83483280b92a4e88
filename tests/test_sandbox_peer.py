"""The embedded sandbox: the real AMQP transport against the loopback peer and its register.

Settlement is what receipts rely on, so it is tested the way a client meets it: accept
removes, release and a dropped connection put back, and everything on a queue survives
into the next session on the same state folder.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iplosctl import plugins
from iplosctl.endpoint import Addressing, Keys
from iplosctl.errors import IplosctlError, UsageError
from iplosctl.payload.apprec import parse_apprec
from iplosctl.payload.cms import decrypt_then_verify
from iplosctl.plugins import OutgoingMessage, TransportPlugin, TransportSettings
from iplosctl.sandbox import peer as peer_module
from iplosctl.sandbox.embedded import (
    BEHAVIOUR_ENV,
    EmbeddedRegister,
    embedded_register,
    ensure_pki,
    municipality_keys,
)
from iplosctl.sandbox.peer import SandboxPeer, queue_from_source, queue_from_target
from iplosctl.sandbox.register import Behaviour, SandboxRegister
from tests.test_sandbox_register import BAD_ID, REGISTER, SERVICE_HER, Municipality

ADDRESS = Addressing(
    receiver_her_id=int(REGISTER),
    receiver_name="KPR",
    sender_her_id=8000001,
    service_her_id=int(SERVICE_HER),
)
REPLY_QUEUE = f"{SERVICE_HER}_async"
ERROR_QUEUE = f"{SERVICE_HER}_error"


def transport(settings: TransportSettings) -> TransportPlugin:
    return plugins.load("transport", "amqp")(settings)


def read_apprec(session: EmbeddedRegister, body: bytes):  # type: ignore[no-untyped-def]
    """Decrypt and verify with the keys `endpoint.connect` hands to receipts."""
    return _open(session.municipality_keys(), body)


def _open(keys: Keys, body: bytes):  # type: ignore[no-untyped-def]
    xml = decrypt_then_verify(
        body,
        own_cert=keys.encryption_cert,
        own_key=keys.encryption_key,
        sender_certs=[keys.register_signing_cert],
        trust_anchors=keys.trust_anchors,
        now=dt.datetime.now(dt.UTC),
    )
    return parse_apprec(xml)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "sandbox"


@pytest.fixture
def session(state: Path) -> Iterator[EmbeddedRegister]:
    with embedded_register(state, ADDRESS) as running:
        yield running


# --- round trip ------------------------------------------------------------------------------


def test_a_part_sent_to_the_register_comes_back_as_an_accepted_apprec(
    session: EmbeddedRegister,
) -> None:
    assert session.transport_settings.url.startswith("amqp://127.0.0.1:")
    assert (session.transport_settings.username, session.transport_settings.namespace) == (
        None,
        None,
    )
    sent = Municipality(session.pki).outgoing(msg_type="KPR_IPL")
    t = transport(session.transport_settings)
    try:
        t.send(sent)
        deliveries = list(t.receive(REPLY_QUEUE, timeout=0.3))
        assert len(deliveries) == 1
        message = deliveries[0].message
        assert (message.subject, message.correlation_id) == ("APPREC", sent.message_id)
        assert message.application_properties["toHerId"] == SERVICE_HER
        assert "enqueuedTimeUtc" in message.application_properties
        apprec = read_apprec(session, message.body)
        assert apprec.status == "1"
        assert (apprec.original_msg_id, apprec.original_msg_type) == (sent.message_id, "KPR_IPL")
        deliveries[0].accept()
        assert list(t.receive(REPLY_QUEUE, timeout=0.2)) == []
    finally:
        t.close()
    assert session.peer.depth(REPLY_QUEUE) == 0


def test_a_rejected_part_and_an_error_queue_message(session: EmbeddedRegister) -> None:
    municipality = Municipality(session.pki)
    t = transport(session.transport_settings)
    try:
        bad = municipality.outgoing([BAD_ID])
        t.send(bad)
        t.send(municipality.outgoing(body=b"not CMS at all"))
        (receipt,) = list(t.receive(REPLY_QUEUE, timeout=0.3))
        apprec = read_apprec(session, receipt.message.body)
        assert (apprec.status, [e.code for e in apprec.errors]) == ("2", ["E31"])
        (error,) = list(t.receive(ERROR_QUEUE, timeout=0.3))
        assert error.message.body == b""
        assert error.message.application_properties["errorCondition"] == (
            "transport:invalid-certificate"
        )
    finally:
        t.close()


def test_the_namespaced_exchange_address_reaches_the_register(
    session: EmbeddedRegister,
) -> None:
    settings = TransportSettings(url=session.transport_settings.url, namespace="NHNTestBus")
    sent = Municipality(session.pki).outgoing()
    t = transport(settings)  # sends to /exchange/NHNTestBus/8000100_async
    try:
        t.send(sent)
        (receipt,) = list(t.receive(REPLY_QUEUE, timeout=0.3))
        assert read_apprec(session, receipt.message.body).original_msg_id == sent.message_id
    finally:
        t.close()


def test_a_resend_is_answered_once(session: EmbeddedRegister) -> None:
    sent = Municipality(session.pki).outgoing()
    t = transport(session.transport_settings)
    try:
        t.send(sent)
        t.send(sent)  # recovery after a crash: same MsgId
        assert len(list(t.receive(REPLY_QUEUE, timeout=0.3))) == 1
    finally:
        t.close()


# --- persistence and settlement --------------------------------------------------------------


def test_receipts_wait_on_disk_for_the_next_session(state: Path) -> None:
    with embedded_register(state, ADDRESS) as first:
        ca = first.pki.ca.read_bytes()
        sent = Municipality(first.pki).outgoing()
        t = transport(first.transport_settings)
        t.send(sent)
        t.close()
    assert len(list((state / "queues" / REPLY_QUEUE).glob("*.amqp"))) == 1
    assert (state / ".gitignore").read_text().strip().endswith("*")

    with embedded_register(state, ADDRESS) as second:
        assert second.pki.ca.read_bytes() == ca  # the PKI is made once, then reused
        t = transport(second.transport_settings)
        try:
            (receipt,) = list(t.receive(REPLY_QUEUE, timeout=0.3))
            assert read_apprec(second, receipt.message.body).original_msg_id == sent.message_id
            receipt.accept()
            t.send(sent)  # the register still knows it answered this one
            assert list(t.receive(REPLY_QUEUE, timeout=0.2)) == []
        finally:
            t.close()
    assert list((state / "queues" / REPLY_QUEUE).glob("*.amqp")) == []


def _put(settings: TransportSettings, queue: str, *ids: str) -> None:
    t = transport(settings)
    try:
        for message_id in ids:
            t.send(
                OutgoingMessage(
                    message_id=message_id,
                    correlation_id=message_id,
                    subject="APPREC",
                    body=b"\x00opaque\xff",
                    to_queue=queue,
                    reply_to=f"{REGISTER}_async",
                    application_properties={"fromHerId": REGISTER, "toHerId": SERVICE_HER},
                )
            )
    finally:
        t.close()


def _ids(settings: TransportSettings, queue: str, settle: str) -> list[str | None]:
    """Receive everything on `queue` in a fresh connection and settle it as told."""
    t = transport(settings)
    try:
        out = []
        for delivery in t.receive(queue, timeout=0.3):
            out.append(delivery.message.message_id)
            if settle == "accept":
                delivery.accept()
            elif settle == "release":
                delivery.release()
        return out
    finally:
        t.close()


def test_release_and_unsettled_deliveries_go_back_in_order(session: EmbeddedRegister) -> None:
    settings = session.transport_settings
    _put(settings, REPLY_QUEUE, "a", "b", "c")
    assert _ids(settings, REPLY_QUEUE, "release") == ["a", "b", "c"]
    assert _ids(settings, REPLY_QUEUE, "leave") == ["a", "b", "c"]  # closed unsettled
    assert session.peer.depth(REPLY_QUEUE) == 3

    t = transport(settings)
    try:
        deliveries = list(t.receive(REPLY_QUEUE, timeout=0.3))
        deliveries[1].accept()
    finally:
        t.close()
    assert session.peer.depth(REPLY_QUEUE) == 2
    assert _ids(settings, REPLY_QUEUE, "accept") == ["a", "c"]
    assert _ids(settings, REPLY_QUEUE, "accept") == []
    assert session.peer.depth(REPLY_QUEUE) == 0


def test_delayed_replies_are_held_until_due(state: Path) -> None:
    now = [time.time()]  # the peer's clock, moved by hand
    pki = ensure_pki(state / "pki")
    reg = SandboxRegister.from_pki(
        pki, her_id=REGISTER, behaviour=Behaviour(delay_seconds=30), state_dir=state
    )
    with SandboxPeer(state, reg, clock=lambda: now[0]) as peer:
        t = transport(TransportSettings(url=peer.url))
        try:
            sent = Municipality(pki).outgoing()
            t.send(sent)
            assert list(t.receive(REPLY_QUEUE, timeout=0.3)) == []
            assert peer.depth(REPLY_QUEUE) == 1  # held, and on disk already
            now[0] += 31
            receipt = next(iter(t.receive(REPLY_QUEUE, timeout=10)))
            apprec = _open(municipality_keys(pki), receipt.message.body)
            assert (apprec.status, apprec.original_msg_id) == ("1", sent.message_id)
        finally:
            t.close()


# --- edges -----------------------------------------------------------------------------------


def test_a_bad_behaviour_variable_names_itself(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BEHAVIOUR_ENV, "sometimes")
    with pytest.raises(UsageError, match=BEHAVIOUR_ENV), embedded_register(state, ADDRESS):
        pass


def test_the_behaviour_variable_reaches_the_register(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BEHAVIOUR_ENV, "reject-all")
    with embedded_register(state, ADDRESS) as running:
        assert running.register.behaviour == Behaviour(reject_all=True)


def test_one_peer_per_state_folder(
    session: EmbeddedRegister, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer_module, "LOCK_TIMEOUT_SECONDS", 0.05)
    with pytest.raises(IplosctlError, match="another sandbox peer"):
        SandboxPeer(state).start()


def test_stop_closes_the_listener_and_returns(state: Path) -> None:
    peer = SandboxPeer(state).start()
    port = peer.port
    assert port
    stopper = threading.Thread(target=peer.stop)
    stopper.start()
    stopper.join(15)
    assert not stopper.is_alive()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_a_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(IplosctlError, match=f"cannot listen on 127.0.0.1:{port}"):
            SandboxPeer(tmp_path, port=port).start()
    with SandboxPeer(tmp_path):  # the failed start left the state folder free
        pass


def test_serve_runs_in_the_calling_thread_until_stopped(state: Path) -> None:
    peer = SandboxPeer(state)
    ports: list[int] = []
    ready = threading.Event()

    def on_ready(port: int) -> None:
        ports.append(port)
        ready.set()

    foreground = threading.Thread(target=peer.serve, args=(on_ready,))
    foreground.start()
    assert ready.wait(10)
    _put(TransportSettings(url=f"amqp://127.0.0.1:{ports[0]}"), "q_async", "kept")
    peer.stop()
    foreground.join(15)
    assert not foreground.is_alive()
    with SandboxPeer(state) as again:  # the lock was released by serve's own thread
        assert again.depth("q_async") == 1


@pytest.mark.parametrize(
    ("address", "target", "source"),
    [
        ("/amq/queue/1_async", "1_async", "1_async"),
        ("/exchange/NS/1_async", "1_async", None),
        ("/queue/1_async", "1_async", "1_async"),
        ("1_async", "1_async", "1_async"),
        ("/amq/queue/../x", None, None),
        ("/topic/x", None, None),
        (None, None, None),
    ],
)
def test_addresses(address: str | None, target: str | None, source: str | None) -> None:
    assert queue_from_target(address) == target
    assert queue_from_source(address) == source
