"""`AmqpTransport`: NHN-addressed AMQP 1.0 sends and receives over one blocking connection.

Why it is shaped this way:

* One connection for the whole run, opened on first use (NHN asks for a
  cached connection; each `send` costs one broker round trip, not a login).
* `send` returns only after the broker settled the delivery ACCEPTED: for a
  durable message to a durable queue, accepted means persisted (STACK.md §2a).
* Transient failures are retried on a fresh connection with HNM's backoff
  (DOMAIN.md §5.8). A retry after a failure *before* settlement may deliver a
  message twice; NHN receivers de-duplicate on message id. Nothing is
  retried after ACCEPTED.
* Links are never closed one by one: RabbitMQ 3.10 answers a detach without
  `closed=true`, so closing a link hangs. Senders and receivers are cached and
  go away with the connection.
* RabbitMQ silently drops a message sent to `/amq/queue/Q` when Q does not
  exist. Without a namespace (that addressing), `send` therefore proves the
  queue exists once per connection with `check_queue`. With a namespace,
  messages go through the exchange, which also drops what it cannot route;
  there is no cheap check for that, because the sender normally may not read
  the recipient's queue.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from proton import Condition, Endpoint, Message, ProtonException, Timeout
from proton import Delivery as ProtonDelivery
from proton.handlers import IncomingMessageHandler, MessagingHandler
from proton.utils import BlockingReceiver, BlockingSender, ConnectionClosed, LinkDetached

try:  # proton's own encoder, used by _OnePassMessage
    from cproton import pn_message_encode as _encode
except ImportError:  # pragma: no cover - a proton build without the cffi module
    _encode = None

from iplosctl.errors import TransportError
from iplosctl.plugins import IncomingMessage, OutgoingMessage, TransportSettings

from .connection import (
    BrokerEndpoint,
    StrictBlockingConnection,
    check_plaintext,
    explain,
    open_connection,
    parse_endpoint,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: application property the transport sets just before each try (DOMAIN.md §5.3)
ENQUEUED_TIME = "enqueuedTimeUtc"
#: .NET's "s" format, which HNM uses for enqueuedTimeUtc
ENQUEUED_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
#: messages fetched ahead while receiving; unsettled ones go back to the queue at close
RECEIVE_WINDOW = 20
#: the receiving link's limit when the settings name none (core passes twice the profile's
#: message limit): a receipt is a few kB, so this only ever refuses junk
DEFAULT_MAX_MESSAGE_SIZE = 40 * 1024 * 1024
#: the AMQP condition an oversized delivery is rejected with
MESSAGE_SIZE_EXCEEDED = "amqp:link:message-size-exceeded"

_OUTCOMES = {
    ProtonDelivery.ACCEPTED: "ACCEPTED",
    ProtonDelivery.REJECTED: "REJECTED",
    ProtonDelivery.RELEASED: "RELEASED",
    ProtonDelivery.MODIFIED: "MODIFIED",
}


def send_address(queue: str, namespace: str | None) -> str:
    """Sender target (HNM `GetEntityName`, RabbitMQ dialect): the exchange when namespaced."""
    return f"/exchange/{namespace}/{queue}" if namespace else f"/amq/queue/{queue}"


def receive_address(queue: str) -> str:
    """Receiver source: always the queue itself, namespace or not."""
    return f"/amq/queue/{queue}"


def backoff_delay(
    failures: int, *, base: float, cap: float, jitter: float = 0.2, rng: Callable[[], float]
) -> float:
    """HNM's `(2^n − 1)·base` with ±20 % jitter, never above `cap` (DOMAIN.md §5.8)."""
    raw = min(cap, base * (2**failures - 1))
    return min(cap, raw * (1 - jitter + 2 * jitter * rng()))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _OnePassMessage(Message):
    """A proton Message that encodes a large body in one pass.

    proton's `Message.encode` starts from a 16-byte buffer and doubles it until the
    message fits: for a 20 MB part that is 22 encodes and about 40 MB of copying
    (15–40 ms per 22 MB message, measured here). The body's size is known, so the first
    buffer is made big enough. This leans on proton's private encoder; should a proton
    release change it, or the headers not fit, proton's own `encode` runs instead.
    """

    #: room for the header, properties and application properties around the body
    HEADROOM = 64 * 1024

    def encode(self) -> bytes:
        body = self.body
        if _encode is None or not isinstance(body, bytes) or len(body) < self.HEADROOM:
            return super().encode()
        try:
            self._pre_encode()
            err, data = _encode(self._msg, len(body) + self.HEADROOM)
        except AttributeError:  # a proton without these internals
            return super().encode()
        if err < 0:  # overflow or any other error: proton's encode handles and reports it
            return super().encode()
        return data  # a bytearray, as proton's own encode returns


class _Inbox(MessagingHandler):
    """Collects (message, delivery) pairs for one receiver, leaving them unsettled.

    Like proton's own `Fetcher`, but the caller settles each delivery itself in
    any order (proton's settles strictly first-in first-out). Incoming transfers
    are handled here rather than by proton's `IncomingMessageHandler`, which
    buffers a message whole, however large, before anyone sees it:

    * a delivery larger than `max_message_size` is drained frame by frame and
      thrown away as it arrives, then settled REJECTED with
      `amqp:link:message-size-exceeded` (on NHN's RabbitMQ a rejected message goes
      to the queue's dead-letter queue, `{herId}_dl`); `refused` says so in one line;
    * `progress` counts the bytes of deliveries still arriving, so a read does
      not end while a large receipt is in transit.
    """

    def __init__(
        self, connection: StrictBlockingConnection, queue: str = "", max_message_size: int = 0
    ) -> None:
        super().__init__(prefetch=0, auto_accept=False)
        # deliveries are ours alone (see on_delivery); settlement events still go to the rest
        self.handlers = [h for h in self.handlers if not isinstance(h, IncomingMessageHandler)]
        self.connection = connection
        self.queue = queue
        self.max_message_size = max_message_size or DEFAULT_MAX_MESSAGE_SIZE
        self.items: deque[tuple[Message, ProtonDelivery]] = deque()
        #: one line per message refused as too large (taken by `AmqpTransport.take_refusals`)
        self.refused: list[str] = []
        #: bytes received so far of deliveries not yet complete
        self.progress = 0
        #: bytes thrown away so far of the oversized delivery now arriving, else None. The
        #: transfers of one delivery on a link are never interleaved with another's, and
        #: proton's Delivery wrappers are not kept between events, so this is per link.
        self._dropped: int | None = None

    def on_delivery(self, event: Any) -> None:
        dlv = event.delivery
        if not dlv.link.is_receiver:
            return
        if dlv.aborted:
            self._dropped = None
            dlv.settle()
            return
        if not dlv.readable:
            return
        if self._dropped is not None or dlv.pending > self.max_message_size:
            dropped = (self._dropped or 0) + self._drain(dlv)
            self.progress += 1  # bytes are moving: keep the read alive until it ends
            if dlv.partial:
                self._dropped = dropped
                return
            self._dropped = None
            self._refuse(dlv, dropped)
            return
        if dlv.partial:
            self.progress += 1
            return
        message = Message()
        message.decode(dlv.link.recv(dlv.pending))
        dlv.link.advance()
        if dlv.link.state & Endpoint.LOCAL_CLOSED:
            dlv.update(ProtonDelivery.RELEASED)
            dlv.settle()
            return
        self.items.append((message, dlv))
        self.connection.container.yield_()  # wake the wait() loop

    @staticmethod
    def _drain(dlv: ProtonDelivery) -> int:
        """Read and forget what proton has buffered for `dlv`; the number of bytes."""
        total = 0
        while dlv.pending:
            chunk = dlv.link.recv(min(dlv.pending, 1 << 20))
            if not chunk:
                break
            total += len(chunk)
        return total

    def _refuse(self, dlv: ProtonDelivery, size: int) -> None:
        dlv.link.advance()
        dlv.local.condition = Condition(
            MESSAGE_SIZE_EXCEEDED, f"over this receiver's {self.max_message_size} byte limit"
        )
        dlv.update(ProtonDelivery.REJECTED)
        dlv.settle()
        dlv.link.flow(1)  # it took a credit and will never be popped: keep the window full
        self.refused.append(
            f"refused a message of {size:,} bytes on queue {self.queue}: over the "
            f"{self.max_message_size:,} byte limit for receipts (endpoint.maxMessageSizeBytes); "
            "it was not read, and the broker dead-letters it (NHN: queue {herId}_dl)"
        )
        self.connection.container.yield_()

    def on_link_error(self, event: Any) -> None:
        if event.link.state & Endpoint.LOCAL_ACTIVE:
            event.link.close()
        if not self.connection.closing:
            raise LinkDetached(event.link)

    def on_connection_error(self, event: Any) -> None:
        if not self.connection.closing:
            raise ConnectionClosed(event.connection)


class _Receiver:
    """A receiver link kept for the connection's lifetime, with its inbox."""

    def __init__(self, link: BlockingReceiver, inbox: _Inbox) -> None:
        self.link = link  # keep the wrapper alive: its __del__ unhooks the handler
        self.inbox = inbox


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _body_bytes(message: Message, queue: str) -> bytes:
    """A data section arrives as memoryview; an amqp-value may be str, bytes or nothing."""
    body = message.body
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TransportError(
        f"message {message.id} on queue {queue} has a {type(body).__name__} body, not bytes: "
        "it was not sent by an NHN client; remove it from the queue with the broker's tools"
    )


def incoming_message(queue: str, message: Message) -> IncomingMessage:
    """Proton's message as the plugin API's IncomingMessage: bytes body, string properties."""
    properties = {
        str(key): "" if value is None else str(value)
        for key, value in (message.properties or {}).items()
    }
    return IncomingMessage(
        queue=queue,
        message_id=_text(message.id),
        correlation_id=_text(message.correlation_id),
        subject=_text(message.subject),
        body=_body_bytes(message, queue),
        application_properties=properties,
        reply_to=_text(message.reply_to),
    )


class AmqpDelivery:
    """One received message, on the queue until `accept` (or redelivered after `release`).

    A delivery left unsettled goes back to the queue when the connection
    closes or the process dies: that is what makes receipts crash-safe.
    """

    def __init__(
        self,
        message: IncomingMessage,
        transport: AmqpTransport,
        delivery: ProtonDelivery,
        generation: int,
    ) -> None:
        self.message = message
        self._transport = transport
        self._delivery = delivery
        self._generation = generation
        self._outcome: str | None = None

    def accept(self) -> None:
        """Remove it from the queue: call only after its effect is recorded."""
        self._settle(ProtonDelivery.ACCEPTED)

    def release(self) -> None:
        """Give it back to the queue (RELEASED) for a later run."""
        self._settle(ProtonDelivery.RELEASED)

    def _settle(self, state: Any) -> None:
        name = _OUTCOMES[state]
        if self._outcome == name:
            return
        if self._outcome is not None:
            raise RuntimeError(f"delivery already settled {self._outcome}, cannot {name} it")
        self._transport._settle(self, self._delivery, state, self._generation)
        self._outcome = name

    def __repr__(self) -> str:
        return f"AmqpDelivery(queue={self.message.queue!r}, message_id={self.message.message_id!r})"


class AmqpTransport:
    """Sends protected messages to NHN queues and receives from the municipality's own."""

    name = "amqp"

    def __init__(
        self,
        settings: TransportSettings,
        *,
        max_attempts: int = 5,
        base_delay: float = 3.0,
        max_delay: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.settings = settings
        self.endpoint: BrokerEndpoint = parse_endpoint(settings)
        check_plaintext(self.endpoint, settings)
        if settings.username is None and settings.password is not None:
            raise TransportError(
                "a password is configured but no username: set the endpoint's username"
            )
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._rng = rng
        self._now = now
        self._conn: StrictBlockingConnection | None = None
        #: bumped on every reconnect, so deliveries from a dead connection are recognised
        self._generation = 0
        self._senders: dict[str, BlockingSender] = {}
        self._receivers: dict[str, _Receiver] = {}

    def __repr__(self) -> str:
        return (
            f"AmqpTransport(url={self.endpoint.url!r}, namespace={self.settings.namespace!r}, "
            f"username={self.settings.username!r})"
        )

    def __enter__(self) -> AmqpTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- public API ----------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> None:
        """Return only once the broker has ACCEPTED the message; raise TransportError."""
        action = f"sending message {message.message_id} to queue {message.to_queue}"

        def attempt() -> tuple[Any, Any]:
            sender = self._ready_sender(message.to_queue)
            delivery = sender.send(self._proton_message(message), error_states=[])
            return delivery.remote_state, delivery.remote.condition

        state, condition = self._retrying(action, attempt)
        if state != ProtonDelivery.ACCEPTED:
            outcome = _OUTCOMES.get(state, f"no outcome ({state})")
            reason = f": {condition.name}: {condition.description}" if condition else ""
            raise TransportError(
                f"the AMQP broker at {self.endpoint} answered {outcome} to {action}{reason}: "
                "the message was not queued; check the queue's limits with the broker's operator"
            )

    def prepare(self, to_queue: str) -> None:
        """Connect, attach the sender and prove the queue exists, as the first `send` would.

        apply calls this while it protects the first part, so the login and the
        broker round trips overlap with signing and encrypting.
        """
        self._retrying(
            f"connecting to send to queue {to_queue}", lambda: self._ready_sender(to_queue)
        )

    def try_prepare(self, to_queue: str) -> bool:
        """`prepare` with one try and no backoff: True if ready to send, False otherwise.

        apply calls it on a thread while it plans (issue 13: end to end); a failure is
        not reported here: apply then calls `prepare`, which retries and explains.
        """
        try:
            self._ready_sender(to_queue)
        except (ProtonException, OSError) as exc:
            log.debug("early connect to send to queue %s: %s", to_queue, type(exc).__name__)
            self._drop_connection()
            return False
        return True

    def check_queue(self, queue: str) -> None:
        """Prove `queue` exists by attaching a receiver with no credit (takes no message).

        Needed because RabbitMQ accepts and silently drops a message sent to
        `/amq/queue/Q` when Q is missing. Raises a TransportError naming the queue.
        """
        self._retrying(f"checking that queue {queue} exists", lambda: self._ensure_queue(queue))

    def receive(self, queue: str, *, timeout: float) -> Iterator[AmqpDelivery]:
        """Yield deliveries from `queue` until none arrives for `timeout` seconds.

        A message released during this call is not yielded again by it (the
        broker hands it straight back while there is credit); it stays
        unsettled and returns to the queue when the connection closes.
        """
        receiver = self._retrying(
            f"opening queue {queue} for receiving", lambda: self._ensure_queue(queue)
        )
        generation = self._generation
        action = f"receiving from queue {queue}"
        if receiver.link.credit < RECEIVE_WINDOW:
            receiver.link.flow(RECEIVE_WINDOW - receiver.link.credit)
        seen: set[tuple[str | None, str]] = set()
        while True:
            if generation != self._generation or self._conn is None:
                raise TransportError(
                    f"the connection to the AMQP broker at {self.endpoint} was reset while "
                    f"{action}: run again; unsettled messages are delivered again",
                    transient=True,
                )
            try:
                item = self._next(receiver, timeout, action)
            except (ProtonException, OSError) as exc:
                raise self._fail(exc, action) from exc
            if item is None:
                return
            message, delivery = item
            incoming = incoming_message(queue, message)
            key = (incoming.message_id, hashlib.sha256(incoming.body).hexdigest())
            if key in seen:
                continue  # released earlier in this call: leave it for a later run
            seen.add(key)
            yield AmqpDelivery(incoming, self, delivery, generation)

    def find_accepted(
        self, queue: str, message_ids: Collection[str], *, timeout: float = 2.0
    ) -> frozenset[str]:
        """Which of `message_ids` wait on `queue`: the broker accepted those (issue 13).

        Browses without taking: every delivery is released, and the connection is closed
        at the end, so the broker puts each message back on the queue unchanged. Raises
        TransportError when the queue cannot be read (a broker that lets the
        municipality only send to it); a message a consumer already took is not seen,
        which is why `abandon --never-sent` also needs the journal (decisions.py).
        """
        wanted, found = set(message_ids), set[str]()
        try:
            for delivery in self.receive(queue, timeout=timeout):
                if delivery.message.message_id in wanted:
                    found.add(str(delivery.message.message_id))
                delivery.release()
                if found == wanted:
                    break
        finally:
            self._drop_connection()  # nothing settled as taken: all of it stays queued
        return frozenset(found)

    def take_refusals(self) -> list[str]:
        """One line per message this transport refused since the last call (too large)."""
        lines: list[str] = []
        for receiver in self._receivers.values():
            lines += receiver.inbox.refused
            receiver.inbox.refused = []
        return lines

    def close(self) -> None:
        """Close the whole connection; the broker requeues every unsettled delivery."""
        self._drop_connection()

    # --- connection and links ------------------------------------------------------

    def _connection(self) -> StrictBlockingConnection:
        if self._conn is None:
            self._conn = open_connection(self.endpoint, self.settings)
            self._generation += 1
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._senders.clear()
        self._receivers.clear()
        if conn is None:
            return
        try:
            conn.close()
        except (ProtonException, OSError) as exc:  # already broken: nothing left to tell the broker
            log.debug("closing a failed AMQP connection: %s", type(exc).__name__)

    def _ready_sender(self, to_queue: str) -> BlockingSender:
        """The sender for `to_queue`; without a namespace, the queue is proven to exist first."""
        if self.settings.namespace is None:
            self._ensure_queue(to_queue)
        return self._sender(send_address(to_queue, self.settings.namespace))

    def _sender(self, address: str) -> BlockingSender:
        sender = self._senders.get(address)
        if sender is None:
            sender = self._connection().create_sender(address)
            self._senders[address] = sender
        return sender

    def _ensure_queue(self, queue: str) -> _Receiver:
        """The cached receiver for `queue`, attached with no credit if new (proves it exists)."""
        receiver = self._receivers.get(queue)
        if receiver is None:
            conn = self._connection()
            inbox = _Inbox(conn, queue, self.settings.max_message_size or 0)
            link = conn.create_receiver(receive_address(queue), credit=0, handler=inbox)
            # tell the broker too (AMQP attach max-message-size); RabbitMQ 3.10 ignores it,
            # so _Inbox enforces it whatever the sender does
            link.link.max_message_size = inbox.max_message_size
            receiver = self._receivers[queue] = _Receiver(link, inbox)
        return receiver

    def _next(
        self, receiver: _Receiver, timeout: float, action: str
    ) -> tuple[Message, ProtonDelivery] | None:
        inbox = receiver.inbox
        while not inbox.items:
            seen = inbox.progress
            try:
                self._connection().wait(lambda: bool(inbox.items), timeout=timeout, msg=action)
            except Timeout:
                if inbox.progress == seen:
                    return None  # nothing arrived, not even part of a message
                # a large message is still arriving (or being refused): wait on while it moves
        message, delivery = inbox.items.popleft()
        receiver.link.flow(1)  # keep the window full
        return message, delivery

    def _settle(
        self, handle: AmqpDelivery, delivery: ProtonDelivery, state: Any, generation: int
    ) -> None:
        action = f"settling message {handle.message.message_id} {_OUTCOMES[state]}"
        if generation != self._generation or self._conn is None:
            raise TransportError(
                f"the connection to the AMQP broker at {self.endpoint} closed before "
                f"{action}: the broker will deliver it again",
                transient=True,
            )
        conn = self._conn
        delivery.update(state)
        delivery.settle()
        try:
            # return once the disposition is on the wire, not just queued in proton
            transport = conn.conn.transport
            conn.wait(lambda: transport is None or transport.pending() <= 0, msg=action)
        except (ProtonException, OSError) as exc:
            raise self._fail(exc, action) from exc

    # --- messages, retries, errors -------------------------------------------------

    def _proton_message(self, message: OutgoingMessage) -> Message:
        """The AMQP message HNM would send (DOMAIN.md §5.3); stamped at each try."""
        properties = dict(message.application_properties)
        for key, value in properties.items():
            if not isinstance(value, str):
                raise TypeError(f"application property {key!r} must be a str, not {type(value)}")
        properties[ENQUEUED_TIME] = self._now().astimezone(UTC).strftime(ENQUEUED_TIME_FORMAT)
        return _OnePassMessage(
            body=bytes(message.body),
            inferred=True,  # bytes + inferred = one data section, as HNM sends
            durable=True,
            id=message.message_id,
            correlation_id=message.correlation_id,
            subject=message.subject,
            reply_to=message.reply_to,
            address=message.to_queue,  # AMQP `to`; routing uses the link target
            content_type=message.content_type,
            properties=properties,
        )

    def _fail(self, exc: BaseException, action: str) -> TransportError:
        """Explain a failure, scrub the password, and drop the (now unusable) connection."""
        error = explain(
            exc,
            self.endpoint,
            action=action,
            username=self.settings.username,
            timeout=self.settings.timeout_seconds,
        )
        self._drop_connection()
        return self._scrubbed(error)

    def _scrubbed(self, error: TransportError) -> TransportError:
        password = self.settings.password
        if password and password in error.message:  # belt and braces: proton never prints it
            return TransportError(error.message.replace(password, "***"), transient=error.transient)
        return error

    def _retrying(self, action: str, attempt: Callable[[], T]) -> T:
        """Run `attempt`, retrying transient failures on a new connection with backoff."""
        failures = 0
        while True:
            try:
                if self._conn is None:
                    self._connection()
                return attempt()
            except (ProtonException, OSError) as exc:
                error = self._fail(exc, action)
                cause = exc
            failures += 1
            if not error.transient or failures >= self._max_attempts:
                if failures > 1:
                    error = TransportError(
                        f"{error.message} (gave up after {failures} tries)",
                        transient=error.transient,
                    )
                raise error from cause
            delay = backoff_delay(
                failures, base=self._base_delay, cap=self._max_delay, rng=self._rng
            )
            log.warning("%s; trying again in %.1f s", error.message, delay)
            self._sleep(delay)
