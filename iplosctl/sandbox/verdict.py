"""sandbox.verdict: what KPR concludes about a message it could read, before any reply.

A verdict is either an AppRec (status and kodeverk 8221 errors, DOMAIN.md §4) or an
error-queue condition (DOMAIN.md §5.7). Judging the payload (export format v1, then
KPR's own per-recipient checks) needs no keys, so it lives here, apart from the
register's decryption and replies (`register.py`). Errors name a recipient by its
position in the payload, never by its person id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache

from lxml import etree

from iplosctl.errors import PayloadError
from iplosctl.formats import EXPORT_V1_NAMESPACE, EXPORT_V1_XSD
from iplosctl.identifiers import PersonIdKind, has_valid_person_control_digits, person_id_kind
from iplosctl.payload.apprec import (
    ERROR_OID,
    STATUS_OK,
    STATUS_PARTLY_OK,
    STATUS_REJECTED,
    AppRecError,
)
from iplosctl.payload.msghead import (
    MSGHEAD_NS,
    MsgHeadInfo,
    parse_document,
    safe_parser,
    schema_reason,
)

#: more errors than this in one AppRec are summarised in one last Error
MAX_ERRORS = 50
#: kodeverk 8221 texts for the codes the sandbox uses (DOMAIN.md §4)
ERROR_TEXTS = {
    "E21": "Mottaker finnes ikke",
    "E30": "Pasientens fødselsnummer mangler",
    "E31": "Pasientens fødselsnummer er feil",
    "E53": "Pasientens fødselsnummer eller D-nummer finnes ikke registrert i Folkeregisteret.",
    "S01": "Feil på signatur",
    "S02": "Ugyldig sertifikat",
    "T01": "Ikke XML / ikke 'well formed' / uleselig",
    "T02": "XML validerer ikke",
    "T10": "Støtter ikke meldingsformatet",
    "T99": "Annen feil på format",
    "X99": "Annen feil",
}
_X = f"{{{EXPORT_V1_NAMESPACE}}}"
_M = f"{{{MSGHEAD_NS}}}"


@dataclass(frozen=True)
class Original:
    """The message being answered, as far as it could be read."""

    msg_id: str
    msg_type: str
    issue_date: dt.datetime
    #: the sender's HER-ids, virksomhet first, service last
    sender_her_ids: tuple[str, ...]
    sender_name: str | None = None
    service_name: str | None = None


@dataclass(frozen=True)
class AppRecVerdict:
    original: Original
    status: str
    errors: tuple[AppRecError, ...] = ()


@dataclass(frozen=True)
class ErrorVerdict:
    condition: str
    description: str
    data: tuple[str, ...] = ()


Verdict = AppRecVerdict | ErrorVerdict


def apprec_error(code: str, original_text: str) -> AppRecError:
    return AppRecError(
        code=code, system=ERROR_OID, text=ERROR_TEXTS[code], original_text=original_text
    )


def as_utc(now: dt.datetime) -> dt.datetime:
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


@cache
def _export_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(EXPORT_V1_XSD), parser=safe_parser()))


def check_payload(original: Original, info: MsgHeadInfo, *, quote_ids: bool = False) -> Verdict:
    """Export format v1, then KPR's own checks of each recipient."""
    try:
        root = parse_document(info.payload, "payload")
    except PayloadError as exc:
        return AppRecVerdict(original, STATUS_REJECTED, (apprec_error("T02", exc.message),))
    schema = _export_schema()
    if not schema.validate(root.getroottree()):
        first = schema.error_log[0]
        text = f"payload line {first.line}: {schema_reason(first.message)}"
        return AppRecVerdict(original, STATUS_REJECTED, (apprec_error("T02", text),))
    errors: list[AppRecError] = []
    warnings: list[AppRecError] = []
    for index, recipient in enumerate(root.iterfind(_X + "Recipient"), start=1):
        where = f"{info.msg_type} Recipient {index}"
        person_id = recipient.findtext(_X + "PersonId")
        if person_id is None:
            if info.msg_type == "KPR_IDE":
                errors.append(apprec_error("E30", f"{where}: PersonId is missing"))
            continue
        person_id = person_id.strip()
        if info.msg_type == "KPR_IPL":
            # The fagmelding is pseudonymous; identity travels only in KPR_IDE.
            errors.append(apprec_error("T99", f"{where}: KPR_IPL must not carry PersonId"))
        elif not has_valid_person_control_digits(person_id):
            error = apprec_error("E31", f"{where}: PersonId has wrong check digits")
            if quote_ids:
                quoted = f"{person_id[:6]}.{person_id[6:]}"
                error = replace(
                    error,
                    text=f"{error.text} ({quoted})",
                    original_text=f"{where}: PersonId {quoted} has wrong check digits",
                )
            errors.append(error)
        elif person_id_kind(person_id) is PersonIdKind.HNR:
            warnings.append(
                apprec_error("E53", f"{where}: H-number, not a fødselsnummer or D-number")
            )
    if errors:
        return AppRecVerdict(original, STATUS_REJECTED, capped([*errors, *warnings]))
    if warnings:
        return AppRecVerdict(original, STATUS_PARTLY_OK, capped(warnings))
    return AppRecVerdict(original, STATUS_OK)


def from_msghead(info: MsgHeadInfo, root: etree._Element) -> Original:
    org = root.find(f"{_M}MsgInfo/{_M}Sender/{_M}Organisation")
    name = org.findtext(_M + "OrganisationName") if org is not None else None
    service = org.find(_M + "Organisation") if org is not None else None
    service_name = service.findtext(_M + "OrganisationName") if service is not None else None
    return Original(
        msg_id=info.msg_id,
        msg_type=info.msg_type,
        issue_date=info.gen_date,
        sender_her_ids=info.sender_her_ids,
        sender_name=name.strip() if name else None,
        service_name=service_name.strip() if service_name else None,
    )


def capped(errors: Iterable[AppRecError]) -> tuple[AppRecError, ...]:
    errors = list(errors)
    if len(errors) <= MAX_ERRORS:
        return tuple(errors)
    rest = len(errors) - (MAX_ERRORS - 1)
    summary = apprec_error(
        "X99", f"and {rest} more errors of the kinds above; fix those and resend"
    )
    return (*errors[: MAX_ERRORS - 1], summary)


def describe(verdict: Verdict) -> str:
    if isinstance(verdict, ErrorVerdict):
        return f"error-queue {verdict.condition}"
    codes = sorted({e.code or "?" for e in verdict.errors})
    return " ".join(["apprec", verdict.status, *codes])
