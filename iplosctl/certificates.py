"""Certificate health for `validate`, `plan` and `receipts`: validity, chain, revocation.

The four certificates (ours for signing and encryption, the register's for signing and
encryption) and a previous encryption certificate are each checked before anything is
sent: the window of validity (a warning under `WARN_DAYS`), the key usage NHN requires,
the chain to the configured trust anchors with the enterprise CA policy
(`cms.ENTERPRISE_CA_POLICY`), and revocation (`payload.revocation`). A receipt's
signer gets the same revocation verdict through `receipt_revocation_hook`, so `plan`
and `receipts` refuse the same things.

Revocation that cannot be decided is an error, unless the operator passes
`--offline-revocation`: then it is a warning on every plan, never silent. The sandbox
skips revocation (its throw-away CA publishes nothing), and the plan says so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.verification import VerificationError

from iplosctl import endpoint, profiles
from iplosctl.errors import IplosctlError, ProfileError, SecretError
from iplosctl.manifest import Manifest
from iplosctl.payload import revocation
from iplosctl.payload.cms import (
    CmsError,
    Failure,
    RevocationHook,
    describe,
    load_certificate,
    verify_chain,
)
from iplosctl.payload.revocation import Status
from iplosctl.rules import Finding
from iplosctl.secrets import get_secret

#: fewer days left than this is a warning in validate and plan
WARN_DAYS = 30
#: environments where a certificate without any revocation source is refused
STRICT_ENVIRONMENTS = frozenset({"production", "qa"})
OFFLINE_FLAG = "--offline-revocation"
#: the role of `certificates.encryptionPrevious`
PREVIOUS = "encryption previous"


@dataclass(frozen=True)
class CertificateCheck:
    """One certificate as the plan shows it (organisation certificates: no personal data)."""

    role: str
    certificate: str
    not_after: str
    days_left: int
    chain: str
    revocation: str
    revocation_detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "certificate": self.certificate,
            "notAfter": self.not_after,
            "daysLeft": self.days_left,
            "chain": self.chain,
            "revocation": self.revocation,
            "revocationDetail": self.revocation_detail,
        }


@dataclass(frozen=True)
class CertificateReport:
    checks: tuple[CertificateCheck, ...] = ()
    findings: tuple[Finding, ...] = ()
    #: one line for the plan when revocation was not (fully) checked; "" otherwise
    revocation_note: str = ""


def revocation_severity(status: Status, environment: str, offline: bool) -> str | None:
    """ "error", "warning" or None for a revocation answer: one rule for plan and receipts."""
    if status is Status.REVOKED:
        return "error"
    if status in (Status.GOOD, Status.SKIPPED):
        return None
    if offline:
        return "warning"
    if status is Status.UNPUBLISHED and environment not in STRICT_ENVIRONMENTS:
        return "warning"
    return "error"


def _is_sandbox(manifest: Manifest) -> bool:
    try:
        env = profiles.load_profile(manifest.reporting_year).environments.get(manifest.environment)
    except ProfileError:
        return False
    return bool(env and env.sandbox)


def checker_for(manifest: Manifest, *, offline: bool) -> revocation.Checker:
    """CRL files of the manifest; the network unless `--offline-revocation`."""
    files = manifest.certificates.crls if manifest.certificates else ()
    return revocation.Checker(revocation.load_crl_files(files), online=not offline)


def receipt_revocation_hook(
    manifest: Manifest,
    *,
    offline: bool,
    now: dt.datetime,
    checker: revocation.Checker | None = None,
) -> RevocationHook | None:
    """What `receipts` runs on a receipt signer's verified chain; None in the sandbox."""
    if _is_sandbox(manifest):
        return None
    if checker is None:
        checker = checker_for(manifest, offline=offline)

    def hook(chain: Sequence[x509.Certificate]) -> None:
        answer = checker.check_chain(chain, now)
        if revocation_severity(answer.status, manifest.environment, offline) != "error":
            return
        if answer.status is Status.REVOKED:
            raise CmsError(
                Failure.REVOKED,
                f"sender's certificate chain is revoked: {answer.detail}",
            )
        raise CmsError(
            Failure.REVOCATION_UNKNOWN,
            f"revocation of the sender's certificate chain could not be checked "
            f"({answer.detail}); name the CA's CRL in certificates.crls, or run with "
            f"{OFFLINE_FLAG}",
        )

    return hook


def check_certificates(
    manifest: Manifest,
    *,
    offline_revocation: bool = False,
    now: dt.datetime | None = None,
    checker: revocation.Checker | None = None,
) -> CertificateReport:
    """Check every configured certificate; problems become plan findings, never exceptions."""
    now = now or dt.datetime.now(dt.UTC)
    sandbox = _is_sandbox(manifest)
    c = manifest.certificates
    if c is None:
        note = (
            "sandbox: certificates are generated by the built-in register; revocation is "
            "not checked"
            if sandbox
            else ""
        )
        return CertificateReport(revocation_note=note)
    findings: list[Finding] = []

    def add(rule: str, severity: str, message: str) -> None:
        findings.append(Finding(rule, severity, message, 1))  # type: ignore[arg-type]

    try:
        anchors = endpoint.load_pem_certificates(c.register.trust_anchors)
        chain_certs = endpoint.intermediates(manifest)
        if checker is None and not sandbox:
            checker = checker_for(manifest, offline=offline_revocation)
    except IplosctlError as exc:
        add("certificate-chain", "error", exc.message)
        return CertificateReport(findings=tuple(findings))
    if not anchors and not sandbox:  # the sandbox register trusts what the manifest names
        add(
            "certificate-chain",
            "error",
            "no trust anchors are configured: set certificates.register.trustAnchors to the "
            "CA certificates (PEM) the certificates chain to",
        )

    sign, encrypt = "content_commitment", "key_encipherment"
    roles: list[tuple[str, Path, str | None, str | None]] = [
        ("signing", c.signing.certificate, c.signing.passphrase_secret, sign),
        ("encryption", c.encryption.certificate, c.encryption.passphrase_secret, encrypt),
        ("register signing", c.register.signing, None, sign),
        ("register encryption", c.register.encryption, None, encrypt),
    ]
    if c.encryption_previous is not None:
        roles.append(
            (
                PREVIOUS,
                c.encryption_previous.certificate,
                c.encryption_previous.passphrase_secret,
                encrypt,
            )
        )
    checks: list[CertificateCheck] = []
    not_checked = 0
    for role, path, secret, usage in roles:
        passphrase, missing = None, None
        if secret:
            try:
                passphrase = get_secret(secret)
            except SecretError as exc:  # e.g. a CI runner that plans but never decrypts
                missing = exc.message
        try:
            cert = load_certificate(path, passphrase)
        except CmsError as exc:
            if missing and exc.reason is Failure.WRONG_PASSPHRASE:
                add(
                    "certificate-chain",
                    "warning",
                    f"{role} certificate not checked: its file needs the passphrase and {missing}",
                )
            else:
                add("certificate-chain", "error", f"{role} certificate: {exc.message}")
            continue
        name = describe(cert)
        days = _days_left(cert, now)
        for rule, severity, message in _validity_and_usage(role, name, cert, days, usage, now):
            add(rule, severity, message)
        chain_text, chain = "not checked (no trust anchors)", None
        if anchors:
            try:
                chain = verify_chain(cert, chain_certs, anchors, now)
                chain_text = "ok"
            except (VerificationError, ValueError) as exc:
                chain_text = _reason(exc)
            if chain is None:
                add(
                    "certificate-chain",
                    "error",
                    f"{role} certificate {name} does not chain to the trust anchors "
                    f"({chain_text}); set certificates.register.trustAnchors (and "
                    "certificates.intermediates) to its CA certificates",
                )
        if sandbox or checker is None:
            answer = revocation.Result(Status.SKIPPED, "sandbox: not checked")
        elif chain is None:
            answer = revocation.Result(Status.UNKNOWN, "no verified chain to check")
        else:
            answer = checker.check_chain(chain, now)
        revocation_level = revocation_severity(
            answer.status, manifest.environment, offline_revocation
        )
        if answer.status in (Status.UNKNOWN, Status.UNPUBLISHED) and chain is not None:
            not_checked += 1
        if revocation_level is not None and chain is not None:
            message = _revocation_message(role, name, answer, offline_revocation)
            add("certificate-revocation", revocation_level, message)
        checks.append(
            CertificateCheck(
                role=role,
                certificate=name,
                not_after=f"{cert.not_valid_after_utc:%Y-%m-%d}",
                days_left=days,
                chain=chain_text,
                revocation=answer.status.value,
                revocation_detail=answer.detail,
            )
        )
    note = ""
    if sandbox:
        note = "sandbox: revocation is not checked (the sandbox CA publishes no CRL)"
    elif offline_revocation:
        note = (
            f"OFFLINE REVOCATION ({OFFLINE_FLAG}): {not_checked} certificate(s) not checked "
            "for revocation; only the CRL files in certificates.crls were consulted"
        )
    # The previous encryption key only opens old receipts: never a reason to block.
    findings = [
        dataclasses.replace(f, severity="warning") if f.message.startswith(PREVIOUS) else f
        for f in findings
    ]
    return CertificateReport(tuple(checks), tuple(findings), note)


def _days_left(cert: x509.Certificate, now: dt.datetime) -> int:
    """Whole days until expiry; negative once expired (-1 on the day after)."""
    left = cert.not_valid_after_utc - now
    return left.days if left.total_seconds() >= 0 else -((-left).days + 1)


_USAGE_NAMES = {"content_commitment": "nonRepudiation", "key_encipherment": "keyEncipherment"}


def _validity_and_usage(
    role: str, name: str, cert: x509.Certificate, days: int, usage: str | None, now: dt.datetime
) -> list[tuple[str, str, str]]:
    """(rule, severity, message) for the validity window and the key usage."""
    out = []
    if now > cert.not_valid_after_utc:
        out.append(
            (
                "certificate-validity",
                "error",
                f"{role} certificate {name} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                "order a new one and point the manifest at it",
            )
        )
    elif now < cert.not_valid_before_utc:
        out.append(
            (
                "certificate-validity",
                "error",
                f"{role} certificate {name} is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check this computer's clock",
            )
        )
    elif days < WARN_DAYS and role != PREVIOUS:
        out.append(
            (
                "certificate-validity",
                "warning",
                f"{role} certificate {name} expires in {days} day(s), on "
                f"{cert.not_valid_after_utc:%Y-%m-%d}; renew it now",
            )
        )
    if usage and not _has_usage(cert, usage):
        out.append(
            (
                "certificate-usage",
                "error",
                f"{role} certificate {name} lacks the {_USAGE_NAMES[usage]} key usage NHN requires",
            )
        )
    return out


def _revocation_message(role: str, name: str, answer: revocation.Result, offline: bool) -> str:
    if answer.status is Status.REVOKED:
        return f"{role} certificate {name} is revoked: {answer.detail}"
    if offline:
        return (
            f"{role} certificate {name}: revocation NOT checked ({OFFLINE_FLAG}): {answer.detail}"
        )
    return (
        f"{role} certificate {name}: revocation not checked ({answer.detail}); "
        f"name its CA's CRL file in certificates.crls, or pass {OFFLINE_FLAG}"
    )


def _has_usage(cert: x509.Certificate, usage: str) -> bool:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(getattr(ku, usage))


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
