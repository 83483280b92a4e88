"""The amqp transport plugin against the real RabbitMQ test broker (scripts/test-broker.sh).

Each broker test declares its own uniquely named durable queues and deletes
them afterwards, so tests can run beside other users of the broker. A small
TCP/TLS proxy in this file stands between client and broker where a test must
cut the connection or put TLS in front of it, so the shared broker's
configuration is never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from proton import Message

from iplosctl import plugins
from iplosctl.errors import TransportError
from iplosctl.plugins import OutgoingMessage, TlsSettings, TransportSettings
from iplosctl_transport_amqp import AmqpTransport, receive_address, send_address
from iplosctl_transport_amqp import transport as transport_module
from iplosctl_transport_amqp.connection import MAX_FRAME_SIZE
from iplosctl_transport_amqp.transport import _OnePassMessage, backoff_delay
from tests import broker

PLANTED = "Planted-Pa55word-9f3e1c"
BROKER_HOST_PORT = urllib.parse.urlsplit(broker.AMQP_URL).netloc
CONTENT_TYPE = "application/pkcs7-mime; smime-type=signed-and-enveloped-data"


# --- helpers -----------------------------------------------------------------------------


def settings(**changes: object) -> TransportSettings:
    base = TransportSettings(
        url=broker.AMQP_URL, username=broker.USER, password=broker.PASSWORD, timeout_seconds=20
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def transport(sleeps: list[float] | None = None, **changes: object) -> AmqpTransport:
    """A transport whose backoff sleeps are recorded instead of slept."""
    record = sleeps if sleeps is not None else []
    return AmqpTransport(settings(**changes), base_delay=0.01, sleep=record.append)


def outgoing(queue: str, body: bytes = b"\x00\x01 protected \xff", **changes: object):
    base = OutgoingMessage(
        message_id=str(uuid.uuid4()),
        correlation_id=str(uuid.uuid4()),
        subject="KPR_IPL",
        body=body,
        to_queue=queue,
        reply_to="8094867_async",
        application_properties={
            "fromHerId": "8094867",
            "toHerId": "8117845",
            "applicationTimeStamp": "2024-03-01T10:11:12Z",
            "cpaId": "5b6c1e1e-6f3a-4c43-9a0c-1f0d9f2b7a11",
        },
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def wait_for_depth(queue: str, expected: int) -> int:
    """The management API's counts lag by its stats interval (5 s): poll until they agree."""
    depth = broker.queue_depth(queue)
    for _ in range(80):
        if depth == expected:
            break
        time.sleep(0.25)
        depth = broker.queue_depth(queue)
    return depth


def raw_receive(queue: str, count: int) -> list[Message]:
    """Read messages with plain proton, to see the AMQP fields IncomingMessage leaves out."""
    conn = broker.connect()
    try:
        receiver = conn.create_receiver(receive_address(queue), credit=count)
        out = []
        for _ in range(count):
            out.append(receiver.receive(timeout=10))
            receiver.accept()
        return out
    finally:
        conn.close()


def raw_send(queue: str, message: Message) -> None:
    conn = broker.connect()
    try:
        conn.create_sender(f"/amq/queue/{queue}").send(message)
    finally:
        conn.close()


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"iplosctl-test-{uuid.uuid4().hex[:12]}"
    broker.declare_queue(name)
    yield name
    broker.delete_queue(name)


@pytest.fixture
def exchange(queue: str) -> Iterator[str]:
    """A direct exchange bound to `queue` by its name, as NHN's namespace exchange routes."""
    name = f"iplosctl-test-ns-{uuid.uuid4().hex[:12]}"
    path = urllib.parse.quote(name, safe="")
    broker.management("PUT", f"/exchanges/%2F/{path}", {"type": "direct", "durable": True})
    broker.management(  # RabbitMQ creates bindings with POST (PUT answers 405)
        "POST",
        f"/bindings/%2F/e/{path}/q/{urllib.parse.quote(queue, safe='')}",
        {"routing_key": queue},
    )
    yield name
    broker.management("DELETE", f"/exchanges/%2F/{path}")


def all_text(error: BaseException) -> str:
    """Message, repr and every chained cause: everything a crash log could show."""
    parts = []
    seen: BaseException | None = error
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# --- a proxy in front of the broker: cut connections, add TLS ---------------------------


class Proxy:
    """Forwards TCP (optionally TLS-terminated) to the broker; `cut()` kills live connections."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        host, _, port = BROKER_HOST_PORT.rpartition(":")
        self.upstream = (host, int(port or 5672))
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.context is not None:
                client = self.context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self.upstream)
        except (OSError, ssl.SSLError):
            client.close()
            return
        with self.lock:
            self.sockets += [client, upstream]
        peers = {client: upstream, upstream: client}
        # one thread per connection: an SSLSocket must not be read and written concurrently
        try:
            while True:
                if isinstance(client, ssl.SSLSocket) and client.pending():
                    ready = [client]
                else:
                    ready, _, _ = select.select(list(peers), [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        with self.lock:
            victims, self.sockets = self.sockets, []
        for sock in victims:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server_cert: Path
    server_key: Path


def _make_pki(folder: Path) -> Pki:
    """A throwaway CA and a server certificate for DNS name `localhost` only (no IP SAN)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iplosctl test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy()
    yield p
    p.close()


@pytest.fixture
def tls_proxy(pki: Pki) -> Iterator[Proxy]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # NHN: TLS 1.2 and 1.3 only
    context.load_cert_chain(pki.server_cert, pki.server_key)
    p = Proxy(context)
    yield p
    p.close()


# --- no broker needed ------------------------------------------------------------------


def test_plugin_is_registered_under_its_name() -> None:
    assert plugins.load("transport", "amqp") is AmqpTransport
    assert AmqpTransport.name == "amqp"


def test_nhn_addresses() -> None:
    # DOMAIN.md §5.2: sender through the namespace exchange, receiver from the queue
    assert send_address("8117845_async", "NHNTestServiceBus") == (
        "/exchange/NHNTestServiceBus/8117845_async"
    )
    assert send_address("8117845_async", None) == "/amq/queue/8117845_async"
    assert receive_address("8094867_async") == "/amq/queue/8094867_async"


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    low = [backoff_delay(n, base=3.0, cap=30.0, rng=lambda: 0.0) for n in range(1, 6)]
    mid = [backoff_delay(n, base=3.0, cap=30.0, rng=lambda: 0.5) for n in range(1, 6)]
    high = [backoff_delay(n, base=3.0, cap=30.0, rng=lambda: 1.0) for n in range(1, 6)]
    assert mid == [3.0, 9.0, 21.0, 30.0, 30.0]  # (2^n − 1)·3 s, capped at 30 s
    assert low[0] == pytest.approx(2.4) and high[0] == pytest.approx(3.6)  # ±20 %
    assert max(high) == 30.0


def test_url_with_credentials_is_refused_without_echoing_it() -> None:
    with pytest.raises(TransportError) as caught:
        AmqpTransport(TransportSettings(url=f"amqps://kommune:{PLANTED}@sb.test.nhn.no:5671"))
    assert "must not contain a username or password" in caught.value.message
    assert PLANTED not in all_text(caught.value)


@pytest.mark.parametrize(
    ("url", "namespace", "expected"),
    [
        ("http://sb.test.nhn.no", None, "must start with amqp:// or amqps://"),
        ("amqps://sb.test.nhn.no:5671/NHNTestServiceBus", None, "set the namespace"),
        ("amqps://sb.test.nhn.no:5671/NHNTestServiceBus", "NHNTESTServiceBus", "case-sensitive"),
        ("amqp://:5672", None, "names no host"),
    ],
)
def test_bad_endpoint_urls_are_explained(url: str, namespace: str | None, expected: str) -> None:
    with pytest.raises(TransportError, match=re.escape(expected)):
        AmqpTransport(TransportSettings(url=url, namespace=namespace))


def test_url_path_equal_to_the_namespace_is_accepted() -> None:
    t = AmqpTransport(
        TransportSettings(
            url="amqps://sb.test.nhn.no/NHNTestServiceBus", namespace="NHNTestServiceBus"
        )
    )
    assert t.endpoint.url == "amqps://sb.test.nhn.no:5671"


def test_repr_never_shows_the_password() -> None:
    s = settings(password=PLANTED)
    assert PLANTED not in repr(s)
    assert PLANTED not in repr(AmqpTransport(s))


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    t = AmqpTransport(
        settings(url="amqps://localhost:5671", tls=TlsSettings(ca_file=tmp_path / "nope.pem"))
    )
    with pytest.raises(TransportError, match=r"tls\.ca_file .*nope\.pem does not exist"):
        t.check_queue("anything")


def test_unknown_host_fails_at_once_and_clearly() -> None:
    sleeps: list[float] = []
    t = transport(sleeps, url="amqps://no-such-host.invalid:5671", password=PLANTED)
    with pytest.raises(TransportError) as caught:
        t.check_queue("anything")
    assert "cannot resolve host no-such-host.invalid" in caught.value.message
    assert not caught.value.transient
    assert sleeps == []


def test_connection_refused_is_retried_then_transient(caplog: pytest.LogCaptureFixture) -> None:
    sleeps: list[float] = []
    t = AmqpTransport(
        settings(url="amqp://127.0.0.1:1", password=PLANTED),
        base_delay=0.01,
        max_delay=0.02,
        sleep=sleeps.append,
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(TransportError) as caught:
        t.send(outgoing("8117845_async"))
    error = caught.value
    assert error.transient
    assert "127.0.0.1:1" in error.message and "connection refused" in error.message
    assert "gave up after 5 tries" in error.message
    assert len(sleeps) == 4  # five tries in all, a backoff between each
    assert all(0 < s <= 0.02 for s in sleeps)
    assert PLANTED not in all_text(error)
    assert PLANTED not in caplog.text


def test_number_of_tries_is_configurable() -> None:
    sleeps: list[float] = []
    t = AmqpTransport(
        settings(url="amqp://127.0.0.1:1"), max_attempts=2, base_delay=0.0, sleep=sleeps.append
    )
    with pytest.raises(TransportError, match="gave up after 2 tries"):
        t.check_queue("anything")
    assert sleeps == [0.0]


def test_one_pass_encoding_is_what_proton_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(msg: object, size: int) -> object:
        calls.append(size)
        return encoder(msg, size)

    encoder = transport_module._encode
    assert encoder is not None
    monkeypatch.setattr(transport_module, "_encode", counted)
    fields = {"durable": True, "id": "m-1", "subject": "KPR_IPL", "inferred": True}
    big = os.urandom(300_000)
    got = _OnePassMessage(body=big, properties={"fromHerId": "8094867"}, **fields).encode()
    assert bytes(got) == bytes(
        Message(body=big, properties={"fromHerId": "8094867"}, **fields).encode()
    )
    assert len(calls) == 1  # one pass, not proton's 16-byte start doubled fifteen times
    # headers bigger than the headroom, and small bodies: proton's own encode, same bytes
    huge = {"note": "x" * (2 * _OnePassMessage.HEADROOM)}
    for body, properties in ((big, huge), (b"small", {"fromHerId": "8094867"})):
        mine = _OnePassMessage(body=body, properties=properties, **fields).encode()
        theirs = Message(body=body, properties=properties, **fields).encode()
        assert bytes(mine) == bytes(theirs)


# --- against the real broker -------------------------------------------------------------


@pytest.mark.broker
def test_round_trip_keeps_every_property(queue: str) -> None:
    stamp = dt.datetime(2024, 3, 1, 10, 11, 13, tzinfo=dt.UTC)
    message = outgoing(queue, body=bytes(range(256)) * 40)
    with AmqpTransport(settings(), now=lambda: stamp) as t:
        t.send(message)
        t.send(replace(message, message_id=str(uuid.uuid4())))

    raw = raw_receive(queue, 1)[0]
    assert raw.id == message.message_id
    assert raw.correlation_id == message.correlation_id
    assert raw.subject == "KPR_IPL"
    assert raw.reply_to == "8094867_async"
    assert str(raw.content_type) == CONTENT_TYPE
    assert raw.address == queue  # AMQP `to`
    assert raw.durable is True
    assert isinstance(raw.body, memoryview)  # one data section, not an amqp-value
    assert bytes(raw.body) == message.body
    assert raw.properties == {
        **message.application_properties,
        "enqueuedTimeUtc": "2024-03-01T10:11:13",
    }
    assert all(isinstance(v, str) for v in raw.properties.values())

    with AmqpTransport(settings()) as t:
        deliveries = list(t.receive(queue, timeout=1))
        assert len(deliveries) == 1
        got = deliveries[0].message
        assert got.queue == queue
        assert got.message_id != message.message_id  # the second one; the first was read raw
        assert got.correlation_id == message.correlation_id
        assert got.subject == message.subject
        assert got.body == message.body and type(got.body) is bytes
        assert dict(got.application_properties) == {
            **message.application_properties,
            "enqueuedTimeUtc": "2024-03-01T10:11:13",
        }
        deliveries[0].accept()
    with AmqpTransport(settings()) as t:
        assert list(t.receive(queue, timeout=0.5)) == []  # accepted means gone


@pytest.mark.broker
def test_enqueued_time_is_utc_in_dotnet_s_format(queue: str) -> None:
    with AmqpTransport(settings()) as t:
        t.send(outgoing(queue))
    stamp = raw_receive(queue, 1)[0].properties["enqueuedTimeUtc"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", stamp)
    sent = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    assert abs(dt.datetime.now(dt.UTC) - sent) < dt.timedelta(hours=1)  # UTC, not local time


@pytest.mark.broker
def test_foreign_messages_are_converted_to_strings_and_bytes(queue: str) -> None:
    raw_send(
        queue,
        Message(
            id=12345, body="plain text", properties={"toHerId": 8117845, "flag": True, "n": None}
        ),
    )
    with AmqpTransport(settings()) as t:
        (delivery,) = list(t.receive(queue, timeout=1))
        assert delivery.message.message_id == "12345"
        assert delivery.message.body == b"plain text"
        assert delivery.message.application_properties == {
            "toHerId": "8117845",
            "flag": "True",
            "n": "",
        }
        assert delivery.message.correlation_id is None
        delivery.accept()


@pytest.mark.broker
def test_namespace_sends_through_the_exchange(queue: str, exchange: str) -> None:
    message = outgoing(queue)
    with AmqpTransport(settings(namespace=exchange)) as t:
        t.send(message)
        (delivery,) = list(t.receive(queue, timeout=1))
        assert delivery.message.message_id == message.message_id
        assert delivery.message.body == message.body
        delivery.accept()


@pytest.mark.broker
def test_wrong_namespace_fails_clearly_not_by_timeout(queue: str) -> None:
    sleeps: list[float] = []
    t = transport(sleeps, namespace="NoSuchNamespace", timeout_seconds=60)
    with t, pytest.raises(TransportError) as caught:
        t.send(outgoing(queue))
    assert "NoSuchNamespace" in caught.value.message
    assert "check the namespace" in caught.value.message
    assert not caught.value.transient and sleeps == []


@pytest.mark.broker
def test_accept_removes_and_unsettled_return_at_close(queue: str) -> None:
    first, second = outgoing(queue), outgoing(queue)
    with AmqpTransport(settings()) as t:
        t.send(first)
        t.send(second)
        deliveries = {d.message.message_id: d for d in t.receive(queue, timeout=1)}
        assert set(deliveries) == {first.message_id, second.message_id}
        deliveries[first.message_id].accept()
        # the second is neither accepted nor released: a crash before recording it
    assert wait_for_depth(queue, 1) == 1
    with AmqpTransport(settings()) as t:
        again = list(t.receive(queue, timeout=1))
        assert [d.message.message_id for d in again] == [second.message_id]
        again[0].accept()
    assert wait_for_depth(queue, 0) == 0
    with AmqpTransport(settings()) as t:
        assert list(t.receive(queue, timeout=0.5)) == []


@pytest.mark.broker
def test_release_requeues_without_looping_in_one_call(queue: str) -> None:
    message = outgoing(queue)
    with AmqpTransport(settings()) as t:
        t.send(message)
        seen = []
        for delivery in t.receive(queue, timeout=1):
            seen.append(delivery.message.message_id)
            delivery.release()
            if len(seen) > 3:
                break  # the broker hands a released message straight back: must not loop
        assert seen == [message.message_id]  # handed back, but not yielded twice
    assert wait_for_depth(queue, 1) == 1
    with AmqpTransport(settings()) as t:
        (delivery,) = list(t.receive(queue, timeout=1))
        assert delivery.message.message_id == message.message_id
        delivery.accept()
        with pytest.raises(RuntimeError, match="already settled ACCEPTED"):
            delivery.release()
    assert wait_for_depth(queue, 0) == 0


@pytest.mark.broker
def test_settling_after_close_is_a_clear_transient_error(queue: str) -> None:
    with AmqpTransport(settings()) as t:
        t.send(outgoing(queue))
        (delivery,) = list(t.receive(queue, timeout=1))
    with pytest.raises(TransportError, match="will deliver it again") as caught:
        delivery.accept()
    assert caught.value.transient
    assert wait_for_depth(queue, 1) == 1


@pytest.mark.broker
def test_unknown_queue_fails_at_once_not_by_timeout() -> None:
    missing = f"iplosctl-missing-{uuid.uuid4().hex[:12]}"
    sleeps: list[float] = []
    with transport(sleeps, timeout_seconds=60) as t:
        with pytest.raises(TransportError) as sending:
            t.send(outgoing(missing))  # RabbitMQ would drop it silently: checked first
        with pytest.raises(TransportError) as receiving:
            list(t.receive(missing, timeout=1))
        with pytest.raises(TransportError) as checking:
            t.check_queue(missing)
        with pytest.raises(TransportError) as preparing:
            t.prepare(missing)
    for caught in (sending, receiving, checking, preparing):
        assert f"no queue '{missing}'" in caught.value.message
        assert "Adresseregisteret" in caught.value.message
        assert "no answer" not in caught.value.message
        assert not caught.value.transient
    assert sleeps == []


@pytest.mark.broker
def test_connection_survives_a_failed_send(queue: str) -> None:
    with AmqpTransport(settings()) as t:
        with pytest.raises(TransportError):
            t.send(outgoing(f"iplosctl-missing-{uuid.uuid4().hex[:12]}"))
        t.send(outgoing(queue))  # reconnects after the broker ended the session
        t.check_queue(queue)
    assert len(raw_receive(queue, 1)) == 1


@pytest.mark.broker
def test_wrong_password_fails_at_once_without_retry(
    queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    sleeps: list[float] = []
    t = transport(sleeps, password=PLANTED)
    with caplog.at_level(logging.DEBUG), t, pytest.raises(TransportError) as caught:
        t.send(outgoing(queue))
    error = caught.value
    assert not error.transient
    assert sleeps == []
    assert f"refused the login for user '{broker.USER}'" in error.message
    assert "check the username and the credential secret" in error.message
    assert PLANTED not in all_text(error)
    assert PLANTED not in caplog.text


@pytest.mark.broker
def test_lost_connection_is_retried_on_a_new_one(queue: str, proxy: Proxy) -> None:
    sleeps: list[float] = []
    ticks = iter(dt.datetime(2024, 1, 1, 0, 0, s, tzinfo=dt.UTC) for s in range(60))
    t = AmqpTransport(
        settings(url=f"amqp://127.0.0.1:{proxy.port}"),
        base_delay=0.01,
        sleep=sleeps.append,
        now=lambda: next(ticks),
    )
    with t:
        t.send(outgoing(queue))  # try 1 of message 1: 00:00:00
        proxy.cut()
        t.send(outgoing(queue))  # fails on the dead connection, then succeeds: 00:00:01, :02
    assert len(sleeps) == 1
    stamps = sorted(m.properties["enqueuedTimeUtc"] for m in raw_receive(queue, 2))
    assert stamps == ["2024-01-01T00:00:00", "2024-01-01T00:00:02"]  # stamped per try


@pytest.mark.broker
def test_tls_with_the_broker_ca(queue: str, tls_proxy: Proxy, pki: Pki) -> None:
    tls = TlsSettings(ca_file=pki.ca_file)
    message = outgoing(queue)
    with AmqpTransport(settings(url=f"amqps://localhost:{tls_proxy.port}", tls=tls)) as t:
        t.send(message)
        (delivery,) = list(t.receive(queue, timeout=1))
        assert delivery.message.body == message.body
        delivery.accept()


@pytest.mark.broker
def test_tls_with_an_untrusted_certificate_fails_clearly(tls_proxy: Proxy) -> None:
    sleeps: list[float] = []
    t = transport(sleeps, url=f"amqps://localhost:{tls_proxy.port}")  # system CAs only
    with t, pytest.raises(TransportError) as caught:
        t.check_queue("anything")
    assert "TLS handshake" in caught.value.message and "certificate verify failed" in (
        caught.value.message
    )
    assert not caught.value.transient and sleeps == []


@pytest.mark.broker
@pytest.mark.parametrize(("verify_peer_name", "works"), [(True, False), (False, True)])
def test_tls_peer_name_check(
    queue: str, tls_proxy: Proxy, pki: Pki, verify_peer_name: bool, works: bool
) -> None:
    # the certificate names only DNS:localhost, so 127.0.0.1 passes only without the name check
    tls = TlsSettings(ca_file=pki.ca_file, verify_peer_name=verify_peer_name)
    with transport(url=f"amqps://127.0.0.1:{tls_proxy.port}", tls=tls) as t:
        if works:
            t.check_queue(queue)
        else:
            with pytest.raises(TransportError, match="TLS handshake"):
                t.check_queue(queue)


@pytest.mark.broker
def test_one_connection_is_reused_for_all_sends(queue: str) -> None:
    with AmqpTransport(settings()) as t:
        t.send(outgoing(queue))
        first = t._conn
        for _ in range(3):
            t.send(outgoing(queue))
        assert t._conn is first
    assert len(raw_receive(queue, 4)) == 4


@pytest.mark.broker
def test_prepare_opens_the_connection_that_send_then_uses(queue: str) -> None:
    with AmqpTransport(settings()) as t:
        t.prepare(queue)
        prepared = t._conn
        assert prepared is not None
        # RabbitMQ agrees to the larger frames: fewer frames per part
        assert prepared.conn.transport.remote_max_frame_size == MAX_FRAME_SIZE
        t.send(outgoing(queue, body=os.urandom(3 * MAX_FRAME_SIZE + 17)))
        assert t._conn is prepared
    assert len(raw_receive(queue, 1)) == 1
