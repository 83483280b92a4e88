"""A tiny AMQP 1.0 peer on loopback that plays NHN's bus and KPR at once, for rehearsals.

Why not the proton example broker (STACK.md §2c): it pops a message when it sends it, so
release, reject and a dropped connection lose messages, and it keeps nothing on disk. The
receipts flow depends on exactly those: a delivery stays on the queue until `accept`, and
an AppRec produced while `apply` ran must still be there when a later `receipts` process
starts its own peer on the same state folder. So here:

* every queued message is a file under `STATE/queues/<queue>/` (written to a temp file,
  then renamed), loaded again at start;
* a delivery is in flight until the client settles it: accepted or rejected removes it
  (and its file); released, modified, settled without an outcome, or left unsettled when
  the link or connection goes away puts it back in order;
* messages sent to the register's queue are not queued but handed to the
  `SandboxRegister`; its replies are stored (with their due time) before the incoming
  message is accepted, and only then is it remembered as answered, so a crash in between
  means a redelivery and an answer, never silence.

Addresses as RabbitMQ's AMQP 1.0 plugin takes them (DOMAIN.md §5.2): senders may target
`/amq/queue/Q`, `/exchange/NS/Q`, `/queue/Q` or a bare `Q`; receivers read
`/amq/queue/Q`, `/queue/Q` or `Q` (`queues.py` holds the names and the files). Queues
spring into existence when named. Login is SASL ANONYMOUS on 127.0.0.1 only, which is
what the AMQP transport does without a username.

All proton objects live on the peer's own thread; other threads talk to it through an
EventInjector (`stop`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as LockTimeout
from proton import Condition, Delivery, Endpoint, Link, Message
from proton.handlers import MessagingHandler
from proton.reactor import ApplicationEvent, Container, EventInjector

from iplosctl.errors import IplosctlError
from iplosctl.plugins import IncomingMessage, OutgoingMessage
from iplosctl.sandbox.queues import Entry, QueueStore, queue_from_source, queue_from_target
from iplosctl.sandbox.register import Answer, SandboxRegister

__all__ = ["QueueStore", "SandboxPeer", "queue_from_source", "queue_from_target"]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: credit given to each client sender link
INCOMING_CREDIT = 50
#: how often held (delayed) replies are checked
TICK_SECONDS = 0.2
#: how long `stop` lets clients answer the close before the loop ends anyway
CLOSE_GRACE_SECONDS = 1.0
#: how long a second peer waits for the state folder before giving up
LOCK_TIMEOUT_SECONDS = 5.0


# --- the AMQP side ---------------------------------------------------------------------------


def _to_proton(message: OutgoingMessage) -> Message:
    """An OutgoingMessage as HNM would put it on the wire (DOMAIN.md §5.3)."""
    properties = dict(message.application_properties)
    properties.setdefault("enqueuedTimeUtc", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return Message(
        body=bytes(message.body),
        inferred=True,  # bytes + inferred = one data section
        durable=True,
        id=message.message_id,
        correlation_id=message.correlation_id,
        subject=message.subject,
        reply_to=message.reply_to,
        address=message.to_queue,
        content_type=message.content_type,
        properties=properties,
    )


def _incoming(queue: str, message: Message) -> IncomingMessage:
    body = message.body
    if body is None:
        data = b""
    elif isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = repr(body).encode("utf-8")  # not an NHN message: the register will refuse it
    return IncomingMessage(
        queue=queue,
        message_id=None if message.id is None else str(message.id),
        correlation_id=None if message.correlation_id is None else str(message.correlation_id),
        subject=None if message.subject is None else str(message.subject),
        body=data,
        application_properties=_properties(message),
        reply_to=None if message.reply_to is None else str(message.reply_to),
    )


def _properties(message: Message) -> dict[str, str]:
    """Application properties as strings; proton types them loosely."""
    found: dict[Any, Any] = message.properties or {}
    return {str(k): "" if v is None else str(v) for k, v in found.items()}


def _tag(delivery: Delivery) -> str:
    tag: object = delivery.tag  # typed str, yet bytes on the wire from some senders
    return tag.decode("ascii", "replace") if isinstance(tag, bytes) else str(tag)


class _Handler(MessagingHandler):
    """Proton callbacks; everything here runs on the peer's thread."""

    def __init__(self, peer: SandboxPeer) -> None:
        super().__init__(prefetch=INCOMING_CREDIT, auto_accept=False, auto_settle=True)
        self.peer = peer
        self.store = peer.store
        self.container: Container | None = None
        self.acceptor: Any = None
        self.consumers: dict[str, list[Link]] = {}
        self.link_queue: dict[Link, str | None] = {}
        self.refused: dict[Link, str] = {}
        self.inflight: dict[str, tuple[Entry, Link]] = {}
        self.connections: set[Any] = set()
        self.stopping = False
        self.timer: Any = None

    # --- lifecycle ---------------------------------------------------------------------------

    def on_start(self, event: Any) -> None:
        self.container = event.container
        self.container.selectable(self.peer._injector)
        try:
            self.acceptor = event.container.listen(f"{self.peer.host}:{self.peer.requested_port}")
        except OSError as exc:
            self.peer._started(None, exc)
            self._finish()
            return
        # proton has no public way to ask an Acceptor for its port; with port 0 we must know
        # which one the OS picked, so read it from the listening socket.
        port = int(self.acceptor._selectable.getsockname()[1])
        self.timer = event.container.schedule(TICK_SECONDS, self)
        self.peer._started(port, None)

    def on_timer_task(self, event: Any) -> None:
        if self.stopping:
            self._finish()
            return
        for queue in list(self.consumers):
            self._dispatch(queue)
        self.timer = event.container.schedule(TICK_SECONDS, self)

    def on_peer_stop(self, event: Any) -> None:
        """Close the listener and every connection, then end the loop."""
        self.stopping = True
        if self.acceptor is not None:
            self.acceptor.close()
        self.peer._injector.close()
        for conn in list(self.connections):
            if conn.state & Endpoint.LOCAL_ACTIVE:
                conn.close()
        if self.timer is not None:
            self.timer.cancel()
        if not self.connections:
            self._finish()
        else:  # clients get a moment to answer the close; then the loop ends regardless
            assert self.container is not None  # set by on_start, before any stop
            self.timer = self.container.schedule(CLOSE_GRACE_SECONDS, self)

    def _finish(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for tag in list(self.inflight):
            self.store.requeue(self.inflight.pop(tag)[0])
        if self.container is not None:
            self.container.stop()

    # --- connections and links ---------------------------------------------------------------

    def on_connection_opening(self, event: Any) -> None:
        self.connections.add(event.connection)

    def on_link_opening(self, event: Any) -> None:
        link = event.link
        if link.is_sender:  # the client reads from us
            address = link.remote_source.address
            queue = queue_from_source(address)
        else:  # the client writes to us; no target means each message's `to` decides
            address = link.remote_target.address
            queue = queue_from_target(address) if address else None
            if address and queue is None:
                self.refused[link] = f"cannot send to {address!r}: not a queue address"
        if link.is_sender and queue is None:
            self.refused[link] = f"cannot read from {address!r}: not a queue address"
        if link in self.refused:
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        self.link_queue[link] = queue
        if link.is_sender and queue is not None:
            self.consumers.setdefault(queue, []).append(link)

    def on_link_opened(self, event: Any) -> None:
        reason = self.refused.pop(event.link, None)
        if reason is not None:
            event.link.condition = Condition("amqp:not-found", reason)
            event.link.close()

    def on_link_remote_close(self, event: Any) -> None:
        self._drop_link(event.link)

    def on_session_remote_close(self, event: Any) -> None:
        for link in [lk for lk in self.link_queue if lk.session == event.session]:
            self._drop_link(link)

    def on_connection_remote_close(self, event: Any) -> None:
        self._drop_connection(event.connection)

    def on_transport_closed(self, event: Any) -> None:
        self._drop_connection(event.connection)

    def _drop_link(self, link: Link) -> None:
        queue = self.link_queue.pop(link, None)
        self.refused.pop(link, None)
        if queue is not None and link in self.consumers.get(queue, []):
            self.consumers[queue].remove(link)
        for tag, (entry, holder) in list(self.inflight.items()):
            if holder == link:
                del self.inflight[tag]
                self.store.requeue(entry)
        if queue is not None:
            self._dispatch(queue)

    def _drop_connection(self, conn: Any) -> None:
        if conn is None:
            return
        for link in [lk for lk in self.link_queue if lk.connection == conn]:
            self._drop_link(link)
        for tag, (entry, holder) in list(self.inflight.items()):
            if holder.connection == conn:
                del self.inflight[tag]
                self.store.requeue(entry)
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self._finish()

    # --- messages in -------------------------------------------------------------------------

    def on_message(self, event: Any) -> None:
        delivery, message = event.delivery, event.message
        queue = self.link_queue.get(event.link) or queue_from_target(message.address)
        if queue is None:
            delivery.local.condition = Condition(
                "amqp:not-found", f"no queue in address {message.address!r}"
            )
            self.reject(delivery)
            return
        register = self.peer.register
        try:
            if register is not None and queue == register.queue:
                self._answer(register, queue, message)
            else:
                self.store.put(queue, message.encode())
        except IplosctlError as exc:
            log.error("could not take a message for queue %s: %s", queue, exc.message)
            delivery.local.condition = Condition("amqp:internal-error", exc.message)
            self.reject(delivery)
            return
        except Exception as exc:  # a bug must not kill the loop; the sender hears of it
            log.exception("could not take a message for queue %s", queue)
            delivery.local.condition = Condition(
                "amqp:internal-error", f"sandbox register failed: {type(exc).__name__}"
            )
            self.reject(delivery)
            return
        self.accept(delivery)
        if register is None or queue != register.queue:
            self._dispatch(queue)

    def _answer(self, register: SandboxRegister, queue: str, message: Message) -> None:
        now = self.peer.clock()
        answer = register.decide(_incoming(queue, message), dt.datetime.fromtimestamp(now, dt.UTC))
        touched = set()
        for reply in answer.replies:
            due = reply.due.timestamp() if reply.due is not None else 0.0
            self.store.put(reply.queue, _to_proton(reply.message).encode(), due)
            touched.add(reply.queue)
        register.remember(answer)  # only now: the replies are on disk
        if self.peer.on_answer is not None:
            self.peer.on_answer(None if message.id is None else str(message.id), answer)
        for name in touched:
            self._dispatch(name)

    # --- messages out ------------------------------------------------------------------------

    def on_sendable(self, event: Any) -> None:
        queue = self.link_queue.get(event.link)
        if queue is not None:
            self._dispatch(queue)

    def _dispatch(self, queue: str) -> None:
        links = self.consumers.get(queue, [])
        now = self.peer.clock()
        while True:
            ready = [
                lk
                for lk in links
                if lk.credit > 0
                and lk.state & Endpoint.LOCAL_ACTIVE
                and lk.state & Endpoint.REMOTE_ACTIVE
            ]
            if not ready:
                return
            entry = self.store.take(queue, now)
            if entry is None:
                return
            link = max(ready, key=lambda lk: lk.credit)  # spread over consumers
            message = Message()
            message.decode(entry.data)
            tag = uuid.uuid4().hex
            message.send(link, tag=tag)  # type: ignore[arg-type]  # a sender Link
            self.inflight[tag] = (entry, link)

    def on_accepted(self, event: Any) -> None:
        self._settled(event.delivery, remove=True)

    def on_rejected(self, event: Any) -> None:
        # RabbitMQ discards (or dead-letters) a rejected message; there is no DLQ here.
        self._settled(event.delivery, remove=True)

    def on_released(self, event: Any) -> None:  # RELEASED and MODIFIED
        self._settled(event.delivery, remove=False)

    def on_settled(self, event: Any) -> None:
        # settled without an outcome we acted on: treat as released
        self._settled(event.delivery, remove=False)

    def _settled(self, delivery: Delivery, *, remove: bool) -> None:
        item = self.inflight.pop(_tag(delivery), None)
        if item is None:
            return
        entry, _link = item
        if remove:
            self.store.done(entry)
        else:
            self.store.requeue(entry)
            self._dispatch(entry.queue)


# --- the public face -------------------------------------------------------------------------


class SandboxPeer:
    """The peer on 127.0.0.1, in a background thread (`start`) or the foreground (`serve`).

    One peer per state folder at a time (an OS lock says so): two would hand out the same
    stored messages twice.
    """

    def __init__(
        self,
        state_dir: Path | None,
        register: SandboxRegister | None = None,
        *,
        port: int = 0,
        host: str = LOOPBACK,
        clock: Callable[[], float] = time.time,
        on_answer: Callable[[str | None, Answer], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else None
        #: called on the peer's thread after each message to the register (message id, answer)
        self.on_answer = on_answer
        self.register = register
        self.host = host
        self.requested_port = port
        self.clock = clock
        self.port: int | None = None
        self.store: QueueStore = QueueStore(None)
        self._injector = EventInjector()
        self._ready = threading.Event()
        self._running = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock: FileLock | None = None
        self._on_ready: Callable[[int], None] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the sandbox peer is not listening yet")
        return f"amqp://{self.host}:{self.port}"

    def __enter__(self) -> SandboxPeer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> SandboxPeer:
        """Listen in a background thread; return once the port is known."""
        self._prepare()
        self._thread = threading.Thread(target=self._run, name="iplosctl-sandbox-peer", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise IplosctlError(f"the sandbox peer did not start within {timeout:g} s")
        if self._error is not None:
            error, self._error = self._error, None
            self.stop()
            raise IplosctlError(
                f"the sandbox peer cannot listen on {self.host}:{self.requested_port}: "
                f"{getattr(error, 'strerror', None) or error}; choose another port"
            )
        return self

    def serve(self, on_ready: Callable[[int], None] | None = None) -> None:
        """Listen in this thread until `stop` (from another thread) or ^C."""
        self._prepare()
        self._on_ready = on_ready
        try:
            self._run(background=False)
        finally:
            self._release()
        if self._error is not None:
            raise IplosctlError(
                f"the sandbox peer cannot listen on {self.host}:{self.requested_port}: "
                f"{getattr(self._error, 'strerror', None) or self._error}; choose another port"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and the listener; wait for the loop to end.

        Callable from any thread; a foreground `serve` then returns in its own thread.
        """
        if self._running.is_set():
            self._injector.trigger(ApplicationEvent("peer_stop"))
        thread, self._thread = self._thread, None
        if thread is None:
            if self._running.is_set() and not self._done.wait(timeout):
                log.warning("the sandbox peer did not stop within %g s", timeout)
            return  # serve() releases the lock in its own thread
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the sandbox peer did not stop within %g s", timeout)
        self._release()

    def depth(self, queue: str) -> int:
        """Messages waiting on `queue` per the files on disk (for tests and status output)."""
        if self.state_dir is None:
            return self.store.depth(queue)
        folder = self.state_dir / "queues" / queue
        return sum(1 for p in folder.glob("*.amqp")) if folder.is_dir() else 0

    # --- internals ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.state_dir / "peer.lock"), timeout=LOCK_TIMEOUT_SECONDS)
            try:
                lock.acquire()
            except LockTimeout:
                raise IplosctlError(
                    f"another sandbox peer is using {self.state_dir}; stop it first or give "
                    "this one another state folder"
                ) from None
            self._lock = lock
        try:
            self.store = QueueStore(
                self.state_dir / "queues" if self.state_dir is not None else None
            )
        except OSError as exc:
            self._release()
            raise IplosctlError(
                f"cannot read the sandbox queues under {self.state_dir}: {exc.strerror or exc}"
            ) from None

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _run(self, *, background: bool = True) -> None:
        self._running.set()
        try:
            Container(_Handler(self)).run()
        except Exception as exc:
            if not self._ready.is_set():  # failed while starting: start()/serve() report it
                self._error = exc
                self._ready.set()
                return
            if not background:
                raise
            # Clients see their connection drop; the log says why.
            log.exception("the sandbox peer stopped on an error")
        finally:
            self._running.clear()
            self._done.set()

    def _started(self, port: int | None, error: BaseException | None) -> None:
        self.port = port
        self._error = error
        self._ready.set()
        if port is not None and self._on_ready is not None:
            self._on_ready(port)
