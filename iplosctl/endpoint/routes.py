"""Where a submission goes: the register's HER-id and queues, or its EDI address.

`Addressing` is what apply and receipts use (DOMAIN.md §5.2); `Route` is the same, resolved
against the endpoint and the year's profile, as plan and status show it to a reviewer
(without credentials).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iplosctl import profiles
from iplosctl.manifest import Manifest

#: the service whose queues receive receipts (service-based addressing, KPR-2023)
SERVICE_NAME = "Saksbehandling"


@dataclass(frozen=True)
class Addressing:
    """Queues and HER-ids for one submission (DOMAIN.md §5.2)."""

    receiver_her_id: int
    receiver_name: str
    sender_her_id: int
    service_her_id: int
    cpa_id: str | None = None
    receiver_queue_override: str | None = None
    #: `endpoint.replyQueue` / `errorQueue`: NHN recommends that a service may inherit its
    #: organisation's queues (DOMAIN.md §5.1), and then `{serviceHerId}_…` is never read
    reply_queue_override: str | None = None
    error_queue_override: str | None = None

    @property
    def to_queue(self) -> str:
        return self.receiver_queue_override or f"{self.receiver_her_id}_async"

    @property
    def reply_queue(self) -> str:
        return self.reply_queue_override or f"{self.service_her_id}_async"

    @property
    def error_queue(self) -> str:
        return self.error_queue_override or f"{self.service_her_id}_error"


def addressing(manifest: Manifest) -> Addressing:
    profile = profiles.profile_for(manifest)
    env = profile.environments[manifest.environment]
    endpoint = manifest.endpoint
    return Addressing(
        receiver_her_id=env.receiver_her_id,
        receiver_name=profile.register_name,
        sender_her_id=manifest.sender.her_id,
        service_her_id=manifest.sender.service_her_id,
        cpa_id=endpoint.cpa_id if endpoint else None,
        receiver_queue_override=endpoint.receiver_queue if endpoint else None,
        reply_queue_override=endpoint.reply_queue if endpoint else None,
        error_queue_override=endpoint.error_queue if endpoint else None,
    )


@dataclass(frozen=True)
class Route:
    """Where a submission goes and where its answers come from, as a reviewer must see it.

    No credentials: the broker URL never holds one (the schema refuses it) and the user
    name is not shown.
    """

    receiver_her_id: int
    to_queue: str
    reply_queue: str
    error_queue: str
    transport: str
    broker: str
    namespace: str | None
    #: the `edi` transport (issue 14): addresses and mail servers, else None
    edi: EdiRoute | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "receiverHerId": self.receiver_her_id,
            "toQueue": self.to_queue,
            "replyQueue": self.reply_queue,
            "errorQueue": self.error_queue,
            "transport": self.transport,
            "broker": self.broker,
            "namespace": self.namespace,
        }
        if self.edi is not None:
            out["edi"] = self.edi.as_dict()
        return out

    def text(self) -> str:
        if self.edi is not None:
            return self.edi.text(self.receiver_her_id)
        ns = f", namespace {self.namespace}" if self.namespace else ""
        return (
            f"to HER-id {self.receiver_her_id} queue {self.to_queue} via {self.transport} "
            f"{self.broker}{ns}; receipts from {self.reply_queue}, errors from {self.error_queue}"
        )


@dataclass(frozen=True)
class EdiRoute:
    """The EDI channel's addresses and servers (no credentials: the URLs cannot hold any)."""

    to_address: str
    from_address: str
    smtp: str
    imap: str
    folder: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "toAddress": self.to_address,
            "fromAddress": self.from_address,
            "smtp": self.smtp,
            "imap": self.imap,
            "folder": self.folder,
        }

    def text(self, receiver_her_id: int) -> str:
        return edi_route_text(receiver_her_id, self.as_dict())


def edi_route_text(receiver_her_id: int, edi: dict[str, Any]) -> str:
    """One line for plan and status: `to kpr@edi.nhn.no (HER-id …) via edi smtp://…`."""
    return (
        f"to {edi['toAddress']} (HER-id {receiver_her_id}) via edi {edi['smtp']} from "
        f"{edi['fromAddress']}; receipts from {edi['imap']} folder {edi['folder']}"
    )


EDI_DEFAULT_FOLDER = "INBOX"
EDI_PROCESSED_FOLDER = "iplosctl-processed"


def register_edi_address(manifest: Manifest) -> str | None:
    """`endpoint.registerAddress`, else the year profile's `register.ediAddress`."""
    endpoint = manifest.endpoint
    if endpoint is not None and endpoint.register_address:
        return endpoint.register_address
    return profiles.profile_for(manifest).edi_address


def _edi_route(manifest: Manifest) -> EdiRoute:
    e = manifest.endpoint
    assert e is not None
    return EdiRoute(
        to_address=register_edi_address(manifest) or "(not set)",
        from_address=e.address or "(not set)",
        smtp=_without_credentials(e.smtp or "(not set)"),
        imap=_without_credentials(e.imap or "(not set)"),
        folder=e.imap_folder or EDI_DEFAULT_FOLDER,
    )


def route(manifest: Manifest) -> Route:
    """The resolved receiver, queues, broker and namespace (for plan and status)."""
    address = addressing(manifest)
    env = profiles.profile_for(manifest).environments[manifest.environment]
    endpoint = manifest.endpoint
    if endpoint is None:
        transport, broker, namespace = "amqp", "built-in sandbox register (loopback)", None
    else:
        transport = endpoint.transport
        broker = _without_credentials(endpoint.url or env.broker_url or "(not set)")
        namespace = endpoint.namespace or (env.namespace if not endpoint.url else None)
    edi = None
    if endpoint is not None and endpoint.transport == "edi":
        edi = _edi_route(manifest)
        broker, namespace = edi.smtp, None
    return Route(
        receiver_her_id=address.receiver_her_id,
        to_queue=address.to_queue,
        reply_queue=address.reply_queue,
        error_queue=address.error_queue,
        transport=transport,
        broker=broker,
        namespace=namespace,
        edi=edi,
    )


def _without_credentials(url: str) -> str:
    """`url` with anything before an `@` in its authority dropped (belt and braces)."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
