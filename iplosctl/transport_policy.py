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


# --- the edi transport (issue 14) -------------------------------------------------------

#: NHN EDI 2.0, "EDI" page: @edi.nhn.no carries production data, @testedi.nhn.no and
#: @samsvar.nhn.no test data, and mail between the two worlds is not permitted
PRODUCTION_EDI_DOMAIN = "edi.nhn.no"
TEST_EDI_DOMAINS = ("testedi.nhn.no", "samsvar.nhn.no")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def _in(domain: str, parent: str) -> bool:
    return domain == parent or domain.endswith("." + parent)


def edi_concerns(
    *,
    address: str | None,
    smtp: str | None,
    imap: str | None,
    register_address: str | None,
    register_from_manifest: bool,
    environment: str,
    sandbox: bool,
    production: bool,
    verify_peer_name: bool,
    username: str | None = "",
    credential: str | None = "",
    envelope_agreement: str | None = None,
) -> list[Concern]:
    """What validate refuses about an `edi` endpoint: missing servers or addresses, an
    address in the other world (production vs test), and `verifyPeerName` as for AMQP.

    smtp:// and imap:// need no rule of their own: the transport always requires STARTTLS
    there, so nothing travels in clear.
    """
    concerns: list[Concern] = []
    for key, value, what in (
        ("address", address, "the municipality's own EDI address (receipts arrive there)"),
        ("smtp", smtp, "the SMTP server (smtp://host:587 with STARTTLS, or smtps://host:465)"),
        ("imap", imap, "the IMAP server of the EDI mailbox (imaps://host:993 or imap://…)"),
    ):
        if not value:
            concerns.append(
                Concern(
                    ERROR, f"the edi transport needs endpoint.{key}: {what}", ("spec", "endpoint")
                )
            )
    if username is None or credential is None:
        concerns.append(
            Concern(
                ERROR,
                "the edi transport logs in to both servers (SMTP AUTH, IMAP LOGIN): set "
                "endpoint.username and endpoint.credential (the secret holding the password)",
                ("spec", "endpoint"),
            )
        )
    reg_path = (
        ("spec", "endpoint", "registerAddress") if register_from_manifest else ("spec", "endpoint")
    )
    if not register_address:
        concerns.append(
            Concern(
                ERROR,
                "no register EDI address: the year profile has none; set endpoint.registerAddress",
                reg_path,
            )
        )
    if not sandbox:
        for key, value, path in (
            ("registerAddress", register_address, reg_path),
            ("address", address, ("spec", "endpoint", "address")),
        ):
            if not value:
                continue
            domain = _domain(value)
            if production and any(_in(domain, d) for d in TEST_EDI_DOMAINS):
                concerns.append(
                    Concern(
                        ERROR,
                        f"{value} is a test EDI address, but {environment} carries production "
                        "data: NHN does not let mail cross between test and production EDI",
                        path,
                    )
                )
            elif not production and _in(domain, PRODUCTION_EDI_DOMAIN):
                hint = (
                    "; the profile's register.ediAddress is KPR's production address: set "
                    "endpoint.registerAddress to KPR's test EDI address (ask NHN)"
                    if key == "registerAddress" and not register_from_manifest
                    else ""
                )
                concerns.append(
                    Concern(
                        ERROR,
                        f"{value} is a production EDI address (@{PRODUCTION_EDI_DOMAIN}), but "
                        f"{environment} is not production: NHN does not let mail cross between "
                        f"test and production EDI{hint}",
                        path,
                    )
                )
    if production and envelope_agreement is None:
        # Refuse the likely-unaccepted default: every source on NHN EDI describes the
        # ebXML envelope (docs/domain.md §5.9); a bare mail would wait for a receipt
        # that never comes while the deadline passes.
        concerns.append(
            Concern(
                ERROR,
                "the edi transport sends a bare S/MIME mail without the ebXML envelope "
                "(HIS 1037) that NHN's EDI and KPR's requirements describe, and iplosctl does "
                "not build that envelope yet: use transport: amqp, or, once NHN or KPR confirmed "
                "in writing that a bare S/MIME mail is accepted, set "
                "endpoint.envelopeAgreement: bare-smime (README 'Choosing the channel')",
                ("spec", "endpoint", "transport"),
            )
        )
    elif production:
        concerns.append(
            Concern(
                WARNING,
                "the edi transport sends a bare S/MIME mail without the ebXML envelope "
                "(HIS 1037): endpoint.envelopeAgreement says NHN or KPR confirmed that KPR "
                "accepts it; keep that confirmation with the manifest",
                ("spec", "endpoint", "envelopeAgreement"),
            )
        )
    concerns.extend(
        endpoint_concerns(
            None,
            environment=environment,
            sandbox=sandbox,
            production=production,
            verify_peer_name=verify_peer_name,
        )
    )
    return concerns
