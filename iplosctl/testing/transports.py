"""Checks for transport plugins, on a real endpoint whose peer side the caller supplies."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from iplosctl.errors import TransportError
from iplosctl.plugins import IncomingMessage, OutgoingMessage, TransportSettings
from iplosctl.testing._common import check_user_error, fail, leaks


@dataclass(frozen=True)
class TransportEndpoint:
    """A real endpoint the kit may use, and the peer's side of it.

    `queue` must be empty at the start and is the kit's alone. `put` places a
    message on `queue` as the register would (so `receive(queue)` finds it);
    `take` returns, and removes, what `send(to_queue=queue)` delivered, read
    the way the register reads it. `broken` are settings under which using the
    transport must fail (a wrong password, a missing folder).
    """

    settings: TransportSettings
    queue: str
    put: Callable[[OutgoingMessage], None]
    take: Callable[[], list[IncomingMessage]]
    broken: Sequence[TransportSettings] = ()
    receive_timeout: float = 1.0
    #: secrets that must never appear in an error or repr (besides each settings' password)
    secrets: Sequence[str] = field(default=(), repr=False)


def sample_message(queue: str, *, body: bytes | None = None) -> OutgoingMessage:
    """A message shaped like apply's: NHN properties as strings, a binary body."""
    return OutgoingMessage(
        message_id=str(uuid.uuid4()),
        correlation_id=str(uuid.uuid4()),
        subject="KPR_IPL",
        body=bytes(range(256)) * 8 if body is None else body,
        to_queue=queue,
        reply_to="8094867_async",
        application_properties={
            "fromHerId": "8094867",
            "toHerId": "8117845",
            "applicationTimeStamp": "2024-03-01T10:11:12Z",
        },
    )


def _same(plugin: str, what: str, sent: OutgoingMessage, got: IncomingMessage) -> None:
    if not isinstance(got, IncomingMessage):
        raise fail(plugin, f"{what}: got {type(got).__name__}, not IncomingMessage")
    if type(got.body) is not bytes:
        raise fail(plugin, f"{what}: the body is {type(got.body).__name__}, not bytes")
    differs = [
        name
        for name, a, b in (
            ("message_id", sent.message_id, got.message_id),
            ("correlation_id", sent.correlation_id, got.correlation_id),
            ("subject", sent.subject, got.subject),
            ("body", sent.body, got.body),
        )
        if a != b
    ]
    if got.reply_to is not None and got.reply_to != sent.reply_to:
        differs.append("reply_to")
    props = dict(got.application_properties)
    for key, value in sent.application_properties.items():
        if props.get(key) != value:
            differs.append(f"application property {key}")
    if any(not isinstance(v, str) for v in props.values()):
        differs.append("application properties must be strings")
    if differs:
        raise fail(plugin, f"{what}: {', '.join(differs)} did not survive the trip")


def _receive(
    plugin: str, transport: Any, endpoint: TransportEndpoint, settle: Callable[[Any], None]
) -> list[IncomingMessage]:
    out = []
    for delivery in transport.receive(endpoint.queue, timeout=endpoint.receive_timeout):
        message = getattr(delivery, "message", None)
        if not isinstance(message, IncomingMessage):
            raise fail(plugin, "receive() yielded a delivery without an IncomingMessage")
        if message.queue != endpoint.queue:
            raise fail(
                plugin,
                f"a delivery from {endpoint.queue!r} says it came from {message.queue!r}",
            )
        settle(delivery)
        out.append(message)
    return out


def _ids(messages: Iterable[IncomingMessage | OutgoingMessage]) -> list[str | None]:
    return sorted((m.message_id for m in messages), key=str)


def check_transport(
    factory: Callable[[TransportSettings], Any], endpoint: TransportEndpoint
) -> None:
    """Drive a transport through send, receive, accept, release and close on a real endpoint.

    - `name` is set; `repr` of the transport never shows the password;
    - `close` may be called twice, also on a transport never used;
    - `send` (after `prepare`, when the plugin has it) delivers one message whose ids,
      subject, body bytes, reply-to and application properties (strings) arrive intact;
    - `find_accepted` (when the plugin has it) finds that message by its id and no other,
      and leaves it where it is;
    - `receive` yields deliveries of `IncomingMessage`s from that queue; an accepted
      one is gone, a released one and one never settled before `close` come back on
      the next run (nothing the lockfile has not recorded is lost);
    - every broken setting fails with a `TransportError` of one line that shows no
      password, and `close` still works after it.
    """
    transport = factory(endpoint.settings)
    name = getattr(transport, "name", None)
    plugin = f"transport {name!r}"
    if not isinstance(name, str) or not name:
        raise fail(plugin, "the plugin has no `name` (the manifest's endpoint.transport)")
    passwords = [s.password for s in (endpoint.settings, *endpoint.broken) if s.password]
    secrets = [*passwords, *endpoint.secrets]
    if leaks(repr(transport), secrets):
        raise fail(plugin, "repr() of the transport shows a password")
    _close_twice(plugin, transport, "on a transport never used")

    # send
    sent = sample_message(endpoint.queue)
    transport = factory(endpoint.settings)
    try:
        prepare = getattr(transport, "prepare", None)
        if callable(prepare):
            prepare(endpoint.queue)
        transport.send(sent)
    finally:
        _close_twice(plugin, transport, "after send")
    _check_find_accepted(plugin, factory, endpoint, str(sent.message_id))
    arrived = endpoint.take()
    if len(arrived) != 1:
        raise fail(plugin, f"one send() put {len(arrived)} messages on {endpoint.queue!r}")
    _same(plugin, "send", sent, arrived[0])

    # receive, accept, release, leave unsettled
    accepted, released, unsettled = (sample_message(endpoint.queue) for _ in range(3))
    for message in (accepted, released, unsettled):
        endpoint.put(message)
    by_id = {m.message_id: m for m in (accepted, released, unsettled)}

    def settle_first(delivery: Any) -> None:
        if delivery.message.message_id == accepted.message_id:
            delivery.accept()
        elif delivery.message.message_id == released.message_id:
            delivery.release()

    transport = factory(endpoint.settings)
    try:
        got = _receive(plugin, transport, endpoint, settle_first)
    finally:
        transport.close()
    if _ids(got) != _ids(by_id.values()):
        raise fail(
            plugin,
            f"receive() yielded {len(got)} of the 3 messages put on {endpoint.queue!r}"
            + (" (some twice)" if len(set(_ids(got))) < len(got) else ""),
        )
    for incoming in got:
        _same(plugin, "receive", by_id[str(incoming.message_id)], incoming)

    transport = factory(endpoint.settings)
    try:
        again = _receive(plugin, transport, endpoint, lambda d: d.accept())
    finally:
        transport.close()
    expected = _ids([released, unsettled])
    if _ids(again) != expected:
        lost = [
            label
            for label, message in (("released", released), ("never settled", unsettled))
            if message.message_id not in {m.message_id for m in again}
        ]
        back = accepted.message_id in {m.message_id for m in again}
        raise fail(
            plugin,
            "after accept/release/close, the next receive() "
            + ("lost the " + " and the ".join(lost) + " delivery" if lost else "")
            + ("; " if lost and back else "")
            + ("returned the accepted delivery again" if back else ""),
        )
    transport = factory(endpoint.settings)
    try:
        left = _receive(plugin, transport, endpoint, lambda d: d.release())
    finally:
        transport.close()
    if left:
        raise fail(plugin, f"{len(left)} accepted deliveries came back on {endpoint.queue!r}")

    # failures
    for number, settings in enumerate(endpoint.broken, 1):
        _check_broken(plugin, factory, settings, endpoint, f"broken setting {number}", secrets)


def _check_find_accepted(
    plugin: str,
    factory: Callable[[TransportSettings], Any],
    endpoint: TransportEndpoint,
    message_id: str,
) -> None:
    """`find_accepted` sees the message just sent, not an id never sent, and takes nothing
    (the `take` after it must still find the message)."""
    transport = factory(endpoint.settings)
    try:
        find = getattr(transport, "find_accepted", None)
        if not callable(find):
            return
        never = "00000000-0000-4000-8000-000000000000"
        found = find(endpoint.queue, [message_id, never])
    finally:
        _close_twice(plugin, transport, "after find_accepted")
    if set(found) != {message_id}:
        raise fail(
            plugin,
            f"find_accepted() found {sorted(found)} of the one message sent to {endpoint.queue!r}",
        )


def _check_broken(
    plugin: str,
    factory: Callable[[TransportSettings], Any],
    settings: TransportSettings,
    endpoint: TransportEndpoint,
    what: str,
    secrets: Sequence[str],
) -> None:
    try:
        transport = factory(settings)
    except TransportError as exc:  # refusing the settings at once is allowed
        check_user_error(plugin, what, exc, secrets=secrets, names=())
        return
    except Exception as exc:
        raise fail(
            plugin,
            f"{what}: creating the transport raised {type(exc).__name__}, not TransportError",
        ) from exc
    try:
        prepare = getattr(transport, "prepare", None)
        if callable(prepare):
            prepare(endpoint.queue)
        transport.send(sample_message(endpoint.queue))
    except TransportError as exc:
        check_user_error(plugin, what, exc, secrets=secrets, names=())
    except Exception as exc:
        raise fail(
            plugin,
            f"{what}: sending raised {type(exc).__name__}, not a TransportError subclass",
        ) from exc
    else:
        raise fail(plugin, f"{what}: sending succeeded where it must fail")
    finally:
        _close_twice(plugin, transport, f"after {what} failed")


def _close_twice(plugin: str, transport: Any, when: str) -> None:
    """close() must be idempotent: apply and receipts close in `finally` and on exit."""
    for attempt in ("", " a second time"):
        try:
            transport.close()
        except Exception as exc:
            raise fail(
                plugin, f"close(){attempt} {when} raised {type(exc).__name__}: {exc}"
            ) from exc
