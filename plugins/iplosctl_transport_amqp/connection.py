"""Opening one AMQP 1.0 connection to the broker, and naming what went wrong.

Everything proton-specific that is not about messages lives here: parsing the
endpoint URL (credentials never go into it, STACK.md §2d), building the TLS
domain, the `BlockingConnection` subclass that turns RabbitMQ's session and
transport failures into exceptions that carry the broker's condition, and
`explain`, which maps those to one-line `TransportError`s a municipality's IT
person can act on, marked transient when a later try may succeed.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proton import (
    Condition,
    ConnectionException,
    Endpoint,
    LinkException,
    ProtonException,
    SSLDomain,
    SSLException,
    Timeout,
)
from proton.utils import BlockingConnection, ConnectionClosed, LinkDetached

from iplosctl.errors import TransportError
from iplosctl.plugins import TlsSettings, TransportSettings
from iplosctl.transport_policy import is_loopback, plaintext_refusal

try:  # proton's C API: the Python SSLDomain has no setter for the protocol versions
    from cproton import pn_ssl_domain_set_protocols as _set_protocols
except ImportError:  # pragma: no cover - a proton build without the cffi module
    _set_protocols = None

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
#: the largest AMQP frame this client accepts; the broker's offer caps it (the smaller
#: wins). proton's default is 32 KiB, and with NHN's 20 MB parts the per-frame work in
#: proton's Python I/O loop is what a send costs here: 128 KiB (RabbitMQ's own default
#: frame_max) cut a 22 MB send by about 15 % on the local broker (README, Performance).
MAX_FRAME_SIZE = 128 * 1024
#: NHN allows TLS 1.2 and 1.3 only (DOMAIN.md §5.1). proton-c's OpenSSL layer turns this
#: list into SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 (`pn_ssl_domain_set_protocols`, c/src/ssl/
#: openssl.c), so an older server fails the handshake before any AMQP or SASL byte is sent.
TLS_PROTOCOLS = "TLSv1.2 TLSv1.3"

#: broker conditions after which a new try may succeed (broker restarting, overloaded,
#: connection cut); everything else (login, missing queue, TLS trust) needs a human
TRANSIENT_CONDITIONS = frozenset(
    {
        "amqp:connection:forced",
        "amqp:connection:framing-error",  # "connection aborted"; TLS failures are caught first
        "amqp:resource-limit-exceeded",
        "amqp:internal-error",
        "proton.pythonio",  # connection refused, reset, unreachable
    }
)


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where the broker is, parsed from `settings.url` (which never holds credentials)."""

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """The URL handed to proton: scheme, host and port, nothing else."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoint(settings: TransportSettings) -> BrokerEndpoint:
    """Check the endpoint URL up front so a typo fails before any network traffic.

    The URL is not echoed in errors about credentials: it may hold the password.
    """
    try:
        parts = urlsplit(settings.url)
        port = parts.port
    except ValueError as exc:
        raise TransportError(
            f"the endpoint URL is not a valid amqp(s)://host:port URL ({exc})"
        ) from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise TransportError(
            "the endpoint URL must not contain a username or password: put the username in "
            "the endpoint's username and the password in the credential secret"
        )
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise TransportError(
            f"the endpoint URL must start with amqp:// or amqps://, not {parts.scheme or '(none)'}://"
        )
    if not parts.hostname:
        raise TransportError(f"the endpoint URL {settings.url!r} names no host")
    path = parts.path.strip("/")
    if path and path != settings.namespace:
        # HNM reads the namespace from the URL path; here it is one explicit setting so
        # the two cannot disagree silently.
        raise TransportError(
            f"the endpoint URL ends in /{path} but the namespace is "
            f"{settings.namespace or 'not set'}: set the namespace to {path!r} "
            "(it is case-sensitive) or drop the path from the URL"
        )
    return BrokerEndpoint(scheme=scheme, host=parts.hostname, port=port or DEFAULT_PORTS[scheme])


def ssl_domain(tls: TlsSettings) -> SSLDomain:
    """A client TLS domain: the given CA file or the system trust store, peer always verified.

    proton loads the system default trust paths for every client domain, so with
    no `ca_file` the operating system's CAs decide; a `ca_file` adds to them.
    """
    for label, path in (
        ("tls.ca_file", tls.ca_file),
        ("tls.client_certificate", tls.client_certificate),
        ("tls.client_key", tls.client_key),
    ):
        if path is not None and not Path(path).is_file():
            raise TransportError(f"{label} {path} does not exist or is not a file")
    if (tls.client_certificate is None) != (tls.client_key is None):
        raise TransportError(
            "tls.client_certificate and tls.client_key must be given together (or neither)"
        )
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    require_modern_tls(domain)
    try:
        if tls.ca_file is not None:
            domain.set_trusted_ca_db(str(tls.ca_file))
        mode = SSLDomain.VERIFY_PEER_NAME if tls.verify_peer_name else SSLDomain.VERIFY_PEER
        domain.set_peer_authentication(mode)
        if tls.client_certificate is not None and tls.client_key is not None:
            domain.set_credentials(str(tls.client_certificate), str(tls.client_key), None)
    except SSLException as exc:
        raise TransportError(
            f"could not load the TLS files (ca_file {tls.ca_file}, client_certificate "
            f"{tls.client_certificate}): check they are PEM files and the key matches ({exc})"
        ) from None
    return domain


def require_modern_tls(domain: SSLDomain) -> None:
    """Allow only TLS 1.2 and 1.3 on `domain`; refuse to go on if proton cannot say so.

    Without this, proton takes OpenSSL's defaults, and a server limited to TLS 1.0 or
    1.1 completed the handshake and received the SASL header (issue 12, reproduced
    with Debian 12's OpenSSL 3.0.19).
    """
    result = -1 if _set_protocols is None else _set_protocols(domain._domain, TLS_PROTOCOLS)
    if result != 0:
        raise TransportError(
            "this proton build cannot limit TLS to versions 1.2 and 1.3 (NHN's minimum): "
            "refusing to connect; reinstall python-qpid-proton built against OpenSSL "
            "(pkg-config, libssl-dev)"
        )


def insecure_mechs_allowed(endpoint: BrokerEndpoint, settings: TransportSettings) -> bool:
    """May SASL PLAIN go over a connection without TLS? Only to loopback or in the sandbox.

    proton's Container allows it by default (`allow_insecure_mechs=True`); over TLS the
    question does not arise (the connection is encrypted), so it is False for amqps.
    """
    return endpoint.scheme == "amqp" and (settings.allow_plaintext or is_loopback(endpoint.host))


def check_plaintext(endpoint: BrokerEndpoint, settings: TransportSettings) -> None:
    """Refuse `amqp://` to a non-loopback host outside the sandbox (transport_policy)."""
    refusal = plaintext_refusal(endpoint.url, sandbox=settings.allow_plaintext)
    if refusal is not None:
        raise TransportError(refusal)


class BrokerClosed(ProtonException):
    """The broker or the network ended the transport, connection, session or link.

    Carries the AMQP condition as data so errors can be classified without
    parsing proton's message text.
    """

    def __init__(self, scope: str, condition: Condition | None) -> None:
        self.scope = scope
        self.condition = condition.name if condition is not None else None
        self.description = str(condition.description or "") if condition is not None else ""
        super().__init__(f"{scope} closed: {self.condition}: {self.description}")


class StrictBlockingConnection(BlockingConnection):
    """A BlockingConnection that fails at once when RabbitMQ ends the session.

    RabbitMQ reports an unknown queue, a missing exchange or a refused resource
    by ending the *session*; the stock class ignores that and only times out
    (STACK.md §3.1). Failures leave `wait` as `BrokerClosed` with the condition.
    """

    def on_session_remote_close(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_ACTIVE:
            event.session.close()
        if not self.closing:
            raise BrokerClosed("session", event.session.remote_condition)

    def wait(self, condition: Any, timeout: Any = False, msg: str | None = None) -> None:
        try:
            super().wait(condition, timeout=timeout, msg=msg)
        except ConnectionClosed as exc:
            raise BrokerClosed("connection", exc.connection.remote_condition) from exc
        except ConnectionException as exc:
            disconnected: object = self.disconnected  # typed bool, a Condition once cut
            if isinstance(disconnected, Condition):
                raise BrokerClosed("transport", disconnected) from exc
            raise


def open_connection(
    endpoint: BrokerEndpoint,
    settings: TransportSettings,
    *,
    allow_insecure_mechs: bool | None = None,
) -> StrictBlockingConnection:
    """Connect and log in; user and password go as keyword arguments, never in the URL.

    `allowed_mechs="PLAIN"` works around proton's SASL client picking ANONYMOUS
    or nothing when RabbitMQ also offers AMQPLAIN (STACK.md §2d).
    `allow_insecure_mechs` (default: `insecure_mechs_allowed`) off makes proton itself
    refuse to send PLAIN over a connection without TLS.
    """
    check_plaintext(endpoint, settings)
    if allow_insecure_mechs is None:
        allow_insecure_mechs = insecure_mechs_allowed(endpoint, settings)
    options: dict[str, Any] = {
        "container_id": f"iplosctl-{uuid.uuid4()}",
        "max_frame_size": MAX_FRAME_SIZE,
        "allow_insecure_mechs": allow_insecure_mechs,
    }
    if settings.username is not None:
        options.update(
            user=settings.username, password=settings.password or "", allowed_mechs="PLAIN"
        )
    domain = ssl_domain(settings.tls) if endpoint.scheme == "amqps" else None
    return StrictBlockingConnection(
        endpoint.url, timeout=settings.timeout_seconds, ssl_domain=domain, **options
    )


def _condition(exc: BaseException) -> tuple[str, str | None, str]:
    """(scope, condition name, description) for any proton failure."""
    if isinstance(exc, BrokerClosed):
        return exc.scope, exc.condition, exc.description
    if isinstance(exc, LinkDetached):
        cond = exc.link.remote_condition
        return "link", cond.name if cond else None, str(cond.description or "") if cond else ""
    if isinstance(exc, LinkException):
        return "link", None, str(exc)
    return "connection", None, str(exc)


def explain(
    exc: BaseException,
    endpoint: BrokerEndpoint,
    *,
    action: str,
    username: str | None,
    timeout: float,
) -> TransportError:
    """One actionable line for a failure while `action` ("sending to queue X", …).

    Transient means a new connection and a new try may succeed; the caller
    decides whether to retry. Never includes the password: it is in no URL and
    proton never prints it.
    """
    where = f"the AMQP broker at {endpoint}"
    if isinstance(exc, socket.gaierror):
        if exc.errno == socket.EAI_AGAIN:
            return TransportError(
                f"cannot look up {endpoint.host} right now (temporary DNS failure) while "
                f"{action}: check the network and DNS",
                transient=True,
            )
        return TransportError(
            f"cannot resolve host {endpoint.host} while {action}: check the host name in the "
            "endpoint URL and that this machine can reach it (production is on Helsenettet)"
        )
    if isinstance(exc, Timeout):
        return TransportError(
            f"no answer from {where} within {timeout:g} s while {action}: check the network "
            "and firewall, or raise the timeout",
            transient=True,
        )
    if isinstance(exc, OSError):
        return TransportError(
            f"network error talking to {where} while {action}: {exc.strerror or exc}",
            transient=True,
        )
    scope, name, description = _condition(exc)
    detail = f"{name}: {description}" if name else description
    if "protocol version" in description or "unsupported protocol" in description:
        return TransportError(
            f"TLS handshake with {where} failed: the broker offers only TLS versions older "
            "than 1.2, which NHN does not allow; nothing was sent (check the URL points at "
            "NHN's broker)"
        )
    if "SSL Failure" in description or isinstance(exc, SSLException):
        return TransportError(
            f"TLS handshake with {where} failed ({description}): check tls.ca_file, and that "
            "the URL uses the host name in the broker's certificate"
        )
    if name == "amqp:unauthorized-access" and scope in ("transport", "connection"):
        who = f"user {username!r}" if username else "an anonymous login"
        return TransportError(
            f"{where} refused the login for {who}: check the username and the credential secret"
        )
    if name == "amqp:unauthorized-access":
        return TransportError(
            f"{where} refused access while {action} ({description}): ask the broker's operator "
            "(NHN) to grant this user access to that queue"
        )
    if name == "amqp:not-found":
        hint = (
            "check the namespace (it is case-sensitive)"
            if "exchange" in description
            else "check the queue name against Adresseregisteret"
        )
        return TransportError(
            f"{where} has no such queue or exchange while {action} ({description}): {hint}"
        )
    if name in TRANSIENT_CONDITIONS or (name is None and scope == "connection"):
        if "refused" in description.lower():
            return TransportError(
                f"cannot connect to {where} (connection refused) while {action}: check the host "
                "and port in the endpoint URL and that the broker is reachable",
                transient=True,
            )
        return TransportError(
            f"lost the connection to {where} while {action} ({detail})", transient=True
        )
    return TransportError(f"{where} ended the {scope} while {action} ({detail})")
