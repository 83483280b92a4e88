"""What the transport refuses, or warns about, before anything connects (issue 12).

NHN allows TLS 1.2 and 1.3 only (DOMAIN.md §5.1), and the broker login is SASL
PLAIN: over `amqp://` the user name and password travel in clear. So:

* `amqp://` (no TLS) is refused unless the environment is `sandbox` or the
  host is loopback. "Loopback" is decided from the URL as written (`localhost`,
  `*.localhost`, 127.0.0.0/8, `::1`), never by resolving the name: a name that
  DNS maps to 127.0.0.1 today may not tomorrow.
* `tls.verifyPeerName: false` turns off the broker's host-name check. It is
  refused in environments the profile marks `production` (production and qa)
  and warned about everywhere else.

validate, plan and apply all go through `endpoint_concerns`; the AMQP plugin
repeats the `amqp://` refusal itself, so a third-party caller of the plugin
cannot skip it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

ERROR: Literal["error"] = "error"
WARNING: Literal["warning"] = "warning"
#: the finding id plan uses for these warnings
RULE_ID = "transport-security"


@dataclass(frozen=True)
class Concern:
    """One refusal (`error`) or warning about the endpoint, with the manifest key it is about."""

    severity: Literal["error", "warning"]
    message: str
    #: where in the manifest, e.g. ("spec", "endpoint", "url")
    path: tuple[str, ...]


def is_loopback(host: str) -> bool:
    """True for `localhost`, `*.localhost` (RFC 6761), 127.0.0.0/8 and ::1, as written."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def plaintext_refusal(url: str, *, sandbox: bool) -> str | None:
    """Why `url` must not be used, when it is `amqp://` to a non-loopback host outside sandbox."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return None  # the URL's own check reports it
    if parts.scheme.lower() != "amqp" or sandbox or is_loopback(host):
        return None
    return (
        f"amqp:// (no TLS) to {host} is refused: the broker login would cross the network "
        "in clear; use amqps:// (NHN: port 5671, TLS 1.2 or 1.3). amqp:// is allowed only "
        "to a loopback host or in the sandbox environment"
    )


def endpoint_concerns(
    url: str | None,
    *,
    environment: str,
    sandbox: bool,
    production: bool,
    verify_peer_name: bool,
    url_from_manifest: bool = True,
) -> list[Concern]:
    """Refusals and warnings for one endpoint; `url` None means the directory transport or none."""
    concerns: list[Concern] = []
    url_path = ("spec", "endpoint", "url") if url_from_manifest else ("spec", "endpoint")
    if url and "://" in url:
        refusal = plaintext_refusal(url, sandbox=sandbox)
        if refusal is not None:
            concerns.append(Concern(ERROR, refusal, url_path))
    if not verify_peer_name:
        where = ("spec", "endpoint", "tls", "verifyPeerName")
        if production:
            concerns.append(
                Concern(
                    ERROR,
                    f"tls.verifyPeerName: false is refused in the {environment} environment: "
                    "without the host-name check any certificate from a trusted CA would "
                    "be taken as the broker's; remove it and connect by the name in the "
                    "broker's certificate",
                    where,
                )
            )
        else:
            concerns.append(
                Concern(
                    WARNING,
                    "tls.verifyPeerName: false turns off the broker's host-name check: any "
                    "certificate from a trusted CA is taken as the broker's (refused in "
                    "production and qa)",
                    where,
                )
            )
    return concerns
