"""Applikasjonskvittering (AppRec) v1.0 and v1.1: read KPR's receipts, write the sandbox's.

An AppRec is KPR's verdict on one message: status 1 OK, 2 Avvist, 3 OK with errors in
parts, plus error codes, correlated by `OriginalMsgId/Id` = our `MsgInfo/MsgId`
(DOMAIN.md §4). Error codes are kept verbatim (V, S, DN, OT): whether KPR uses its own
error kodeverk is not known, so nothing is mapped or dropped.

Both versions have the same elements in different namespaces; NHN receivers accept both
(DOMAIN.md §4), so we read both and the sandbox register can write either.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lxml import etree

from iplosctl.errors import PayloadError
from iplosctl.payload.msghead import parse_document

AppRecVersion = Literal["1.0", "1.1"]

NAMESPACES: dict[AppRecVersion, str] = {
    "1.0": "http://www.kith.no/xmlstds/apprec/2004-11-21",
    "1.1": "http://www.kith.no/xmlstds/apprec/2012-02-15",
}
MIG_VERSIONS: dict[AppRecVersion, str] = {"1.0": "1.0 2004-11-21", "1.1": "v1.1 2012-02-15"}
_VERSION_BY_NS: dict[str, AppRecVersion] = {ns: version for version, ns in NAMESPACES.items()}

#: Kodeverk 8258 "Status for mottak av melding".
STATUS_OID = "2.16.578.1.12.4.1.1.8258"
STATUS_OK = "1"
STATUS_REJECTED = "2"
STATUS_PARTLY_OK = "3"
STATUS_DN: dict[str, str] = {
    STATUS_OK: "OK",
    STATUS_REJECTED: "Avvist",
    STATUS_PARTLY_OK: "OK, feil i delmelding",
}
#: Kodeverk 8221 "Feilmeldinger for applikasjonskvittering – Generelle".
ERROR_OID = "2.16.578.1.12.4.1.1.8221"


@dataclass(frozen=True)
class AppRecError:
    """One `Error` element, attributes verbatim (None when absent)."""

    code: str | None  #: V
    system: str | None = None  #: S, the kodeverk OID
    text: str | None = None  #: DN
    original_text: str | None = None  #: OT, often which part of the message failed


@dataclass(frozen=True)
class AppRec:
    """A parsed AppRec. `gen_date`/`original_issue_date` are naive when the XML has no zone."""

    version: AppRecVersion
    msg_id: str
    gen_date: dt.datetime
    status: str  #: Status/@V, verbatim even when not 1–3
    status_text: str | None  #: Status/@DN
    errors: tuple[AppRecError, ...]
    original_msg_type: str
    original_msg_id: str
    original_issue_date: dt.datetime
    #: HER-ids from the institution inwards (Inst, then Dept and HCPerson)
    sender_her_ids: tuple[str, ...]
    receiver_her_ids: tuple[str, ...]
    sender_name: str | None = None
    receiver_name: str | None = None

    @property
    def ok(self) -> bool:
        """Accepted in full."""
        return self.status == STATUS_OK

    @property
    def rejected(self) -> bool:
        """Avvist: KPR did not take the message; it must be fixed and sent again."""
        return self.status == STATUS_REJECTED

    @property
    def partly_ok(self) -> bool:
        """Accepted, but with errors in some parts (see `errors`)."""
        return self.status == STATUS_PARTLY_OK


# --- reading --------------------------------------------------------------------------------


def parse_apprec(xml: bytes) -> AppRec:
    """Parse an AppRec v1.0 or v1.1; PayloadError for anything else or anything missing.

    The parser loads no DTD, expands no entities and never touches the network: the bytes
    come from outside, even if they were signed.
    """
    root = parse_document(xml, "AppRec")
    qname = etree.QName(root)
    version = _VERSION_BY_NS.get(qname.namespace or "")
    if qname.localname != "AppRec" or version is None:
        raise PayloadError(
            f"document is {qname.localname} in {qname.namespace or 'no namespace'}, not an "
            "AppRec v1.0 or v1.1; it cannot be matched to a sent message"
        )
    ns = f"{{{NAMESPACES[version]}}}"

    def find(path: str) -> etree._Element | None:
        return root.find("/".join(ns + step for step in path.split("/")))

    def text(path: str) -> str:
        el = find(path)
        value = el.text.strip() if el is not None and el.text else ""
        if not value:
            raise PayloadError(f"AppRec lacks {path}; the receipt is incomplete")
        return value

    def attr(path: str, name: str) -> str:
        el = find(path)
        value = (el.get(name) or "").strip() if el is not None else ""
        if not value:
            raise PayloadError(f"AppRec lacks {path}/@{name}; the receipt is incomplete")
        return value

    status_el = find("Status")
    sender = find("Sender/HCP")
    receiver = find("Receiver/HCP")
    return AppRec(
        version=version,
        msg_id=text("Id"),
        gen_date=_datetime(text("GenDate"), "GenDate"),
        status=attr("Status", "V"),
        status_text=status_el.get("DN") if status_el is not None else None,
        errors=tuple(
            AppRecError(
                code=e.get("V"), system=e.get("S"), text=e.get("DN"), original_text=e.get("OT")
            )
            for e in root.findall(ns + "Error")
        ),
        original_msg_type=attr("OriginalMsgId/MsgType", "V"),
        original_msg_id=text("OriginalMsgId/Id"),
        original_issue_date=_datetime(text("OriginalMsgId/IssueDate"), "OriginalMsgId/IssueDate"),
        sender_her_ids=_her_ids(sender, ns),
        receiver_her_ids=_her_ids(receiver, ns),
        sender_name=_name(sender, ns),
        receiver_name=_name(receiver, ns),
    )


def _datetime(value: str, where: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(
            f"AppRec {where} is not an xs:dateTime; the receipt is malformed"
        ) from None


def _her_ids(hcp: etree._Element | None, ns: str) -> tuple[str, ...]:
    """HER-ids at level 1 (Inst or HCProf) and level 2 (Dept, HCPerson), in that order."""
    if hcp is None:
        return ()
    out: list[str] = []
    for level1 in (hcp.find(ns + "Inst"), hcp.find(ns + "HCProf")):
        if level1 is None:
            continue
        units = [level1, *level1.findall(ns + "Dept"), *level1.findall(ns + "HCPerson")]
        for unit in units:
            type_id = unit.find(ns + "TypeId")
            value = (unit.findtext(ns + "Id") or "").strip()
            if type_id is not None and type_id.get("V") == "HER" and value:
                out.append(value)
    return tuple(out)


def _name(hcp: etree._Element | None, ns: str) -> str | None:
    if hcp is None:
        return None
    name = hcp.findtext(f"{ns}Inst/{ns}Name") or hcp.findtext(f"{ns}HCProf/{ns}Name")
    return name.strip() if name else None


# --- writing --------------------------------------------------------------------------------


def _format_datetime(value: dt.datetime) -> str:
    text = value.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def build_apprec(
    *,
    version: AppRecVersion,
    msg_id: str,
    gen_date: dt.datetime,
    sender_name: str,
    sender_her_id: str,
    receiver_name: str,
    receiver_her_id: str,
    status: str,
    errors: Sequence[AppRecError],
    original_msg_type: str,
    original_msg_id: str,
    original_issue_date: dt.datetime,
    receiver_service_name: str | None = None,
    receiver_service_her_id: str | None = None,
) -> bytes:
    """An AppRec document (UTF-8, with declaration), as the sandbox register sends it.

    With `receiver_service_*` the receiver gets a `Dept` for the municipality's service,
    the level-2 address its MsgHead named (service-based addressing, DOMAIN.md §3).
    """
    if version not in NAMESPACES:
        raise ValueError(f"AppRec version must be one of {sorted(NAMESPACES)}")
    if status not in STATUS_DN:
        raise ValueError(f"AppRec status must be one of {sorted(STATUS_DN)}")
    ns = NAMESPACES[version]
    q = f"{{{ns}}}"

    def sub(
        parent: etree._Element, tag: str, text: str | None = None, **attrs: str | None
    ) -> etree._Element:
        el = etree.SubElement(parent, q + tag, {k: v for k, v in attrs.items() if v is not None})
        if text is not None:
            el.text = text
        return el

    def party(tag: str, name: str, her_id: str, dept: tuple[str, str] | None) -> None:
        inst = sub(sub(sub(root, tag), "HCP"), "Inst")
        sub(inst, "Name", name)
        sub(inst, "Id", her_id)
        sub(inst, "TypeId", V="HER", DN="HER-id")
        if dept is not None:
            unit = sub(inst, "Dept")
            sub(unit, "Name", dept[0])
            sub(unit, "Id", dept[1])
            sub(unit, "TypeId", V="HER", DN="HER-id")

    root = etree.Element(q + "AppRec", nsmap={None: ns})
    sub(root, "MsgType", V="APPREC", DN="Applikasjonskvittering")
    sub(root, "MIGversion", MIG_VERSIONS[version])
    sub(root, "GenDate", _format_datetime(gen_date))
    sub(root, "Id", msg_id)
    party("Sender", sender_name, sender_her_id, None)
    service = None
    if receiver_service_her_id is not None:
        service = (receiver_service_name or "Saksbehandling", receiver_service_her_id)
    party("Receiver", receiver_name, receiver_her_id, service)
    sub(root, "Status", V=status, DN=STATUS_DN[status])
    for error in errors:
        sub(
            root,
            "Error",
            V=error.code,
            S=error.system,
            DN=error.text,
            OT=error.original_text,
        )
    original = sub(root, "OriginalMsgId")
    sub(original, "MsgType", V=original_msg_type)
    sub(original, "IssueDate", _format_datetime(original_issue_date))
    sub(original, "Id", original_msg_id)
    etree.indent(root, space="  ")
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8") + b"\n"
    )
