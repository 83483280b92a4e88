"""The sandbox register as a consumer of its queue on a real broker (`iplosctl sandbox attach`).

The same `SandboxRegister` as the embedded peer, but messages come from
`{register}_async` on a broker and replies go back through it, to the municipality's
`_async` and `_error` queues, with the AMQP transport plugin the municipality uses too.
This is how the integration tests run the whole round trip through RabbitMQ.

Each delivery is accepted only after its replies were sent (the broker ACCEPTED them),
and only then remembered as answered: a crash in between means a redelivery, which is
answered (or, if it was answered after all, recognised as a duplicate), never lost.
With a delay behaviour the delivery stays unsettled until its replies are due and sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iplosctl import plugins
from iplosctl.errors import TransportError
from iplosctl.plugins import Delivery, TransportPlugin, TransportSettings
from iplosctl.sandbox.pki import PkiFiles
from iplosctl.sandbox.register import DEFAULT_NAME, Answer, Behaviour, SandboxRegister

log = logging.getLogger(__name__)

#: how long one receive waits for a message before checking the clock and the stop flag
POLL_SECONDS = 0.2
#: pause before reconnecting after a transient broker failure
RECONNECT_SECONDS = 1.0


@dataclass
class _Held:
    """A delivery whose replies are not due yet."""

    due: float
    delivery: Delivery
    answer: Answer


@dataclass
class AttachStats:
    """What an attach run did, for the CLI's closing line and for tests."""

    handled: int = 0
    duplicates: int = 0
    replies: int = 0
    outcomes: list[str] = field(default_factory=list)


def attach(
    url: str,
    *,
    username: str | None,
    password: str | None,
    pki_dir: Path,
    register_her_id: int | str,
    behaviour: Behaviour | None = None,
    namespace: str | None = None,
    stop_after: float | None = None,
    schema_dir: Path | None = None,
    state_dir: Path | None = None,
    register_name: str = DEFAULT_NAME,
    stop: threading.Event | None = None,
    transport_factory: Callable[[TransportSettings], TransportPlugin] | None = None,
    clock: Callable[[], float] = time.time,
    on_answer: Callable[[str | None, Answer], None] | None = None,
) -> AttachStats:
    """Answer messages on `{register_her_id}_async` until `stop_after` seconds or `stop` is set.

    `pki_dir` is a `sandbox pki` folder: the register's keys, the municipality's
    certificates and the CA. `state_dir` keeps the answered-message list between runs.
    `on_answer(message_id, answer)` is told of each message once its replies are sent.
    """
    register = SandboxRegister.from_pki(
        PkiFiles(Path(pki_dir)),
        her_id=register_her_id,
        name=register_name,
        behaviour=behaviour,
        schema_dir=schema_dir,
        state_dir=state_dir,
    )
    settings = TransportSettings(
        url=url, namespace=namespace, username=username, password=password, timeout_seconds=20
    )
    factory = transport_factory or plugins.load("transport", "amqp")
    stop = stop or threading.Event()
    deadline = None if stop_after is None else time.monotonic() + stop_after
    consumer = _Consumer(register, factory, settings, clock, on_answer)
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            consumer.poll(stop, deadline)
    finally:
        consumer.close()
    return consumer.stats


class _Consumer:
    def __init__(
        self,
        register: SandboxRegister,
        factory: Callable[[TransportSettings], TransportPlugin],
        settings: TransportSettings,
        clock: Callable[[], float],
        on_answer: Callable[[str | None, Answer], None] | None,
    ) -> None:
        self.register = register
        self.on_answer = on_answer
        self.factory = factory
        self.settings = settings
        self.clock = clock
        self.transport: TransportPlugin | None = None
        self.held: list[_Held] = []
        self.stats = AttachStats()

    def poll(self, stop: threading.Event, deadline: float | None) -> None:
        """One receive window, then whatever replies fell due; reconnect on transient errors."""
        try:
            if self.transport is None:
                self.transport = self.factory(self.settings)
            for delivery in self.transport.receive(self.register.queue, timeout=POLL_SECONDS):
                self._take(delivery)
                self._send_due()
                if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    break
            self._send_due()
        except TransportError as exc:
            if not exc.transient:
                raise
            log.warning("%s; reconnecting", exc.message)
            self._reset()
            stop.wait(RECONNECT_SECONDS)

    def _take(self, delivery: Delivery) -> None:
        now = self.clock()
        answer = self.register.decide(delivery.message, dt.datetime.fromtimestamp(now, dt.UTC))
        self.stats.handled += 1
        self.stats.outcomes.append(answer.outcome)
        if answer.duplicate:
            self.stats.duplicates += 1
        due = max((r.due.timestamp() for r in answer.replies if r.due is not None), default=0.0)
        self.held.append(_Held(due, delivery, answer))

    def _send_due(self) -> None:
        now = self.clock()
        while self.held and self.held[0].due <= now:
            held = self.held[0]
            assert self.transport is not None
            for reply in held.answer.replies:
                self.transport.send(reply.message)
                self.stats.replies += 1
            self.register.remember(held.answer)  # only now: the broker has the replies
            held.delivery.accept()
            self.held.pop(0)
            if self.on_answer is not None:
                self.on_answer(held.delivery.message.message_id, held.answer)

    def _reset(self) -> None:
        # Unsettled deliveries go back to the queue with the old connection.
        self.held.clear()
        transport, self.transport = self.transport, None
        if transport is not None:
            with contextlib.suppress(TransportError):  # already broken; the broker requeues
                transport.close()

    def close(self) -> None:
        self._reset()


class AttachedRegister:
    """`attach` in a background thread, for tests: `stop()` ends it and re-raises its error."""

    def __init__(self, **kwargs: Any) -> None:
        self._stop = threading.Event()
        self._kwargs = kwargs
        self.stats: AttachStats | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="iplosctl-sandbox-attach", daemon=True
        )

    def start(self) -> AttachedRegister:
        """Start the thread (once; starting again does nothing)."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.stats = attach(**self._kwargs, stop=self._stop)
        except BaseException as exc:  # handed to the test thread by stop()
            self.error = exc

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for `attach` to end by itself; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> AttachStats:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"sandbox attach did not stop within {timeout:g} s")
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats

    def __enter__(self) -> AttachedRegister:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def attach_in_thread(**kwargs: Any) -> AttachedRegister:
    """Start `attach(**kwargs)` in a daemon thread; call `.stop()` (or use `with`) to end it."""
    return AttachedRegister(**kwargs).start()
